"""The kernel choices behind vitkit's CPU speed, measured side by side (the numbers DESIGN.md and
layers/linear.py, layers/attention.py quote).

    python benchmarks/kernels.py           # writes results/kernels.{md,json}
    python benchmarks/kernels.py --quick   # tiny shapes, one repeat (the test suite runs this)

1. GEMM: ``F.linear`` (MKL in PyTorch's CPU build) vs oneDNN (``torch.ops.mkldnn._linear_pointwise``,
   what ``vitkit.layers.Linear`` calls), on ViT-S/16's batch-32 shapes and the demo ViT's.
2. fc1 + GELU: two steps vs one oneDNN GEMM with a GELU post-op (vitkit's inference MLP).
3. Attention, forward + backward: ``F.scaled_dot_product_attention`` vs the explicit three ops, at the
   demo's 17 tokens, 65 and ViT-S's 197 (vitkit takes the explicit path up to Nq * Nk = 128^2).
Medians of interleaved repeats in one run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from vitkit.bench.measure import interleaved

RESULTS = Path(__file__).parent / "results"
GEMMS = [(6304, 384, 1152), (6304, 384, 1536), (6304, 1536, 384), (544, 128, 384), (544, 256, 128), (17, 128, 384)]
ATTENTION = [(32, 4, 17, 32), (32, 6, 65, 64), (32, 6, 197, 64)]  # (B, heads, N, head dim)


def onednn(x, w, b, post="none", algorithm=""):
    return torch.ops.mkldnn._linear_pointwise(x, w, b, post, [], algorithm)


def gemms(shapes, repeats: int) -> list[dict]:
    rows = []
    for m, k, n in shapes:
        x, w, b = torch.randn(m, k), torch.randn(n, k), torch.randn(n)
        res = interleaved({"F.linear (MKL)": lambda: F.linear(x, w, b), "oneDNN": lambda: onednn(x, w, b)},
                          repeats, calls=3, warmup=2)
        rows.append({"shape": [m, k, n], **{name: 2 * m * k * n / v["median"] / 1e9 for name, v in res.items()}})
    return rows


def fused_gelu(shape, repeats: int) -> dict:
    m, k, n = shape
    x, w, b = torch.randn(m, k), torch.randn(n, k), torch.randn(n)
    res = interleaved({"GEMM then GELU": lambda: F.gelu(onednn(x, w, b)),
                       "GEMM + GELU post-op": lambda: onednn(x, w, b, "gelu", "none")}, repeats, calls=3, warmup=2)
    return {"shape": list(shape), **{name: v["median"] * 1e3 for name, v in res.items()}}


def attention(shapes, repeats: int) -> list[dict]:
    rows = []
    for B, h, N, d in shapes:
        q, k, v = (torch.randn(B, h, N, d, requires_grad=True) for _ in range(3))
        g = torch.randn(B, h, N, d)

        def sdpa():
            F.scaled_dot_product_attention(q, k, v).backward(g)

        def explicit():
            (((q * d ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v).backward(g)

        res = interleaved({"SDPA": sdpa, "explicit": explicit}, repeats, calls=3, warmup=2)
        rows.append({"shape": [B, h, N, d], **{name: r["median"] * 1e3 for name, r in res.items()}})
    return rows


def report(res: dict) -> str:
    lines = [f"# CPU kernels behind vitkit's speed ({res['threads']} threads, fp32)\n",
             f"Made by `{res['command']}`; medians of {res['repeats']} interleaved repeats; do not edit by hand.\n",
             "## GEMM, GFLOP/s ((M x K) @ (K x N) + bias)\n", "| M, K, N | F.linear (MKL) | oneDNN | oneDNN / MKL |",
             "|---|---|---|---|"]
    for r in res["gemm"]:
        lines.append(f"| {r['shape']} | {r['F.linear (MKL)']:.0f} | {r['oneDNN']:.0f} | "
                     f"{r['oneDNN'] / r['F.linear (MKL)']:.2f}x |")
    f = res["fused_gelu"]
    lines += ["", f"## fc1 + GELU at {f['shape']} (ms)\n", "| GEMM then GELU | GEMM + GELU post-op |", "|---|---|",
              f"| {f['GEMM then GELU']:.2f} | {f['GEMM + GELU post-op']:.2f} |",
              "", "## Attention, forward + backward (ms)\n", "| B, heads, N, head dim | SDPA | explicit |", "|---|---|---|"]
    for r in res["attention"]:
        lines.append(f"| {r['shape']} | {r['SDPA']:.2f} | {r['explicit']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if not torch.backends.mkldnn.is_available():
        sys.exit("kernels: this PyTorch build has no oneDNN")
    quick = args.quick
    repeats = 1 if quick else args.repeats
    res = {"threads": torch.get_num_threads(), "torch": torch.__version__, "repeats": repeats,
           "command": "python benchmarks/kernels.py" + (" --quick" if quick else ""),
           "gemm": gemms([(64, 32, 48)] if quick else GEMMS, repeats),
           "fused_gelu": fused_gelu((64, 32, 128) if quick else (6304, 384, 1536), repeats),
           "attention": attention([(2, 2, 9, 8)] if quick else ATTENTION, repeats)}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "kernels_quick" if quick else "kernels"
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=2))
    (args.out / f"{stem}.md").write_text(report(res))
    print(report(res))
    return res


if __name__ == "__main__":
    main()
