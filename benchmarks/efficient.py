"""Efficient ViTs at high resolution: latency, peak memory and FLOPs against image size, side by side.

    python benchmarks/efficient.py --threads 1      # 9 rows x 224..1024 px, CPU fp32 + 2 bf16 rows;
                                                    # results/efficient.{md,json,png}
    python benchmarks/efficient.py --device cuda    # on a GPU: fp32 and bf16 autocast, every row
    python benchmarks/efficient.py --quick          # 64/96/128 px, one repeat (the test suite runs this)

Rows: ViT-S/16 (global attention), Swin-T (7x7 windows), PVT-Tiny (spatial-reduction attention),
EfficientViT-B1 (ReLU linear attention) fused and unfused, and SparseViT on Swin-T at 0, 30, 50 and
70% window sparsity in every stage. Every model is built at each size (``img_size=``) with random
weights (seed 0); the SparseViT rows are one model with Swin-T's weights whose sparsity is set before
each call, so at 0% it computes Swin-T exactly (the report gives the largest logit difference).
"EfficientViT-B1 (fused)" is the model's inference mode, ``model.fuse()``
(``vitkit.models.efficientvit.fuse_for_inference``: every BatchNorm folded into its conv, channels-last
maps, oneDNN convs with the activation fused); it is the row the targets read. "EfficientViT-B1
unfused" is the same model (same weights) as built, in eval mode; the report gives the largest
relative logit difference between the two.
bf16: on the CPU only the rows named by ``--bf16`` (default: EfficientViT-B1 fused and unfused) also
run under ``torch.autocast("cpu", torch.bfloat16)``; on CUDA every row does.

Protocol, per size: batch 1, ``torch.inference_mode``, the default (fast) path.
- Latency: after one warm-up call each, every row runs once in turn, ``repeats`` times (interleaved,
  so machine noise hits all alike); the median is reported with min and max. Fewer repeats at the
  large sizes (7 at 1024 px, up to 25 at small ones) keep the full CPU run near 6 minutes on one
  thread of an idle 2-core machine (1024 px alone: ~2.5 minutes; the committed run).
- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add of matmuls, convs and
  attention; elementwise ops not counted), with vitkit's Linear on ``F.linear``
  (``vitkit.layers.fast_linear(False)``: the oneDNN op is invisible to the counter) and a formula for
  the CPU SDPA kernel the counter does not know.
- Peak memory, two numbers. "alloc": the peak of tensor memory allocated during one forward above the
  level at its start, from the allocator's own events (CPU: ``torch.profiler`` with ``profile_memory``,
  allocations and frees summed in time order; CUDA: ``torch.cuda.max_memory_allocated``). "RSS" (CPU,
  Linux): the growth of the process's resident memory during one forward: free heap pages go back to
  the OS first (``malloc_trim``), the kernel's high-water mark is reset (``/proc/self/clear_refs``),
  and VmHWM after the call minus VmRSS before it counts everything the call made resident (tensors,
  oneDNN scratch, allocator slack).
- Scaling: tokens = the token count of the model's first transformer stage ((size/16)^2 for ViT-S,
  (size/4)^2 for Swin-T, SparseViT and PVT, (size/16)^2 for EfficientViT, whose attention starts at
  stride 16); the exponent k of latency ~ tokens^k is the least-squares slope of log latency on log
  tokens over the top ``--fit-points`` sizes (512, 768 and 1024 px by default), and the same for FLOPs.
  The issue's targets are then checked from these numbers.
"""
from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

import vitkit
from vitkit.bench import measure
from vitkit.bench.measure import alloc_peak, forward_flops, rss_peak

RESULTS = Path(__file__).parent / "results"
SIZES = (224, 384, 512, 768, 1024)
QUICK_SIZES = (64, 96, 128)
SPARSE_MODEL = "sparsevit_swin_tiny_patch4_window7_224"


class Row(NamedTuple):
    key: str
    label: str
    model: str
    family: str
    sparsity: float | None = None   # SparseViT: the same window sparsity in every stage
    fused: bool = False             # EfficientViT: model.fuse(), the inference mode


