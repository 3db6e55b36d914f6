"""`vitkit serve` under load, on loopback only: throughput, p50/p99 latency, failures, the server's memory.

    python benchmarks/serve.py                 # ViT-Ti/16 at 224 -> benchmarks/results/serve.{md,json}
    python benchmarks/serve.py --quick         # a 0.14M model, a few requests (seconds; the test suite)

A server (`python -m vitkit.serve`, a subprocess on 127.0.0.1 with ``--port 0``) serves the model with
dynamic batching on (``--max-batch 32 --max-wait-ms 5``) and then off (``--max-batch 1``). For each, 1, 8
and 32 concurrent clients (threads, each with one kept-alive connection) send real JPEG files (crops of
scikit-learn's two sample photos, 256 to 480 px, so every request is decoded and resized) as raw bytes
to ``/v1/classify``, a fixed number of requests per row, with a time limit per row. Every answer is
checked (200 and a top-k list): a failed request is any other answer or a connection error, a lost one
one never answered. The server's resident memory (VmRSS) is sampled every 100 ms.

The reference is the same model in this process at batch 32 (and batch 1), same threads and precision,
on tensors already preprocessed, measured in the same run with the server idle: the 32-client row with
batching must reach 80% of it (HTTP, decoding and batching cost at most a fifth).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
TARGET = 0.8  # server img/s at 32 clients with batching / in-process batch-32 img/s


def parse_args(argv=None) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit_tiny_patch16_224", help="registered model (random weights: speed only)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, nargs="+", default=[48, 192, 512],
                   help="requests per row, one number per --clients entry")
    p.add_argument("--row-seconds", type=float, default=240.0, help="time limit of one row")
    p.add_argument("--threads", type=int, default=None, help="server torch threads (default: every core)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "none"])
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=5, help="timed repeats of the in-process reference")
    p.add_argument("--block-seconds", type=float, default=1.0, dest="block_seconds",
                   help="each timed block of the reference: consecutive calls filling this long")
    p.add_argument("--quick", action="store_true", help="vit_nano_patch2_8, 1 and 4 clients, 24 requests a row")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--reference-only", action="store_true", help=argparse.SUPPRESS)  # the reference's own process
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.clients, args.requests, args.repeats, args.block_seconds = \
            "vit_nano_patch2_8", [1, 4], [24, 24], 3, 0.2
    if len(args.requests) != len(args.clients):
        p.error("--requests needs one number per --clients entry")
    return args, p


# ---------------------------------------------------------------------------------------- inputs
def image_files(folder: Path, count: int = 24) -> list[bytes]:
    """JPEG files cut from scikit-learn's sample photos (china.jpg, flower.jpg), 256-480 px a side."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images
    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(rng.integers(256, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        img = Image.fromarray(photo[y:y + side, x:x + side])
        size = int(rng.integers(256, 481))
        path = folder / f"photo{i:02d}.jpg"
        img.resize((size, size), Image.BICUBIC).save(path, "JPEG", quality=90)
        out.append(path.read_bytes())
    return out


def checkpoint(model_name: str, folder: Path) -> Path:
    """A vitkit checkpoint folder of ``model_name`` (seeded random weights) for the server to load."""
    import torch

    import vitkit
    from vitkit.weights import export
    torch.manual_seed(0)
    export(vitkit.create_model(model_name), folder, to="vitkit")
    return folder


# ---------------------------------------------------------------------------------------- the server
class Server:
    def __init__(self, source: Path, flags: list[str]):
        self.argv = [sys.executable, "-m", "vitkit.serve", str(source), "--host", "127.0.0.1", "--port", "0", *flags]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        line = self.proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not m:
            self.stop()
            raise RuntimeError(f"the server did not start: {''.join(self.stderr)[-2000:]}")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        self.port = int(m.group(1))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if self.get("/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError("the server never answered /healthz")

    def get(self, path: str):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, json.loads(r.read())
        finally:
            c.close()

    def rss_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def cpu_s(self) -> float | None:
        """CPU seconds (user + system, every thread) the server process has used so far."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    def cpu_by_role(self) -> dict[str, float] | None:
        """CPU seconds so far by the server's threads' role, from their OS names (`vitkit.serve.batcher`
        names them): "model" (the batcher and its OpenMP workers), "decode" (the decoding threads), "other"
        (the event loop: HTTP, routing, JSON; and idle helpers). Threads that ended are not counted."""
        out = {"model": 0.0, "decode": 0.0, "other": 0.0}
        try:
            tasks = list(Path(f"/proc/{self.proc.pid}/task").iterdir())
        except OSError:
            return None
        for task in tasks:
            try:
                text = (task / "stat").read_text()
            except OSError:
                continue
            name = text[text.index("(") + 1:text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
            role = {"vitkit-batcher": "model", "vitkit-decode": "decode"}.get(name, "other")
            out[role] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def load(port: int, bodies: list[bytes], clients: int, requests: int, seconds: float) -> dict:
    """``requests`` POSTs /v1/classify from ``clients`` threads (one kept-alive connection each), within
    ``seconds``: latencies (s) of the answered ones, failures, and how many were never answered."""
    lock = threading.Lock()
    issued = [0]
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.monotonic() + seconds

    def client(k: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=seconds)
        while True:
            with lock:
                if issued[0] >= requests or time.monotonic() > deadline:
                    break
                i = issued[0]
                issued[0] += 1
            body = bodies[i % len(bodies)]
            t = time.perf_counter()
            try:
                conn.request("POST", "/v1/classify", body=body, headers={"Content-Type": "image/jpeg"})
                r = conn.getresponse()
                data = r.read()
                ok = r.status == 200 and json.loads(data).get("topk")
                dt = time.perf_counter() - t
                with lock:
                    (latencies.append(dt) if ok else failures.append(f"HTTP {r.status}: {data[:120]!r}"))
            except (OSError, http.client.HTTPException, ValueError) as e:
                with lock:
                    failures.append(f"{type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=seconds)
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    return {"latencies": latencies, "failures": failures, "issued": issued[0], "wall_s": wall,
            "lost": requests - len(latencies) - len(failures)}


def serve_rows(source: Path, bodies: list[bytes], args, batching: bool) -> dict:
    flags = ["--amp", args.amp, "--max-batch", "32" if batching else "1", "--max-wait-ms", str(args.max_wait_ms),
             "--max-queue", "256"]
    if args.threads:
        flags += ["--threads", str(args.threads)]
    server = Server(source, flags)
    rss: list[tuple[float, float]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sample():
        while not stop.is_set():
            v = server.rss_mb()
            if v is not None:
                rss.append((round(time.monotonic() - t0, 2), round(v, 1)))
            stop.wait(0.1)
    try:
        info = server.get("/v1/model")[1]
        load(server.port, bodies, max(args.clients), 4 * max(args.clients), 120)  # warm-up: every code path, every size
        rss_after_warmup = server.rss_mb()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rows = []
        for clients, requests in zip(args.clients, args.requests):
            before = server.get("/v1/stats")[1]["batcher"]
            cpu0, client0, roles0 = server.cpu_s(), time.process_time(), server.cpu_by_role()
            res = load(server.port, bodies, clients, requests, args.row_seconds)
            cpu1, client1, roles1 = server.cpu_s(), time.process_time(), server.cpu_by_role()
            after = server.get("/v1/stats")[1]["batcher"]
            lat = sorted(res["latencies"])
            jobs, batches = after["jobs"] - before["jobs"], after["batches"] - before["batches"]
            rows.append({"clients": clients, "requests": requests, "answered": len(lat),
                         "failed": len(res["failures"]), "lost": res["lost"], "failures": res["failures"][:5],
                         "img_per_s": len(lat) / res["wall_s"], "wall_s": res["wall_s"],
                         "p50_ms": 1e3 * statistics.median(lat) if lat else None,
                         "p99_ms": 1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
                         "mean_batch": jobs / batches if batches else None,
                         "model_busy_s": after["model_busy_s"] - before["model_busy_s"],
                         "server_cpu_ms_per_img": 1e3 * (cpu1 - cpu0) / max(1, len(lat)) if cpu0 is not None else None,
                         "client_cpu_ms_per_img": 1e3 * (client1 - client0) / max(1, len(lat)),
                         "server_cpu_ms_per_img_by_role": {k: 1e3 * (roles1[k] - roles0[k]) / max(1, len(lat))
                                                           for k in roles1} if roles0 and roles1 else None,
                         "rss_mb_end": server.rss_mb()})
            print(f"serve: batching {'on ' if batching else 'off'} {clients:>3} clients: {rows[-1]['img_per_s']:7.1f} "
                  f"img/s, p50 {rows[-1]['p50_ms'] or 0:7.1f} ms, p99 {rows[-1]['p99_ms'] or 0:7.1f} ms, "
                  f"batch {rows[-1]['mean_batch'] or 0:4.1f}, failed {rows[-1]['failed']}, lost {rows[-1]['lost']}",
                  file=sys.stderr)
        stop.set()
        sampler.join()
        values = [v for _, v in rss]
        half = max(1, len(values) // 2)
        return {"batching": batching, "flags": flags, "model": info, "rows": rows,
                "rss_mb": {"after_warmup": rss_after_warmup, "min": min(values), "max": max(values),
                           "end": values[-1], "early_max": max(values[:half]), "late_max": max(values[half:] or values),
                           "samples": len(values), "trace": rss[:: max(1, len(rss) // 60)]},
                "stats": server.get("/v1/stats")[1]}
    finally:
        stop.set()
        server.stop()


# ---------------------------------------------------------------------------------------- in-process reference
def reference(args, threads: int) -> dict:
    """`in_process` in a fresh Python process, as the server is one: the benchmark process has imported
    scikit-learn and run the client threads, which would tax the reference and flatter the server."""
    argv = [sys.executable, __file__, "--reference-only", "--model", args.model, "--amp", args.amp,
            "--threads", str(threads), "--repeats", str(args.repeats), "--block-seconds", str(args.block_seconds)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def in_process(model_name: str, amp: str, threads: int, repeats: int, block_s: float = 1.0) -> dict:
    """Images per second (wall) and CPU ms per image of the model called directly on preprocessed batches of
    32 and of 1: medians of ``repeats`` interleaved blocks of consecutive calls filling ``block_s`` each."""
    import torch

    import vitkit
    from vitkit.train.precision import autocast, precision_name, resolve_amp
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = vitkit.create_model(model_name).eval()
    dtype = resolve_amp(amp)
    xs = {32: torch.randn(32, *model.input_size), 1: torch.randn(1, *model.input_size)}

    def call(x):
        with torch.inference_mode(), autocast("cpu", dtype):
            model(x)
    calls = {}
    for b, x in xs.items():  # warm up, then count the calls that fill a block
        call(x)
        n, t = 0, time.perf_counter()
        while n < 1 or time.perf_counter() - t < block_s:
            call(x)
            n += 1
        calls[b] = n
    wall: dict[int, list[float]] = {b: [] for b in xs}
    cpu: dict[int, list[float]] = {b: [] for b in xs}
    for _ in range(repeats):
        for b, x in xs.items():
            t, c = time.perf_counter(), time.process_time()
            for _ in range(calls[b]):
                call(x)
            wall[b].append((time.perf_counter() - t) / (calls[b] * b))
            cpu[b].append((time.process_time() - c) / (calls[b] * b))
    return {"precision": precision_name(dtype), "threads": threads,
            **{f"b{b}": {"img_per_s": 1 / statistics.median(wall[b]), "cpu_ms_per_img": 1e3 * statistics.median(cpu[b])}
               for b in xs}}


# ---------------------------------------------------------------------------------------- report
def report(res: dict) -> str:
    ref = res["in_process"]
    lines = [f"# `vitkit serve` under load ({res['model']}, {ref['precision']}, {ref['threads']} threads)", "",
             f"Host: {res['host']}. torch {res['torch']}.", "",
             f"Made by `{res['command']}`; do not edit by hand. Loopback only (127.0.0.1): the server is "
             "`python -m vitkit.serve` in a subprocess, the clients are threads of the benchmark process on the "
             f"same {res['cores']} cores (their CPU time counts against the server). Each row is a fixed number "
             f"of requests (raw JPEG bodies, {res['images']}), at most {res['row_seconds']:g} s; the model has "
             "seeded random weights (speed does not depend on them).", "",
             f"In-process reference (same model, threads and precision, preprocessed tensors, in a thread of a fresh process "
             "as the server's model runs in its batcher thread; the mean of one "
             f"measurement before the server rows and one after): batch 32 **{ref['b32']['img_per_s']:.1f} img/s** "
             f"({ref['before']['b32']['img_per_s']:.1f} before, {ref['after']['b32']['img_per_s']:.1f} after), "
             f"batch 1 {ref['b1']['img_per_s']:.1f} img/s.", "",
             "| batching | clients | requests | failed | lost | img/s | p50 ms | p99 ms | mean batch | vs in-process b32 "
             "| server CPU ms/img | client CPU ms/img |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in res["runs"]:
        name = f"on (≤32, {run['flags'][run['flags'].index('--max-wait-ms') + 1]} ms)" if run["batching"] else "off"
        for r in run["rows"]:
            lines.append(f"| {name} | {r['clients']} | {r['requests']} | {r['failed']} | {r['lost']} | "
                         f"{r['img_per_s']:.1f} | {r['p50_ms'] or 0:.1f} | {r['p99_ms'] or 0:.1f} | "
                         f"{r['mean_batch'] or 0:.1f} | {r['img_per_s'] / ref['b32']['img_per_s']:.0%} | "
                         f"{r['server_cpu_ms_per_img'] or 0:.1f} | {r['client_cpu_ms_per_img']:.1f} |")
    lines += ["", f"In-process CPU time: {ref['b32']['cpu_ms_per_img']:.1f} ms per image at batch 32, "
              f"{ref['b1']['cpu_ms_per_img']:.1f} at batch 1. CPU time does not depend on what else the machine runs "
              "as wall time does: the CPU ratio below (in-process batch-32 CPU per image / server + client CPU per "
              "image) is the throughput ratio a machine with nothing else running would show."]
    split = [(run, r) for run in res["runs"] for r in run["rows"] if r.get("server_cpu_ms_per_img_by_role")]
    if split:  # reports made before the split was measured have none
        lines += ["", "The server's CPU ms per image by thread (their OS names): the model (the batcher thread and "
                  "its OpenMP workers), decoding (JPEG to the model's input, on the batcher's decoding threads), "
                  "the rest (the event loop: HTTP, routing, JSON):", "",
                  "| batching | clients | model | decoding | rest |", "|---|---|---|---|---|"]
        for run, r in split:
            c = r["server_cpu_ms_per_img_by_role"]
            lines.append(f"| {'on' if run['batching'] else 'off'} | {r['clients']} | {c['model']:.1f} | "
                         f"{c['decode']:.1f} | {c['other']:.1f} |")
    v = res["verdicts"]
    lines += ["", "Server memory (VmRSS, sampled every 100 ms over the timed rows, after the warm-up):", "",
              "| batching | after warm-up MB | min MB | peak, first half MB | peak, second half MB | end MB |",
              "|---|---|---|---|---|---|"]
    for run in res["runs"]:
        m = run["rss_mb"]
        lines.append(f"| {'on' if run['batching'] else 'off'} | {m['after_warmup']:.0f} | {m['min']:.0f} | "
                     f"{m['early_max']:.0f} | {m['late_max']:.0f} | {m['end']:.0f} |")
    lines += ["", "Verdicts:", "",
              f"- {max(res['clients'])} clients with batching: {v['ratio']:.0%} of the in-process batch-32 throughput "
              f"(target ≥ {TARGET:.0%}): **{'met' if v['target_met'] else 'NOT met'}**.",
              f"- The same by CPU time: {v['cpu_ratio']:.0%} (server {v['server_cpu_ms']:.1f} + client "
              f"{v['client_cpu_ms']:.1f} CPU ms per image, in-process {ref['b32']['cpu_ms_per_img']:.1f}).",
              f"- Batching over batch-1 serving at {max(res['clients'])} clients: {v['batching_gain']:.2f}x the "
              f"throughput, p50 {v['p50_on_ms']:.0f} ms vs {v['p50_off_ms']:.0f} ms.",
              f"- Failed or lost requests: {v['failed_or_lost']} of {v['requests']}.",
              f"- Memory: the server's RSS rose by at most {v['rss_growth_mb']:.0f} MB above its size after the "
              f"warm-up, and its peak in the second half of the timed rows is {v['rss_trend_mb']:+.0f} MB from its "
              f"peak in the first half: **{'flat' if v['memory_flat'] else 'NOT flat'}** (no growth beyond 5%)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    args, parser = parse_args(argv)
    if args.reference_only:  # in a thread, as the server's model runs in its batcher thread: libgomp spins
        out = {}              # less in a second thread's team when the machine is oversubscribed
        worker = threading.Thread(target=lambda: out.update(in_process(args.model, args.amp, args.threads,
                                                                       args.repeats, args.block_seconds)))
        worker.start()
        worker.join()
        print(json.dumps(out))
        return {}
    import torch

    from vitkit.bench.measure import command, write_results
    from vitkit.train.precision import available_cpus, host_line
    threads = args.threads or available_cpus()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bodies = image_files(tmp)
        source = checkpoint(args.model, tmp / "model")
        # the reference before and after the server rows, the mean of both: a drift of the machine's other
        # load over the run hits the reference as it hits the server
        before = reference(args, threads)
        runs = [serve_rows(source, bodies, args, batching) for batching in (True, False)]
        after = reference(args, threads)
    ref = {**before, "before": before, "after": after,
           **{k: {m: (before[k][m] + after[k][m]) / 2 for m in ("img_per_s", "cpu_ms_per_img")} for k in ("b32", "b1")}}
    on, off = runs[0]["rows"][-1], runs[1]["rows"][-1]
    requests = sum(r["requests"] for run in runs for r in run["rows"])
    failed = sum(r["failed"] + r["lost"] for run in runs for r in run["rows"])
    growth = max(run["rss_mb"]["max"] - run["rss_mb"]["after_warmup"] for run in runs)
    trend = max(run["rss_mb"]["late_max"] - run["rss_mb"]["early_max"] for run in runs)
    flat = trend <= 0.05 * max(run["rss_mb"]["early_max"] for run in runs)
    sizes = [len(b) for b in bodies]
    res = {"command": command("python benchmarks/serve.py", args, parser), "host": host_line(), "torch": torch.__version__,
           "cores": available_cpus(), "model": args.model, "clients": args.clients, "row_seconds": args.row_seconds,
           "images": f"{len(bodies)} crops of scikit-learn's sample photos, 256-480 px, "
                     f"{min(sizes) // 1024}-{max(sizes) // 1024} kB",
           "in_process": ref, "runs": runs,
           "verdicts": {"ratio": on["img_per_s"] / ref["b32"]["img_per_s"],
                        "target_met": on["img_per_s"] >= TARGET * ref["b32"]["img_per_s"],
                        "cpu_ratio": ref["b32"]["cpu_ms_per_img"] / ((on["server_cpu_ms_per_img"] or float("nan"))
                                                                     + on["client_cpu_ms_per_img"]),
                        "server_cpu_ms": on["server_cpu_ms_per_img"] or float("nan"),
                        "client_cpu_ms": on["client_cpu_ms_per_img"],
                        "batching_gain": on["img_per_s"] / off["img_per_s"],
                        "p50_on_ms": on["p50_ms"] or 0, "p50_off_ms": off["p50_ms"] or 0,
                        "failed_or_lost": failed, "requests": requests,
                        "rss_growth_mb": growth, "rss_trend_mb": trend, "memory_flat": flat}}
    stem = "serve_quick" if args.quick else "serve"
    print(write_results(Path(args.out), stem, res, report(res)))
    return res


if __name__ == "__main__":
    os.environ.setdefault("VITKIT_NO_PROGRESS", "1")
    main()
