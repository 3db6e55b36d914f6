"""Loading photos vs the training step (issue 18): does decoding and augmenting photos of mixed sizes
keep up with training ViT-Ti/16 and ViT-S/16 at 224 on this host?

    python benchmarks/loader.py            # writes benchmarks/results/loader.{md,json}
    python benchmarks/loader.py --quick    # tiny photos, a one-block ViT at 32 px (the test suite, seconds)

The script writes a folder of synthetic photos into a temporary directory (seeded): sides drawn from
200-800 px, mostly RGB JPEGs, some grayscale PNGs, some RGBA PNGs, in two class folders, and loads it
with `vitkit.data.imagefolder` (each image kept at its own size). It measures, in one process:

- the loader, images/s through decode + per-image transform + batches of 32 at 224, with 0, 1 and 2
  worker processes (persistent; a first, untimed epoch starts them): the training transform (DeiT's:
  random resized crop of the original, flip, rand-m9-mstd0.5-inc1, Normalize, random erasing) and the
  evaluation one (resize 256, centre crop 224), and the decode alone (no workers);
- the training step of vitkit.create_model("vit_tiny_patch16_224") and ("vit_small_patch16_224"):
  forward, cross-entropy, backward and fused AdamW on a batch of 32 random images held in memory, fp32,
  the median of a few steps after a warm-up step;
- the same steps fed by the loader (training transform), with 0, 1 and 2 workers: the workers share
  the host's cores with the step, so this is the rate training gets.

Every verdict in the report (does the loader keep up with each model?) is computed from the numbers.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vitkit
from vitkit import data as vdata
from vitkit.bench.measure import command, environment, write_results
from vitkit.bench.speed import train_fn

RESULTS = Path(__file__).parent / "results"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, as a checkpoint gives them
KINDS = (("RGB JPEG", 0.7), ("grayscale PNG", 0.15), ("RGBA PNG", 0.15))
FULL = dict(images=240, sides=(200, 800), img_size=224, batch=32, workers=(0, 1, 2), repeats=2, steps=4, fed_steps=3,
            models=(("vit_tiny_patch16_224", {}), ("vit_small_patch16_224", {})))
QUICK = dict(images=16, sides=(40, 96), img_size=32, batch=4, workers=(0, 1), repeats=1, steps=2, fed_steps=2,
             models=(("vit_tiny_patch16_224", {"img_size": 32, "depth": 1}),))


# ---------------------------------------------------------------------------- the host
def host() -> dict:
    """What lscpu says of the CPU: vendor, model name, family / model, CPUs, and the bf16 / AMX flags."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}
    flags = set(fields.get("Flags", "").split())
    return {"vendor": fields.get("Vendor ID"), "model_name": fields.get("Model name"),
            "family": fields.get("CPU family"), "model": fields.get("Model"), "cpus": fields.get("CPU(s)"),
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags, "amx_tile": "amx_tile" in flags,
            "avx512f": "avx512f" in flags}


