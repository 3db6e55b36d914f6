"""Speed of vitkit's ViT against its peers on this machine, measured side by side (`vitkit bench`).

    vitkit bench                  # ViT-Ti/S/B-16 at 224 and the demo's ViT -> benchmarks/results/speed.{md,json}
    vitkit bench --quick          # a tiny model, one repeat (the test suite runs this)
    vitkit bench --device cuda    # on a GPU
    vitkit bench --amp none       # fp32 rows only (default: fp32 and vitkit's default precision, amp="auto")

Peers, all with the SAME weights as vitkit's model: HF transformers' ViT (SDPA attention), loaded
from a folder written by `vitkit.weights.export`; the vitkit model exported to ONNX (dynamic batch)
and run in ONNX Runtime, fp32 and int8 (ONNX Runtime's dynamic quantisation of that graph, as
`vitkit export --int8`; inference; needs the ``onnx`` extra). For training, vit-pytorch's ViT of
the same shape (its own random init). A training step is forward + cross-entropy + backward + an
AdamW step, with ``torch.optim.AdamW(fused=True)`` for every implementation alike. On the CPU the
inference rows also time ``vitkit frozen``: the inference-only copy made by ``vitkit.export.freeze``
(weights prepacked for oneDNN; same outputs), the counterpart of ONNX Runtime's prepared session.

Precisions (``--amp``, issue 19): fp32 rows, and rows under ``torch.autocast(device, bf16)`` for
vitkit, HF and vit-pytorch alike (the one line a user adds), each compared with its peer in the same
precision; ONNX Runtime (no bf16 path on the CPU) is compared in fp32 and int8 with both. The
out-of-the-box pair compares what each gives by default: vitkit at ``amp="auto"`` (bf16 where the
hardware computes it natively, fp32 elsewhere: `vitkit.train.precision.resolve_amp`), HF at fp32.
The report names the host (CPU model, the ISA flags that decide the kernels, cores): ratios measured
on one CPU do not carry to another.

Every number is a median over interleaved repeats (A, B, C, A, B, C, ...), so machine noise hits all
alike; min and max are kept. In each repeat every implementation runs a block of as many consecutive
calls as filled ``--block-seconds`` in an untimed block run first (at least one call; a block may come
out shorter where the first calls were slower than the rest), as a training loop or a stream of
batches does, after an untimed pause that lets the previous block's threads go quiet. Achieved GFLOP/s
(the full ViT's forward FLOPs, x3 for training) is quoted as a fraction of the best matmul of this
machine in that precision measured in the same run (MKL's and oneDNN's).
Peak memory: on the CPU the growth of resident memory (VmHWM) during one call; on CUDA the
allocator's max allocated bytes.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

from ..argtypes import nonneg_float, positive_int

RESULTS = Path("benchmarks/results")
# HF's ViT always pools a class token: the demo's architecture with one instead of GAP
DEMO = ("vit_mnist_patch7_28", {"class_token": True, "global_pool": "token"})
DEMO_BATCH = 64  # the demo's batch when the committed speed reports were measured (configs/demo_mnist_v1.yaml; the recipe now trains at 128: --demo-batch 128)
FULL_MODELS = [("vit_tiny_patch16_224", {}), ("vit_small_patch16_224", {}), ("vit_base_patch16_224", {}), DEMO]
QUICK_MODELS = [("vit_nano_patch4_28", {})]
PEERS = ("hf", "onnxruntime", "vit-pytorch")
# THREADS: without --threads the run keeps torch's thread settings as they are at start-up, which is what a
# user of HF or vitkit gets. torch.set_num_threads(n), even with n equal to the default, also turns MKL's
# dynamic threading off, and that slows HF's training step, not vitkit's: on the demo's ViT 24.2 -> 26.7 ms
# a step for HF, 18.8 -> 18.5 for vitkit (`python benchmarks/threads.py`, benchmarks/results/threads.md).
# A run with --threads therefore flatters vitkit against HF; the run of record omits it.

# An untimed pause before each timed block: ONNX Runtime's worker threads busy-wait after a run (its
# default, kept, as a user of ONNX Runtime gets it) and would slow whatever runs next.
SETTLE_S = 0.05


# ---------------------------------------------------------------------------------------- peers
def hf_twin(model, folder: Path, device):
    """HF ViTForImageClassification with the same weights (SDPA attention)."""
    from transformers import ViTForImageClassification

    from ..weights import export
    export(model, folder, to="hf")
    hf = ViTForImageClassification.from_pretrained(folder, attn_implementation="sdpa").to(device).eval()
    return hf


def ort_twin(model, folder: Path, threads: int, int8: bool = False):
    """ONNX Runtime session of the same model (exported with a dynamic batch), or None without the extra;
    ``int8``: of its dynamic int8 quantisation (`vitkit export --int8`)."""
    try:
        from ..export.onnx import export_onnx, onnx_session, quantize_onnx_int8
        path = export_onnx(model, folder / "model.onnx")
        if int8:
            path = quantize_onnx_int8(path, folder / "model_int8.onnx")
        return onnx_session(path, threads)
    except ImportError as e:
        print(f"vitkit bench: no ONNX Runtime peer ({e})", file=sys.stderr)
        return None


def vit_pytorch_twin(cfg):
    """vit-pytorch's ViT of the same shape (its package __init__ needs torchvision: load vit.py alone)."""
    spec = importlib.util.find_spec("vit_pytorch")
    if spec is None:
        return None
    path = Path(spec.submodule_search_locations[0]) / "vit.py"
    mod_spec = importlib.util.spec_from_file_location("vit_pytorch_vit", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    size = cfg.img_size if isinstance(cfg.img_size, int) else cfg.img_size[0]
    return mod.ViT(image_size=size, patch_size=cfg.patch_size, num_classes=cfg.num_classes, dim=cfg.embed_dim,
                   depth=cfg.depth, heads=cfg.num_heads, mlp_dim=int(cfg.embed_dim * cfg.mlp_ratio),
                   channels=cfg.in_chans, dim_head=cfg.embed_dim // cfg.num_heads,
                   pool="cls" if cfg.global_pool == "token" else "mean")


# ---------------------------------------------------------------------------------------- steps
def infer_fn(fwd, x, device, amp=None):
    """One inference call of ``fwd`` on ``x``; ``amp``: an autocast dtype (True: bf16), None: fp32."""
    import torch

    from .measure import autocast

    def run():
        with torch.inference_mode(), autocast(device, amp):
            fwd(x)
    return run


def train_fn(module, fwd, x, y, device, amp=None):
    """One training step (forward, cross-entropy, backward, fused AdamW step) of ``module``; ``amp`` as
    ``infer_fn``'s."""
    import torch
    import torch.nn.functional as F

    from .measure import autocast
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=True)
    module.train()

    def run():
        with autocast(device, amp):
            loss = F.cross_entropy(fwd(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


def _suffix(dtype) -> str:
    """The row-name suffix of a precision: "" for fp32, " bf16", " fp16"."""
    from ..train.precision import precision_name
    return "" if dtype is None else " " + precision_name(dtype)


def bench_model(name: str, overrides: dict, batch: int, repeats: int, block_s: float, tmp: Path,
                device, threads: int, peers: tuple[str, ...], amps: tuple = (None,)) -> dict:
    """Inference at batch 1 and ``batch``, and a training step at ``batch``, of every implementation in
    every precision of ``amps`` (None: fp32, else an autocast dtype), all interleaved."""
    import torch

    import vitkit

    from .measure import alloc_peak, cuda_sync, forward_flops, interleaved, no_sync, rss_peak
    torch.manual_seed(0)
    model = vitkit.create_model(name, **overrides).to(device).eval()
    cfg = model.cfg
    x = torch.randn(batch, *model.input_size, device=device)
    x1 = x[:1]
    sync = cuda_sync(device) if device.type == "cuda" else no_sync
    out = {"model": name, "params": sum(p.numel() for p in model.parameters()), "batch": batch,
           # counted with the fast paths off: the full ViT's FLOPs (what HF computes)
           "forward_gflop_per_img": forward_flops(model, x1) / 1e9,
           "max_abs_diff": {}, "max_abs_diff_vs_fp32": {}}

    def memory(fn):
        peak = alloc_peak(fn, device) if device.type == "cuda" else rss_peak(fn)
        return None if peak is None else peak / 2 ** 20

    infer = {"vitkit": model}
    if device.type == "cpu":  # the inference-only copy with prepacked weights (vitkit.export.freeze)
        from ..export import freeze
        infer["vitkit frozen"] = freeze(model)
    hf = hf_twin(model, tmp / name, device) if "hf" in peers else None
    if hf is not None:
        infer["hf"] = lambda t: hf(pixel_values=t).logits
    ort = {}  # ONNX Runtime: fp32, and int8 (inference only, CPU; no bf16 path)
    if "onnxruntime" in peers and device.type == "cpu":
        for key, int8 in (("onnxruntime", False), ("onnxruntime int8", True)):
            session = ort_twin(model, tmp / name, threads, int8)
            if session is not None:
                from ..export.onnx import onnx_forward
                ort[key] = lambda t, s=session: onnx_forward(s, t)
    lowp = [a for a in amps if a is not None]
    with torch.no_grad():  # same weights, same function (fp32); each low precision's error from the fp32 output
        ref = model(x)
        for k, f in {**infer, **ort}.items():
            if k == "vitkit":
                continue
            diff = (f(x).to(ref.device).float() - ref).abs().max().item()
            out["max_abs_diff" if k != "onnxruntime int8" else "max_abs_diff_vs_fp32"][k] = diff
        for a in lowp:
            with torch.autocast(device.type, dtype=a):
                for k, f in infer.items():
                    out["max_abs_diff_vs_fp32"][k + _suffix(a)] = (f(x).float() - ref).abs().max().item()

    for b, inp in (("1", x1), (str(batch), x)):
        fns = {}
        for a in amps:
            fns.update({k + _suffix(a): infer_fn(f, inp, device, a) for k, f in infer.items()})
        fns.update({k: infer_fn(f, inp, device) for k, f in ort.items()})
        res = interleaved(fns, repeats, 1, sync, min_block_s=block_s, settle_s=SETTLE_S)
        for k, v in res.items():
            v["img_per_s"] = inp.shape[0] / v["median"]
            if b != "1":
                v["peak_mb"] = memory(fns[k])
        out[f"infer_b{b}"] = res

    y = torch.randint(0, cfg.num_classes, (batch,), device=device)
    trainers = {"vitkit": (model, model)}
    if hf is not None:
        trainers["hf"] = (hf, infer["hf"])
    peer = vit_pytorch_twin(cfg) if "vit-pytorch" in peers else None
    if peer is not None:
        trainers["vit-pytorch"] = (peer.to(device), peer)
    fns = {}
    for a in amps:
        fns.update({k + _suffix(a): train_fn(m, f, x, y, device, a) for k, (m, f) in trainers.items()})
    res = interleaved(fns, repeats, 1, sync, min_block_s=block_s, settle_s=SETTLE_S)
    for k, v in res.items():
        v["img_per_s"] = batch / v["median"]
        v["peak_mb"] = memory(fns[k])
    out["train"] = res
    model.eval()
    return out


# ---------------------------------------------------------------------------------------- report
def _fmt_mb(v) -> str:
    return "-" if v is None else f"{v:.0f}"


def _mine(peer: str) -> str:
    """The vitkit row a peer's row is compared with: bf16 autocast with bf16, fp32 with fp32."""
    return "vitkit bf16" if peer.endswith(" bf16") else "vitkit"


def report(results: dict) -> str:
    """The markdown report of ``results`` (results made before the precisions of issue 19: their own layout)."""
    if "precisions" not in results:
        return _report_v1(results)
    peak, peak16 = results["matmul_gflops"], results.get("matmul_gflops_lowp")
    models = results["models"]
    default = results["default_precision"]
    lowp = [p for p in results["precisions"] if p != "fp32"]
    runs = [("infer_b1", lambda r: "infer 1"), ("infer_bN", lambda r: f"infer {r['batch']}"),
            ("train", lambda r: f"train {r['batch']}")]

    def data(r, key):
        return r[f"infer_b{r['batch']}"] if key == "infer_bN" else r[key]

    def seen(names):
        return [k for k in names if any(k in data(r, key) for r in models for key, _ in runs)]

    def speed(d, k, spread=False):
        if k not in d:
            return "-"
        v = d[k]
        if not spread:
            return f"{v['img_per_s']:.1f}"
        lo, hi = v["img_per_s"] * v["median"] / v["max"], v["img_per_s"] * v["median"] / v["min"]
        return f"{v['img_per_s']:.1f} [{lo:.1f}-{hi:.1f}]"

    def ratio(d, a, b):
        return f"{d[a]['img_per_s'] / d[b]['img_per_s']:.2f}x" if a in d and b in d else "-"

    def gflops(r, key, d, k, p):
        if not p or k not in d:
            return "-"
        achieved = d[k]["img_per_s"] * r["forward_gflop_per_img"] * (3 if key == "train" else 1)
        return f"{achieved:.0f} ({achieved / p['peak']:.0%})"

    def table(impls, pairs, mine, p, ptitle):
        impls, pairs = seen(impls), [(a, b) for a, b in pairs if seen([a]) and seen([b])]
        out = ["| model | run | " + " | ".join(f"{k} img/s" for k in impls) + " | "
               + " | ".join(f"{a} / {b}" for a, b in pairs) + f" | {mine} GFLOP/s (% of {ptitle}) | "
               + f"peak MB ({mine} / {pairs[0][1] if pairs else '-'}) |",
               "|---|---|" + "---|" * (len(impls) + len(pairs) + 2)]
        for r in models:
            for key, label in runs:
                d = data(r, key)
                cells = [speed(d, k, spread=(k == mine)) for k in impls] + [ratio(d, a, b) for a, b in pairs]
                cells.append(gflops(r, key, d, mine, p))
                other = d.get(pairs[0][1], {}) if pairs else {}
                mem = (f"{_fmt_mb(d[mine].get('peak_mb'))} / {_fmt_mb(other.get('peak_mb'))}"
                       if mine in d and "peak_mb" in d[mine] else "-")
                out.append(f"| {r['model']} | {label(r)} | " + " | ".join(cells) + f" | {mem} |")
        return out

    gpu = results["device"] != "cpu"
    isa = ", ".join(results.get("host", {}).get("isa", [])) or "none of the flags vitkit checks"
    lines = [f"# vitkit speed ({results['device']}: {', '.join(results['precisions'])})\n",
             f"Host: **{results['machine']}**; torch {results['torch']}, {results['threads']} threads. "
             f"Made by `{results['command']}`; do not edit by hand. Images/s are medians of {results['repeats']} "
             "interleaved repeats (every implementation and precision of a model in one loop, "
             + (f"each a block of as many consecutive calls as filled {results['block_seconds']} s in an untimed "
                "block run first" if results.get("block_seconds") else "one call each")
             + "), vitkit's min-max in brackets. Every implementation has the same weights (vit-pytorch: same "
             "shape); training steps are forward + cross-entropy + backward + fused AdamW for all. The demo's ViT "
             "carries a class token here (HF's ViT pools one) and runs at the demo's batch.\n",
             f"Matmul peaks measured in this run (best over ViT-S's GEMM shapes and a square one), fp32: "
             + ", ".join(f"{k} {v:.0f}" for k, v in peak.items() if k != "peak")
             + f" GFLOP/s (peak **{peak['peak']:.0f}**)"
             + ("; " + f"{'/'.join(lowp)}: " + ", ".join(f"{k} {v:.0f}" for k, v in peak16.items() if k != "peak")
                + f" GFLOP/s (peak **{peak16['peak']:.0f}**)" if peak16 else "")
             + ". GFLOP/s columns count the full ViT's FLOPs (as HF computes it: vitkit's forward computes only "
             "the class token in the last block, so its figure is an effective rate).\n"]
    if default is not None:
        why = (f"`amp=\"auto\"`: bf16 where the hardware computes it natively; this host: {isa}"
               if not gpu else "`amp=\"auto\"`: bf16 on a GPU that supports it")
        mine = "vitkit" + ("" if default == "fp32" else f" {default}")
        lines += ["## Out of the box: each library's default\n",
                  f"vitkit's `amp=\"auto\"` precision on this host is **{default}** ({why}; `vitkit serve` of a "
                  f"checkpoint and `vitkit train` run in it: TrainConfig's default `amp` is \"auto\"); "
                  f"HF's default is fp32 (`model(x)` as loaded). Rows: `{mine}` vs `hf`.\n",
                  "| model | run | vitkit default img/s | hf default img/s | vitkit default / hf default |",
                  "|---|---|---|---|---|"]
        for r in models:
            for key, label in runs:
                d = data(r, key)
                lines.append(f"| {r['model']} | {label(r)} | {speed(d, mine)} | {speed(d, 'hf')} | "
                             f"{ratio(d, mine, 'hf')} |")
        lines.append("")
    if "fp32" in results["precisions"]:
        impls = ["vitkit", "vitkit frozen", "hf", "onnxruntime", "onnxruntime int8", "vit-pytorch"]
        pairs = [("vitkit", "hf"), ("vitkit", "onnxruntime"), ("vitkit", "onnxruntime int8"),
                 ("vitkit frozen", "onnxruntime"), ("vitkit", "vit-pytorch")]
        lines += ["## fp32\n"] + table(impls, pairs, "vitkit", peak, "fp32 peak") + [""]
    for lp in lowp:
        impls = [f"vitkit {lp}", f"vitkit frozen {lp}", f"hf {lp}", f"vit-pytorch {lp}"]
        pairs = [(f"vitkit {lp}", f"hf {lp}"), (f"vitkit {lp}", "onnxruntime"), (f"vitkit {lp}", "onnxruntime int8"),
                 (f"vitkit frozen {lp}", "onnxruntime int8"), (f"vitkit {lp}", f"vit-pytorch {lp}")]
        call = f"torch.autocast(\"{results['device']}\", torch.{'bfloat16' if lp == 'bf16' else 'float16'})"
        lines += [f"## {lp} autocast\n",
                  f"vitkit, HF and vit-pytorch each under `{call}`"
                  f" (weights fp32); ONNX Runtime has no {lp} path here: the ratios to it are to its fp32 and "
                  "int8 rows above.\n"] + table(impls, pairs, f"vitkit {lp}", peak16, f"{lp} peak") + [""]
    lines.append("Same weights, same function: max |logit difference| from vitkit fp32 per model: " + "; ".join(
        f"{r['model']} " + ", ".join(f"{k} {v:.1e}" for k, v in r["max_abs_diff"].items()) for r in models) + ".")
    if any(r.get("max_abs_diff_vs_fp32") for r in models):
        lines.append("\nLower precisions' max |logit difference| from vitkit fp32: " + "; ".join(
            f"{r['model']} " + ", ".join(f"{k} {v:.1e}" for k, v in r["max_abs_diff_vs_fp32"].items())
            for r in models) + ".")
    return "\n".join(lines) + "\n"


def _report_v1(results: dict) -> str:
    """The report of results made before issue 19 (fp32 on the CPU; bf16 rows on CUDA only)."""
    peak = results["matmul_gflops"]
    peak16 = results.get("matmul_gflops_bf16")
    gpu = results["device"] != "cpu"
    impls = ["vitkit", "vitkit frozen", "hf", "onnxruntime", "vit-pytorch"] + (
        ["vitkit bf16", "hf bf16", "vit-pytorch bf16"] if gpu else [])
    seen = [k for k in impls if any(k in r[m] for r in results["models"] for m in ("infer_b1", "train"))]
    pairs = [(_mine(k), k) for k in seen if not k.startswith("vitkit")]
    if "vitkit frozen" in seen and "onnxruntime" in seen:
        pairs.append(("vitkit frozen", "onnxruntime"))
    bf16_peak = (f" bf16 GEMM peak in the same run: **{peak16['peak']:.0f}** GFLOP/s (best over 8192^3 and "
                 f"ViT-S's shapes); bf16 rows are compared with vitkit bf16 and quoted against it."
                 if peak16 else "")
    lines = [f"# vitkit speed ({results['device']}, fp32{' and bf16 autocast' if gpu else ''})\n",
             f"Machine: {results['machine']}, torch {results['torch']}, {results['threads']} threads. "
             f"fp32 matmul measured in this run (best over ViT-S's GEMM shapes and a 2048^3 one): "
             + ", ".join(f"{k} {v:.0f}" for k, v in peak.items() if k != "peak")
             + f" GFLOP/s (peak = best = **{peak['peak']:.0f}**).{bf16_peak} Images/s are medians of "
             f"{results['repeats']} interleaved repeats ("
             + (f"each a block of as many consecutive calls as filled {results['block_seconds']} s in an "
                "untimed block run first"
                if "block_seconds" in results else "one call each")
             + "), vitkit's min-max in brackets. Every implementation has "
             f"the same weights (vit-pytorch: same shape); training steps use fused AdamW for all. Made by "
             f"`{results['command']}`; do not edit by hand.\n",
             "| model | run | " + " | ".join(f"{k} img/s" for k in seen) + " | "
             + " | ".join(f"{a} / {b}" for a, b in pairs)
             + " | vitkit GFLOP/s (% of peak) |" + (" vitkit bf16 GFLOP/s (% of bf16 peak) |" if peak16 else "")
             + " peak MB (vitkit / hf) |",
             "|---|---|" + "---|" * (len(seen) + len(pairs) + 2 + bool(peak16))]
    for r in results["models"]:
        for key, label in (("infer_b1", "infer 1"), (f"infer_b{r['batch']}", f"infer {r['batch']}"),
                           ("train", f"train {r['batch']}")):
            d = r[key]
            v = d["vitkit"]
            lo, hi = v["img_per_s"] * v["median"] / v["max"], v["img_per_s"] * v["median"] / v["min"]
            cells = [f"{v['img_per_s']:.1f} [{lo:.1f}-{hi:.1f}]"]
            cells += [f"{d[k]['img_per_s']:.1f}" if k in d else "-" for k in seen[1:]]
            cells += [f"{d[a]['img_per_s'] / d[b]['img_per_s']:.2f}x" if a in d and b in d else "-"
                      for a, b in pairs]
            flop = r["forward_gflop_per_img"] * (3 if key == "train" else 1)
            for name, p in (("vitkit", peak), ("vitkit bf16", peak16)):
                if p and name in d:
                    achieved = d[name]["img_per_s"] * flop
                    cells.append(f"{achieved:.0f} ({achieved / p['peak']:.0%})")
                elif p:
                    cells.append("-")
            mem = f"{_fmt_mb(v.get('peak_mb'))} / {_fmt_mb(d.get('hf', {}).get('peak_mb'))}" \
                if "peak_mb" in v else "-"
            lines.append(f"| {r['model']} | {label} | " + " | ".join(cells) + f" | {mem} |")
    lines.append("\nSame weights, same function: max |logit difference| from vitkit per model: " + "; ".join(
        f"{r['model']} " + ", ".join(f"{k} {v:.1e}" for k, v in r["max_abs_diff"].items())
        for r in results["models"]))
    return "\n".join(lines) + "\n"


def save(results: dict, out: Path, stem: str) -> None:
    from .measure import write_results
    write_results(out, stem, results, report(results))


# ---------------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--quick", action="store_true",
                   help="batch 4, one repeat, no timed blocks (a smoke test); on a tiny model unless --models")
    p.add_argument("--models", help="comma-separated registered ViT names (default: ViT-Ti/S/B-16 and the demo's)")
    p.add_argument("--batch", type=positive_int, default=32)
    p.add_argument("--demo-batch", type=positive_int, default=DEMO_BATCH,
                   help=f"batch of the demo's ViT ({DEMO[0]}; default {DEMO_BATCH}, the demo's)")
    p.add_argument("--amp", default="none,auto",
                   help="comma-separated precisions to run every implementation in: none (fp32), auto (vitkit's "
                        "default on this host: bf16 where the hardware has native bf16, else fp32), bf16, fp16 "
                        "(default: none,auto)")
    p.add_argument("--repeats", type=positive_int, default=9, help="interleaved rounds (default 9)")
    p.add_argument("--block-seconds", type=nonneg_float, default=0.5,
                   help="each round runs every implementation for at least this long, in consecutive calls "
                        "(default 0.5)")
    p.add_argument("--threads", type=positive_int,
                   help="torch (and ONNX Runtime) CPU threads (default: torch's, as a user gets them). Setting it "
                        "calls torch.set_num_threads, which also turns MKL's dynamic threading off: that changes "
                        "the peers that run on MKL (HF): benchmarks/results/threads.md")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}, or ''")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for speed.{md,json}")
    return p