ROWS = (Row("vit_s", "ViT-S/16", "vit_small_patch16_224", "ViT"),
        Row("swin_t", "Swin-T", "swin_tiny_patch4_window7_224", "Swin"),
        Row("pvt_tiny", "PVT-Tiny", "pvt_tiny", "PVT"),
        Row("efficientvit_b1", "EfficientViT-B1 (fused)", "efficientvit_b1", "EfficientViT", fused=True),
        Row("efficientvit_b1_unfused", "EfficientViT-B1 unfused", "efficientvit_b1", "EfficientViT"),
        *(Row(f"sparsevit_{p}", f"SparseViT-Swin-T {p}%", SPARSE_MODEL, "SparseViT", p / 100)
          for p in (0, 30, 50, 70)))
ROW = {r.key: r for r in ROWS}
CPU_BF16_ROWS = ("efficientvit_b1", "efficientvit_b1_unfused")  # also under bf16 autocast on the CPU (--bf16)


# ------------------------------------------------------------------------------------------ models
def first_stage_stride(model: torch.nn.Module) -> int:
    """Pixels per token side in the model's first transformer stage: the patch size (ViT, Swin, PVT),
    or for EfficientViT the stride where its attention stages begin (stem and two MBConv stages)."""
    cfg = model.cfg
    if hasattr(cfg, "patch_size"):
        return cfg.patch_size
    return math.prod(cfg.strides[:4])