def load_average() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- the photos
def make_photos(root: Path, n: int, sides: tuple[int, int], seed: int = 0) -> dict:
    """``n`` synthetic photos in root/{a,b}/: smooth colour fields with texture and grain (so JPEG sizes
    are a photo's, not a flat image's), sides U(sides), kinds in the KINDS proportions; seeded."""
    rng = np.random.default_rng(seed)
    counts = [round(n * p) for _, p in KINDS]
    counts[0] = n - sum(counts[1:])
    kinds = rng.permutation(np.repeat(np.arange(len(KINDS)), counts))
    total_bytes, pixels = 0, 0
    for i, kind in enumerate(kinds):
        h, w = (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
        coarse = Image.fromarray(rng.integers(0, 256, (max(2, h // 48), max(2, w // 48), 3), dtype=np.uint8))
        base = np.asarray(coarse.resize((w, h), Image.BICUBIC), dtype=np.float32)
        yy, xx = np.mgrid[0:h, 0:w]
        texture = 20 * np.sin(xx / rng.uniform(2, 9) + yy / rng.uniform(3, 11))[..., None]
        arr = np.clip(base + texture + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
        path = root / "ab"[i % 2] / f"{i:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == 0:
            path = path.with_suffix(".jpg")
            Image.fromarray(arr).save(path, quality=90)
        elif kind == 1:
            path = path.with_suffix(".png")
            Image.fromarray(arr).convert("L").save(path)
        else:
            path = path.with_suffix(".png")
            alpha = np.clip(128 + 127 * np.cos(xx / 17.0), 0, 255).astype(np.uint8)[..., None]
            Image.fromarray(np.concatenate([arr, alpha], 2), "RGBA").save(path)
        total_bytes += path.stat().st_size
        pixels += h * w
    return {"images": n, "sides": list(sides), "seed": seed, "kinds": {k: int(c) for (k, _), c in zip(KINDS, counts)},
            "mean_megapixels": pixels / n / 1e6, "mean_kib": total_bytes / n / 1024}


# ---------------------------------------------------------------------------- measurements
def loader_rate(ds, transform, batch: int, workers: int, repeats: int) -> dict:
    """Images/s over whole epochs (the median of ``repeats`` timed epochs after an untimed one that
    starts the persistent workers)."""
    loader = vdata.make_loader(ds, batch_size=batch, shuffle=True, drop_last=True, seed=0, transform=transform,
                               num_workers=workers)
    rates = []
    try:
        for epoch in range(repeats + 1):
            loader.set_epoch(epoch)
            t, n = time.perf_counter(), 0
            for x, y in loader:
                n += len(y)
            if epoch:
                rates.append(n / (time.perf_counter() - t))
    finally:
        loader.close()
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "epochs": repeats,
            "images_per_epoch": len(loader) * batch}


def decode_rate(ds, repeats: int) -> dict:
    """Images/s of decoding alone (FolderDataset items at their own size), in this process."""
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        rates.append(len(ds) / (time.perf_counter() - t))
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def step_rate(name: str, overrides: dict, batch: int, steps: int) -> dict:
    """The training step on an in-memory batch: ms per step (median, min, max of ``steps`` after one warm-up)
    and images/s at the median."""
    torch.manual_seed(0)
    model = vitkit.create_model(name, **overrides)
    x = torch.randn(batch, *model.input_size)
    y = torch.randint(0, model.num_classes, (batch,))
    run = train_fn(model, model, x, y, torch.device("cpu"))
    run()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {"model": name, "overrides": overrides, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "ms": {"median": med * 1e3, "min": min(times) * 1e3, "max": max(times) * 1e3}, "steps": steps,
            "img_per_s": batch / med}


def fed_rate(name: str, overrides: dict, ds, transform, batch: int, workers: int, steps: int) -> dict:
    """Training steps fed by the loader: the median time from asking for a batch to the end of its step,
    over ``steps`` steps after one warm-up step (which also starts the workers)."""
    import torch.nn.functional as F
    torch.manual_seed(0)
    model = vitkit.create_model(name, **overrides).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    loader = vdata.make_loader(ds, batch_size=batch, shuffle=True, drop_last=True, seed=1, transform=transform,
                               num_workers=workers)
    times, epoch = [], 0
    try:
        while len(times) < steps + 1:
            loader.set_epoch(epoch)
            t = time.perf_counter()
            for x, y in loader:
                loss = F.cross_entropy(model(x), y % model.num_classes)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                now = time.perf_counter()
                times.append(now - t)
                t = now
                if len(times) == steps + 1:
                    break
            epoch += 1
    finally:
        loader.close()
    times = times[1:]
    med = statistics.median(times)
    return {"ms": {"median": med * 1e3, "min": min(times) * 1e3, "max": max(times) * 1e3}, "steps": steps,
            "img_per_s": batch / med}


# ---------------------------------------------------------------------------- the report
def verdicts(res: dict) -> list[dict]:
    """For each model and worker count: loader (training transform) img/s >= training step img/s?"""
    rows = []
    for m in res["training"]:
        for w, lr in res["loader"]["train"].items():
            rows.append({"model": m["model"], "workers": int(w), "loader": lr["median"], "training": m["img_per_s"],
                         "ratio": lr["median"] / m["img_per_s"], "keeps_up": lr["median"] >= m["img_per_s"]})
    return rows


def _n(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def _name(m: dict) -> str:
    """The model's name, with its overrides when it has some (the --quick run's small model)."""
    ov = ", ".join(f"{k}={v}" for k, v in m["overrides"].items())
    return f"{m['model']}({ov})" if ov else m["model"]


def _load(la) -> str:
    return "unknown" if la is None else ", ".join(f"{v:.2f}" for v in la)


def report(res: dict) -> str:
    h, p, cfg = res["host"], res["photos"], res["config"]
    size, batch = cfg["img_size"], cfg["batch"]
    flags = ", ".join(f"{f} {'yes' if h[f] else 'no'}" for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile"))
    lines = [f"# Loading photos of mixed sizes vs the training step, at {size} px (issue 18)", "",
             f"Host: {h['vendor']} {h['model_name']} (family {h['family']}, model {h['model']}), {h['cpus']} CPUs; "
             f"{flags}; torch {res['torch']}, {res['threads']} threads in the training process. "
             f"**The host was shared with other long-running benchmarks while this ran** (1/5/15-minute load "
             f"averages {_load(res['load_before'])} at the start, {_load(res['load_after'])} at the end, on "
             f"{h['cpus']} CPUs), so the absolute rates are lower and noisier than on an idle machine; every "
             f"comparison below is between numbers of this one run. Made by `{res['command']}` in "
             f"{res['seconds']:.0f} s; do not edit by hand.", "",
             f"Photos: {p['images']} synthetic photos written by the script (seed {p['seed']}), sides "
             f"{p['sides'][0]}-{p['sides'][1]} px (mean {p['mean_megapixels']:.2f} MP, "
             f"{p['mean_kib']:.0f} KiB a file): "
             + ", ".join(f"{c} {k}" for k, c in p["kinds"].items())
             + f"; `imagefolder` keeps each at its own size and takes {res['train_images']} for training "
               f"(80/20 split). Batches of {batch}, fp32.", "",
             f"## The loader (images/s, decode + per-image transform + batch of {batch})", "",
             f"Medians of {_n(cfg['repeats'], 'timed epoch')} after an untimed one that starts the "
             "persistent workers; min-max in brackets. Train: DeiT's transform (random resized crop of the "
             "original, scale 0.08-1, bicubic; flip; rand-m9-mstd0.5-inc1; Normalize; random erasing 0.25, "
             f"pixel). Eval: resize the shorter side to {int(size / 0.875)} (bicubic), centre crop {size}.", "",
             "| pipeline | " + " | ".join(_n(w, "worker") for w in cfg["workers"]) + " |",
             "|---|" + "---|" * len(cfg["workers"])]
    for name in ("train", "eval"):
        cells = [res["loader"][name][str(w)] for w in cfg["workers"]]
        lines.append(f"| {name} | " + " | ".join(f"{c['median']:.1f} [{c['min']:.1f}-{c['max']:.1f}]" for c in cells)
                     + " |")
    d = res["decode"]
    lines += ["", f"Decoding alone (PIL, to float, no transform, this process): {d['median']:.1f} images/s "
                  f"[{d['min']:.1f}-{d['max']:.1f}].", "",
              f"## The training step (forward, cross-entropy, backward, fused AdamW; batch {batch} in memory)", "",
              "| model | params | ms / step | images/s |", "|---|---|---|---|"]
    for m in res["training"]:
        ms = m["ms"]
        lines.append(f"| {_name(m)} | {m['params_m']:.2f}M | {ms['median']:.0f} [{ms['min']:.0f}-{ms['max']:.0f}] | "
                     f"{m['img_per_s']:.1f} |")
    lines += ["", f"Medians of {_n(res['training'][0]['steps'], 'step')} after a warm-up step.", "",
              "## Does the loader keep up? (loader images/s, training transform, >= the step's images/s)", "",
              "| model | " + " | ".join(_n(w, "worker") for w in cfg["workers"]) + " |",
              "|---|" + "---|" * len(cfg["workers"])]
    rows = verdicts(res)
    for m in res["training"]:
        mine = {r["workers"]: r for r in rows if r["model"] == m["model"]}
        lines.append(f"| {_name(m)} ({m['img_per_s']:.1f} img/s) | " + " | ".join(
            f"{'yes' if mine[w]['keeps_up'] else '**no**'}: {mine[w]['loader']:.1f} img/s, {mine[w]['ratio']:.1f}x"
            for w in cfg["workers"]) + " |")
    lines += ["", "## Training fed by the loader (the workers share the cores with the step)", "",
              f"Medians of {_n(cfg['fed_steps'], 'step')} after a warm-up step, each from asking for its batch to "
              "the end of the step; the last column compares with the same step on a batch held in memory.", "",
              "| model | workers | ms / step | images/s | vs in-memory batch |", "|---|---|---|---|---|"]
    for m in res["training"]:
        for w in cfg["workers"]:
            f = res["fed"][m["model"]][str(w)]
            lines.append(f"| {_name(m)} | {w} | {f['ms']['median']:.0f} [{f['ms']['min']:.0f}-{f['ms']['max']:.0f}] | "
                         f"{f['img_per_s']:.1f} | {f['img_per_s'] / m['img_per_s']:.2f}x |")
    lines += ["", "## Verdict", ""]
    for m in res["training"]:
        mine = [r for r in rows if r["model"] == m["model"]]
        ok = [r["workers"] for r in mine if r["keeps_up"]]
        best = max(mine, key=lambda r: r["loader"])
        fed = {int(w): f["img_per_s"] / m["img_per_s"] for w, f in res["fed"][m["model"]].items()}
        best_fed = max(fed, key=fed.get)
        lines.append(f"- {_name(m)}: the loader {'keeps up' if ok else 'does not keep up'} "
                     + (f"with {' / '.join(map(str, ok))} workers" if ok else "with any worker count measured")
                     + f" (at best {best['loader']:.1f} vs {m['img_per_s']:.1f} img/s, {best['ratio']:.1f}x, with "
                       f"{_n(best['workers'], 'worker')}); fed by it, training runs at {fed[best_fed]:.2f}x its "
                       f"in-memory rate at best ({_n(best_fed, 'worker')}; "
                     + ", ".join(f"{_n(w, 'worker')}: {r:.2f}x" for w, r in sorted(fed.items())) + ").")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny photos and model, one repeat (a smoke test)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    start, load_before = time.perf_counter(), load_average()
    res = {**environment(), "host": host(), "load_before": load_before,
           "command": command("python benchmarks/loader.py", args, p),
           "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if k != "models"}}
    with tempfile.TemporaryDirectory() as tmp:
        res["photos"] = make_photos(Path(tmp), cfg["images"], cfg["sides"])
        bundle = vdata.build(f"imagefolder:{tmp}")
        ds = bundle.train
        res["train_images"] = len(ds)
        size, batch = cfg["img_size"], cfg["batch"]
        tfs = {"train": vdata.photo_train_transform(size, MEAN, STD),
               "eval": vdata.photo_eval_transform(size, MEAN, STD)}
        res["decode"] = decode_rate(ds, cfg["repeats"])
        res["loader"] = {name: {str(w): loader_rate(ds, tf, batch, w, cfg["repeats"]) for w in cfg["workers"]}
                         for name, tf in tfs.items()}
        res["training"] = [step_rate(name, ov, batch, cfg["steps"]) for name, ov in cfg["models"]]
        res["fed"] = {name: {str(w): fed_rate(name, ov, ds, tfs["train"], batch, w, cfg["fed_steps"])
                             for w in cfg["workers"]} for name, ov in cfg["models"]}
    res["load_after"] = load_average()
    res["seconds"] = time.perf_counter() - start
    res["verdicts"] = verdicts(res)
    print(write_results(args.out, "loader_quick" if args.quick else "loader", res, report(res)))
    return res


if __name__ == "__main__":
    main()