def precisions(amp: str, device) -> tuple[list, object]:
    """``--amp`` (comma-separated AMP_CHOICES) -> (the autocast dtypes to run, None = fp32, each once, in
    order; vitkit's default, amp="auto", on ``device``)."""
    from ..train.precision import AMP_CHOICES, resolve_amp
    names = [a.strip() for a in amp.split(",") if a.strip()]
    bad = [a for a in names if a not in AMP_CHOICES]
    if bad or not names:
        raise ValueError(f"--amp: {bad or [amp]} not among {', '.join(AMP_CHOICES)}")
    dtypes = []
    for a in names:
        d = resolve_amp(a, device)
        if d not in dtypes:
            dtypes.append(d)
    if len([d for d in dtypes if d is not None]) > 1:
        raise ValueError("--amp: one low precision per run (bf16 or fp16), besides none")
    return dtypes, resolve_amp("auto", device)


def run(args: argparse.Namespace) -> dict:
    import torch

    from .measure import PEAK_SHAPES, command, environment, matmul_peak
    from ..train.precision import precision_name
    from ..models import is_model
    from ..train.trainer import set_threads
    if args.threads:
        set_threads(args.threads)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise ValueError(f"--device {args.device!r}: use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {args.device!r}: the benchmark runs on cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU here (torch.cuda.is_available() is False); use --device cpu")
    peers = tuple(p for p in args.peers.split(",") if p)
    unknown = set(peers) - set(PEERS)
    if unknown:
        raise ValueError(f"unknown peers {sorted(unknown)}; choose from {', '.join(PEERS)}")
    named = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else []
    unknown = [m for m in named if not is_model(m)]
    if unknown or (args.models is not None and not named):
        raise ValueError(f"--models: unknown model(s) {unknown or [args.models]}; see `vitkit models`")
    models = [(m, dict(FULL_MODELS).get(m, {})) for m in named] or (QUICK_MODELS if args.quick else FULL_MODELS)
    amps, default = precisions(args.amp, device)
    if args.quick:
        batch, demo_batch, repeats, block_s = 4, 4, 1, 0.0
    else:
        batch, demo_batch, repeats, block_s = args.batch, args.demo_batch, args.repeats, args.block_seconds
    lowp = [a for a in amps if a is not None]
    results = {**environment(device), "device": "cpu" if device.type == "cpu" else "cuda",
               "repeats": repeats, "block_seconds": block_s,
               "command": command("vitkit bench", args, add_arguments(argparse.ArgumentParser())),
               "amp": args.amp, "precisions": [precision_name(a) for a in amps],
               "default_precision": precision_name(default) if (default in amps and None in amps) else None,
               "matmul_gflops": (matmul_peak([(256, 256, 256)], 1, device) if args.quick
                                 else matmul_peak(repeats=5, device=device)),
               "models": []}
    if lowp:  # the low-precision rows are quoted against that precision's GEMM peak
        shapes = [(256, 256, 256)] if args.quick else (
            ((8192, 8192, 8192),) + PEAK_SHAPES[:3] if device.type == "cuda" else PEAK_SHAPES)
        results["matmul_gflops_lowp"] = matmul_peak(shapes, 1 if args.quick else 5, device, lowp[0])
    stem = "speed_quick" if args.quick else ("speed" if device.type == "cpu" else "speed_cuda")
    if not args.quick and batch != 32:
        stem += f"_b{batch}"
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in models:
            print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
            b = demo_batch if name == DEMO[0] else batch
            results["models"].append(bench_model(name, kw, b, repeats, block_s, Path(tmp), device,
                                                 torch.get_num_threads(), peers, tuple(amps)))
            save(results, args.out, stem)  # after every model: an interrupted run keeps what it measured
    print(report(results))
    print(f"vitkit: results -> {args.out / stem}.md, {stem}.json", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> dict:
    return run(add_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0])).parse_args(argv))