def build(rows: list[Row], size: int, device: torch.device) -> tuple[dict, dict]:
    """Models for one size -> ({row key: forward(x)}, {row key: {"params", "tokens"}}).

    The SparseViT rows share one model with Swin-T's weights (when Swin-T is a row); each forward
    sets its row's sparsity first. A fused row is ``fuse()`` of its unfused model (same weights)."""
    made: dict[str, torch.nn.Module] = {}

    def model(name: str) -> torch.nn.Module:
        if name not in made:
            torch.manual_seed(0)
            made[name] = vitkit.create_model(name, img_size=size).eval().to(device)
            if name == SPARSE_MODEL and "swin_tiny_patch4_window7_224" in made:
                made[name].load_state_dict(made["swin_tiny_patch4_window7_224"].state_dict())
        return made[name]

    fns, info = {}, {}
    for r in sorted(rows, key=lambda r: r.family == "SparseViT"):  # Swin-T first: its weights are shared
        m = model(r.model)
        if r.fused:
            m = m.fuse()
        fns[r.key] = m if r.sparsity is None else _sparse_forward(m, r.sparsity)
        info[r.key] = {"params": sum(p.numel() for p in m.parameters()),
                       "tokens": (size // first_stage_stride(m)) ** 2}
    return {r.key: fns[r.key] for r in rows}, info


def _sparse_forward(model: torch.nn.Module, sparsity: float) -> Callable:
    def forward(x):
        model.set_sparsity(sparsity)  # one float: every pair of blocks
        return model(x)
    return forward


def in_dtype(fn: Callable, dtype: str, device: torch.device) -> Callable:
    """fn under bf16 autocast (CPU or CUDA) or as is (fp32)."""
    if dtype == "fp32":
        return fn

    def run(x):
        with measure.autocast(device, True):
            return fn(x)
    return run


# ------------------------------------------------------------------------------------------ latency
def interleaved(fns: dict, repeats: int, sync: Callable[[], None]) -> dict:
    """{key: {median_ms, min_ms, max_ms, n}} over `repeats` rounds, each running every fn once in turn."""
    res = measure.interleaved(fns, repeats, sync=sync, warmup=0)  # the warm-up call is measure_size's
    return {k: {"median_ms": v["median"] * 1e3, "min_ms": v["min"] * 1e3, "max_ms": v["max"] * 1e3, "n": repeats}
            for k, v in res.items()}


def default_repeats(size: int) -> int:
    """7 at 1024 px, growing as 1/pixels to at most 25 (a 1024 px ViT-S forward takes seconds)."""
    return max(7, min(25, round(7 * (1024 / size) ** 2)))


def measure_size(rows: list[Row], size: int, dtypes: list[str], device: torch.device, repeats: int,
                 rss: bool, bf16_rows: tuple[str, ...] | None = None) -> dict:
    """Every measurement of one size (see the module docstring). ``bf16_rows``: the rows that run in
    dtypes other than fp32 (None: all)."""
    fns, info = build(rows, size, device)
    x = torch.randn(1, 3, size, size, device=device)
    sync = measure.cuda_sync(device) if device.type == "cuda" else measure.no_sync
    calls = {(d, k): (lambda f=in_dtype(fn, d, device): f(x)) for d in dtypes for k, fn in fns.items()
             if d == "fp32" or bf16_rows is None or k in bf16_rows}
    out = {"size": size, "repeats": repeats, "params": {k: v["params"] for k, v in info.items()},
           "tokens": {k: v["tokens"] for k, v in info.items()}, "finite": {}, "gflop": {},
           "alloc_mb": {d: {} for d in dtypes}, "rss_mb": {}, "latency": {d: {} for d in dtypes}}
    with torch.inference_mode():
        logits = {}
        for (d, k), call in calls.items():  # the warm-up call, checked
            y = call()
            out["finite"][f"{k}/{d}"] = bool(torch.isfinite(y).all())
            logits[(d, k)] = y.float()
        if ("fp32", "swin_t") in logits and ("fp32", "sparsevit_0") in logits:
            diff = logits["fp32", "swin_t"] - logits["fp32", "sparsevit_0"]
            out["sparse0_vs_swin_max_abs_diff"] = diff.abs().max().item()
        for d in dtypes:  # the fused EfficientViT against the same model unfused
            if (d, "efficientvit_b1") in logits and (d, "efficientvit_b1_unfused") in logits:
                ref = logits[d, "efficientvit_b1_unfused"]
                diff = (logits[d, "efficientvit_b1"] - ref).abs().max() / ref.abs().max().clamp_min(1e-30)
                out.setdefault("fused_vs_unfused_max_rel_diff", {})[d] = diff.item()
        lat = interleaved(calls, repeats, sync)
        for (d, k), v in lat.items():
            out["latency"][d][k] = v
        gc.collect()  # once per size (it takes ~0.2 s): reference cycles freed before the memory readings
        for k, fn in fns.items():
            out["gflop"][k] = forward_flops(fn, x) / 1e9
            for d in dtypes:
                if (d, k) not in calls:
                    continue
                peak = alloc_peak(calls[d, k], device)
                out["alloc_mb"][d][k] = None if peak is None else peak / 2 ** 20
            if rss and device.type == "cpu":
                peak = rss_peak(calls["fp32", k])
                out["rss_mb"][k] = None if peak is None else peak / 2 ** 20
    return out


# ------------------------------------------------------------------------------------------ analysis
def fit_exponent(tokens: list[float], values: list[float]) -> float:
    """k of values ~ tokens^k: the least-squares slope of log(values) on log(tokens)."""
    if len(tokens) < 2 or len(set(tokens)) < 2:
        raise ValueError(f"need at least two distinct token counts to fit an exponent, got {tokens}")
    return float(np.polyfit(np.log(tokens), np.log(values), 1)[0])


def exponents(res: dict, fit_points: int) -> dict:
    """{dtype: {row: {"latency": k, "flops": k}}} over the top `fit_points` sizes measured."""
    sizes = sorted(res["by_size"], key=int)[-fit_points:]
    out = {}
    if len(sizes) < 2:
        return out
    for d in res["dtypes"]:
        out[d] = {}
        for k in res["rows"]:
            if not all(k in res["by_size"][s]["latency"][d] for s in sizes):
                continue
            toks = [res["by_size"][s]["tokens"][k] for s in sizes]
            lat = [res["by_size"][s]["latency"][d][k]["median_ms"] for s in sizes]
            out[d][k] = {"latency": fit_exponent(toks, lat),
                         "flops": fit_exponent(toks, [res["by_size"][s]["gflop"][k] for s in sizes])}
    return out


def targets(res: dict) -> list[dict]:
    """The issue's targets, each {"target", "measured", "met"} (met None: a row it needs was not run)."""
    exps = res["exponents"].get("fp32", {})
    fit = ", ".join(res["fit_sizes"])
    out = []
    for key, op, bound in (("efficientvit_b1", "<=", 1.15), ("swin_t", "<=", 1.15), ("vit_s", ">=", 1.6)):
        k = exps.get(key, {}).get("latency")
        met = None if k is None else (k <= bound if op == "<=" else k >= bound)
        out.append({"target": f"{_label(res, key)} latency exponent {op} {bound} (fit over {fit} px)",
                    "measured": None if k is None else round(k, 3), "met": met})
    sp = res.get("speedup", {}).get("fp32", {}).get("sparsevit_50")
    out.append({"target": f"SparseViT 50% at least 1.5x faster than dense Swin-T at {res.get('largest', '?')} px",
                "measured": None if sp is None else round(sp, 3), "met": None if sp is None else sp >= 1.5})
    return out


def speedups(res: dict) -> dict:
    """{dtype: {sparse row: Swin-T median / row median}} at the largest size measured."""
    if not res["by_size"]:
        return {}
    top = res["by_size"][max(res["by_size"], key=int)]
    out = {}
    for d in res["dtypes"]:
        lat = top["latency"][d]
        if "swin_t" in lat:
            out[d] = {k: lat["swin_t"]["median_ms"] / v["median_ms"] for k, v in lat.items()
                      if ROW[k].family == "SparseViT"}
    return out


def fused_speedups(res: dict, d: str) -> dict:
    """{size: EfficientViT-B1 unfused median / fused median} in dtype ``d``, where both ran."""
    out = {}
    for s in sorted(res["by_size"], key=int):
        lat = res["by_size"][s]["latency"].get(d, {})
        if "efficientvit_b1" in lat and "efficientvit_b1_unfused" in lat and res["rows"].get(
                "efficientvit_b1", {}).get("fused"):
            out[s] = lat["efficientvit_b1_unfused"]["median_ms"] / lat["efficientvit_b1"]["median_ms"]
    return out


def summarize(res: dict, fit_points: int) -> None:
    sizes = sorted(res["by_size"], key=int)
    res["fit_sizes"] = sizes[-fit_points:]
    res["largest"] = sizes[-1] if sizes else None
    res["exponents"] = exponents(res, fit_points)
    res["speedup"] = speedups(res)
    res["targets"] = targets(res)


# ------------------------------------------------------------------------------------------ report
def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _ms(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _label(res: dict, key: str) -> str:
    """A row's label as the results recorded it (older results: as ROWS names it)."""
    return res["rows"].get(key, {}).get("label") or ROW[key].label


def _rows_in(res: dict, rows: list[str], table: str, d: str) -> list[str]:
    """The rows measured in dtype ``d`` (``table``: "latency" or "alloc_mb") at some size."""
    return [k for k in rows if any(k in res["by_size"][s][table].get(d, {}) for s in res["by_size"])]


def report(res: dict) -> str:
    sizes = sorted(res["by_size"], key=int)
    rows = [k for k in res["rows"] if any(k in res["by_size"][s]["gflop"] for s in sizes)]
    where = "CUDA" if res["device"] == "cuda" else "CPU"
    head = "| model | " + " | ".join(f"{s} px" for s in sizes)
    rule = "|---|" + "---|" * len(sizes)
    fit = ", ".join(res["fit_sizes"]) or "-"
    L = [f"# Efficient ViTs at high resolution ({where}, {' and '.join(res['dtypes'])})\n",
         f"Machine: {res['machine']}, torch {res['torch']}, {res['threads']} thread{'s' * (res['threads'] != 1)}, "
         "batch 1, random weights. "
         f"Made by `{res['command']}`; do not edit by hand. Protocol: the docstring of `benchmarks/efficient.py`.\n"]
    if any(r.get("fused") for r in res["rows"].values()):
        L.append("EfficientViT-B1 (fused) is the model's inference mode, `model.fuse()`: every BatchNorm folded "
                 "into its conv, channels-last maps, oneDNN convs with the activation fused "
                 "(`vitkit.models.efficientvit.fuse_for_inference`); the targets read it. \"unfused\" is the same "
                 "model as built, in eval mode." +
                 (" bf16: `torch.autocast(\"cpu\", torch.bfloat16)`, only the rows in its tables."
                  if res["device"] == "cpu" and "bf16" in res["dtypes"] else "") + "\n")
    L.append("## Targets (computed from the tables below)\n")
    if res["device"] == "cuda":
        L.append("The targets were set for the CPU. At batch 1 these models are far too small to fill a GPU: "
                 "latency is kernel-launch bound and barely grows with the image, so the exponents say little.\n")
    L += ["| target | measured | met |", "|---|---|---|"]
    for t in res["targets"]:
        L.append(f"| {t['target']} | {_num(t['measured'], '.2f')} | "
                 f"{'-' if t['met'] is None else 'yes' if t['met'] else 'NO'} |")
    for d in res["dtypes"]:
        exps = res["exponents"].get(d, {})
        L += [f"\n## Latency, {d} (ms; median of interleaved repeats, min-max in brackets)\n",
              "Repeats per size: " + ", ".join(f"{s} px {res['by_size'][s]['repeats']}" for s in sizes) + ". "
              f"k: exponent of latency ~ tokens^k, fitted over {fit} px.\n",
              head + " | k (latency) |", rule + "---|"]
        for k in _rows_in(res, rows, "latency", d):
            cells = []
            for s in sizes:
                v = res["by_size"][s]["latency"][d].get(k)
                cells.append("-" if v is None else f"{_ms(v['median_ms'])} [{_ms(v['min_ms'])}-{_ms(v['max_ms'])}]")
            L.append(f"| {_label(res, k)} | " + " | ".join(cells) +
                     f" | {_num(exps.get(k, {}).get('latency'), '.2f')} |")
        sp = res["speedup"].get(d)
        if sp:
            L.append(f"\nAt {res['largest']} px, dense Swin-T latency / SparseViT latency: " +
                     ", ".join(f"{_label(res, k).split()[-1]} {v:.2f}x" for k, v in sp.items()) +
                     " (0% is the dense computation through the sparse code path).")
        fu = fused_speedups(res, d)
        if fu:
            L.append("\nEfficientViT-B1 unfused latency / fused latency: " +
                     ", ".join(f"{s} px {v:.2f}x" for s, v in fu.items()) + ".")
    exps = res["exponents"].get(res["dtypes"][0], {})
    L += ["\n## FLOPs (GFLOP per image; 2 per multiply-add)\n",
          "| model | params (M) | tokens at the largest size | " + " | ".join(f"{s} px" for s in sizes)
          + " | k (FLOPs) |",
          "|---|---|---|" + "---|" * len(sizes) + "---|"]
    for k in rows:
        top = res["by_size"][sizes[-1]]
        L.append(f"| {_label(res, k)} | {top['params'][k] / 1e6:.1f} | {top['tokens'][k]} | " +
                 " | ".join(_num(res["by_size"][s]["gflop"].get(k), ".1f") for s in sizes) +
                 f" | {_num(exps.get(k, {}).get('flops'), '.2f')} |")
    for d in res["dtypes"]:
        L += [f"\n## Peak memory, {d}: tensors allocated during one forward (MB, above the level at its start)\n",
              head + " |", rule]
        for k in _rows_in(res, rows, "alloc_mb", d):
            L.append(f"| {_label(res, k)} | " + " | ".join(_num(res["by_size"][s]["alloc_mb"][d].get(k), ".1f")
                                                         for s in sizes) + " |")
    if any(res["by_size"][s]["rss_mb"] for s in sizes):
        L += ["\n## Peak memory, fp32: resident-memory growth during one forward (MB; tensors + oneDNN scratch "
              "+ allocator slack)\n", head + " |", rule]
        for k in rows:
            L.append(f"| {_label(res, k)} | " + " | ".join(_num(res["by_size"][s]["rss_mb"].get(k), ".1f")
                                                         for s in sizes) + " |")
    diffs = {s: res["by_size"][s].get("sparse0_vs_swin_max_abs_diff") for s in sizes}
    bad = [f"{s} px {k}" for s in sizes for k, ok in res["by_size"][s]["finite"].items() if not ok]
    L += ["\n## Checks\n", "Every output finite: " + ("yes" if not bad else "NO: " + ", ".join(bad)) + "."]
    if any(v is not None for v in diffs.values()):
        g = {s: res["by_size"][s]["gflop"] for s in sizes}
        L.append("SparseViT at 0% vs Swin-T with the same weights, max |logit difference|: " +
                 ", ".join(f"{s} px {_num(v, '.1e')}" for s, v in diffs.items()) + "; its FLOPs / Swin-T's: " +
                 ", ".join(f"{s} px {g[s]['sparsevit_0'] / g[s]['swin_t']:.3f}" for s in sizes) +
                 " (above 1 where the maps are padded to whole windows).")
    fused = {s: res["by_size"][s].get("fused_vs_unfused_max_rel_diff") for s in sizes}
    for d in res["dtypes"]:
        if any(v and d in v for v in fused.values()):
            L.append(f"EfficientViT-B1 fused vs unfused with the same weights, {d}, max |logit difference| / max "
                     "|logit|: " + ", ".join(f"{s} px {_num((v or {}).get(d), '.1e')}" for s, v in fused.items()) + ".")
    L += ["\n## Key figures\n", key_figures(res)]
    return "\n".join(L) + "\n"


def key_figures(res: dict) -> str:
    """A few sentences with the headline numbers (for the README)."""
    if not res["by_size"]:
        return "-"
    s = res["largest"]
    lat = res["by_size"][s]["latency"]["fp32"]
    exps = res["exponents"].get("fp32", {})
    where = res["machine"] if res["device"] == "cuda" else f"this {res['threads']}-thread CPU"
    parts = [f"At {s} px on {where} (fp32, batch 1): " +
             ", ".join(f"{_label(res, k)} {_ms(v['median_ms'])} ms" for k, v in lat.items()
                       if ROW[k].family != "SparseViT" or k == "sparsevit_50") + "."]
    if exps:
        parts.append("Latency grows as tokens^k with k = " +
                     ", ".join(f"{_label(res, k)} {v['latency']:.2f}" for k, v in exps.items()
                               if ROW[k].family != "SparseViT" or k == "sparsevit_50") +
                     f" (fit over {', '.join(res['fit_sizes'])} px).")
    if res["device"] == "cpu" and "bf16" in res["dtypes"]:
        lat16, exps16 = res["by_size"][s]["latency"]["bf16"], res["exponents"].get("bf16", {})
        if lat16:
            parts.append("Under bf16 autocast: " + ", ".join(
                f"{_label(res, k)} {_ms(v['median_ms'])} ms" +
                (f" (k = {exps16[k]['latency']:.2f})" if k in exps16 else "") for k, v in lat16.items()) + ".")
    sp = res["speedup"].get("fp32", {})
    if "sparsevit_50" in sp:
        v = sp["sparsevit_50"]
        parts.append(f"SparseViT at 50% window sparsity is {v if v >= 1 else 1 / v:.2f}x "
                     f"{'faster' if v >= 1 else 'slower'} than dense Swin-T (Swin-T / SparseViT latency at 0%: "
                     f"{sp.get('sparsevit_0', float('nan')):.2f}x).")
    return " ".join(parts)


def plot(res: dict, path: Path) -> None:
    """Latency against image size, log-log, one line per row (one panel per dtype)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sizes = sorted(res["by_size"], key=int)
    fig, axes = plt.subplots(1, len(res["dtypes"]), figsize=(6.5 * len(res["dtypes"]), 4.8), squeeze=False)
    for ax, d in zip(axes[0], res["dtypes"]):
        for k in res["rows"]:
            pts = [(int(s), res["by_size"][s]["latency"][d][k]["median_ms"]) for s in sizes
                   if k in res["by_size"][s]["latency"][d]]
            if not pts:
                continue
            sparse = ROW[k].family == "SparseViT"
            kk = res["exponents"].get(d, {}).get(k, {}).get("latency")
            ax.plot(*zip(*pts), marker="o", ms=3, ls="--" if sparse else "-", lw=1 if sparse else 1.8,
                    label=_label(res, k) + ("" if kk is None else f" (k={kk:.2f})"))
        if len(sizes) > 1:  # guides through the smallest size's slowest row: latency ~ tokens and ~ tokens^2
            s0 = int(sizes[0])
            y0 = max(v["median_ms"] for v in res["by_size"][sizes[0]]["latency"][d].values())
            xs = np.array([s0, int(sizes[-1])])
            for p, lab in ((2, "~ tokens"), (4, "~ tokens$^2$")):
                ax.plot(xs, y0 * (xs / s0) ** p, color="gray", lw=0.7, ls=":")
                ax.annotate(lab, (xs[-1], y0 * (xs[-1] / s0) ** p), fontsize=7, color="gray", ha="right")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([int(s) for s in sizes], [str(s) for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("image size (px, log)")
        ax.set_ylabel("latency, batch 1 (ms, log)")
        ax.set_title(f"{res['device'].upper()} {d}, {res['threads']} thread{'s' * (res['threads'] != 1)}")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save(res: dict, out: Path, stem: str, fit_points: int) -> None:
    summarize(res, fit_points)
    measure.write_results(out, stem, res, report(res))
    if res["by_size"]:
        plot(res, out / f"{stem}.png")


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="64/96/128 px, one repeat (a smoke test)")
    p.add_argument("--sizes", type=int, nargs="+", help=f"image sizes in px (default {' '.join(map(str, SIZES))})")
    p.add_argument("--models", nargs="+", choices=list(ROW), default=list(ROW), metavar="ROW",
                   help=f"rows to run (default all: {' '.join(ROW)})")
    p.add_argument("--repeats", type=int, help="interleaved repeats at every size (default: 7 at 1024 px, "
                                               "up to 25 at small sizes; --quick: 1)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda also runs bf16 autocast, every row)")
    p.add_argument("--bf16", nargs="*", choices=list(ROW), default=list(CPU_BF16_ROWS), metavar="ROW",
                   help="CPU: the rows that also run under bf16 autocast (default: "
                        f"{' '.join(CPU_BF16_ROWS)}; none: fp32 only)")
    p.add_argument("--fit-points", type=int, default=3, help="fit exponents over this many largest sizes")
    p.add_argument("--no-rss", action="store_true", help="skip the resident-memory measurement")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda needs a GPU and a CUDA build of torch; run without it for the CPU")
    if args.fit_points < 2:
        raise ValueError(f"--fit-points must be >= 2, got {args.fit_points}")
    sizes = sorted(args.sizes or (QUICK_SIZES if args.quick else SIZES))
    rows = [ROW[k] for k in dict.fromkeys(args.models)]
    stem = ("efficient_quick" if args.quick else "efficient") + ("_cuda" if device.type == "cuda" else "")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    bf16_rows = None if device.type == "cuda" else tuple(k for k in dict.fromkeys(args.bf16) if k in
                                                         {r.key for r in rows})
    res = {**measure.environment(device), "device": device.type,
           "dtypes": ["fp32", "bf16"] if device.type == "cuda" or bf16_rows else ["fp32"],
           "command": measure.command("python benchmarks/efficient.py", args, p),
           "rows": {r.key: r._asdict() for r in rows}, "sizes": sizes, "by_size": {}}
    try:
        for size in sizes:
            repeats = args.repeats or (1 if args.quick else default_repeats(size))
            print(f"{size} px: {len(rows)} rows x {repeats} repeats ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            res["by_size"][str(size)] = measure_size(rows, size, res["dtypes"], device, repeats,
                                                     rss=not args.no_rss, bf16_rows=bf16_rows)
            res["by_size"][str(size)]["seconds"] = time.perf_counter() - t
            save(res, args.out, stem, args.fit_points)  # after every size: an interrupted run keeps its results
    finally:
        torch.set_num_threads(threads)
    print(report(res))
    return res


if __name__ == "__main__":
    main()
