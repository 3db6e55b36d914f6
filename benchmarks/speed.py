"""Speed of vitkit's ViT against its peers on this machine, measured side by side.

    python benchmarks/speed.py            # ViT-Ti/S/B-16 at 224 and the demo's ViT; writes results/speed.{md,json}
    python benchmarks/speed.py --quick    # a tiny model, one repeat (the test suite runs this)

Peers with the SAME weights: HF transformers' ViT (SDPA attention), loaded from a folder written by
`vitkit.weights.export`. For training only: vit-pytorch's ViT of the same shape. Every number is a
median over interleaved repeats (impl A, B, C, A, B, C, ...), so machine noise hits all alike;
min and max are kept. Achieved GFLOP/s (forward FLOPs x 3 for training) is compared with an fp32
matmul peak measured in the same run.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import vitkit
from vitkit.weights import export

RESULTS = Path(__file__).parent / "results"


def matmul_peak(n: int = 1024, repeats: int = 5) -> float:
    """fp32 GFLOP/s of an n x n matmul, the ceiling the models are compared with."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        times.append((time.perf_counter() - t) / 10)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def hf_twin(model: torch.nn.Module, folder: Path):
    """HF ViTForImageClassification with the same weights (SDPA attention)."""
    from transformers import ViTForImageClassification
    export(model, folder, to="hf")
    hf = ViTForImageClassification.from_pretrained(folder, attn_implementation="sdpa").eval()
    return lambda x: hf(pixel_values=x).logits, hf


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


def interleaved(fns: dict, repeats: int, calls: int) -> dict:
    """{name: seconds per call} medians (and min/max) over interleaved repeats."""
    for fn in fns.values():  # warm up every implementation first
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            times[k].append((time.perf_counter() - t) / calls)
    return {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in times.items()}


def bench_model(name: str, overrides: dict, batch: int, repeats: int, calls: int, tmp: Path) -> dict:
    torch.manual_seed(0)
    model = vitkit.create_model(name, **overrides).eval()
    cfg = model.cfg
    x = torch.randn(batch, *model.input_size)
    x1 = x[:1]
    hf_fwd, hf = hf_twin(model, tmp / name)
    with torch.no_grad():  # same weights, same function
        diff = (model(x1) - hf_fwd(x1)).abs().max().item()
    flops = forward_flops(model, x[:1])
    out = {"model": name, "params": sum(p.numel() for p in model.parameters()), "batch": batch,
           "forward_gflop_per_img": flops / 1e9, "max_abs_diff_vs_hf": diff}

    def infer(f, inp):
        def run():
            with torch.inference_mode():
                f(inp)
        return run

    for b, inp in (("1", x1), (str(batch), x)):
        res = interleaved({"vitkit": infer(model, inp), "hf": infer(hf_fwd, inp)}, repeats, calls)
        out[f"infer_b{b}"] = {k: {**v, "img_per_s": inp.shape[0] / v["median"]} for k, v in res.items()}

    y = torch.randint(0, cfg.num_classes, (batch,))
    trainers = {"vitkit": model, "hf": hf}
    peer = vit_pytorch_twin(cfg)
    if peer is not None:
        trainers["vit-pytorch"] = peer

    def train_step(m):
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        m.train()
        fwd = (lambda t: m(pixel_values=t).logits) if m is hf else m

        def run():
            loss = F.cross_entropy(fwd(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    res = interleaved({k: train_step(m) for k, m in trainers.items()}, repeats, max(1, calls // 2))
    out["train"] = {k: {**v, "img_per_s": batch / v["median"],
                        "gflop_per_s": 3 * flops * batch / v["median"] / 1e9} for k, v in res.items()}
    return out


def report(results: dict) -> str:
    peak = results["matmul_peak_gflops"]
    lines = [f"# vitkit speed (CPU, fp32)\n",
             f"Machine: {results['machine']}, torch {results['torch']}, {results['threads']} threads. "
             f"fp32 matmul peak measured in this run: **{peak:.0f} GFLOP/s**. Medians of "
             f"{results['repeats']} interleaved repeats (min-max in brackets). Made by "
             f"`{results['command']}`; do not edit by hand.\n",
             "| model | batch | vitkit img/s | HF img/s | vitkit / HF | vit-pytorch img/s | vitkit / vit-pytorch | vitkit GFLOP/s (% of peak) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["models"]:
        for key, label in ((f"infer_b1", "infer 1"), (f"infer_b{r['batch']}", f"infer {r['batch']}"),
                           ("train", f"train {r['batch']}")):
            d = r[key]
            v, h = d["vitkit"], d["hf"]
            peer = d.get("vit-pytorch")
            flops = r["forward_gflop_per_img"] * (3 if key == "train" else 1)
            achieved = v["img_per_s"] * flops
            lines.append(
                f"| {r['model']} | {label} | {v['img_per_s']:.1f} [{v['img_per_s'] * v['median'] / v['max']:.1f}-"
                f"{v['img_per_s'] * v['median'] / v['min']:.1f}] | {h['img_per_s']:.1f} | "
                f"{v['img_per_s'] / h['img_per_s']:.2f}x | "
                f"{peer['img_per_s']:.1f} | {v['img_per_s'] / peer['img_per_s']:.2f}x | " if peer else
                f"| {r['model']} | {label} | {v['img_per_s']:.1f} [{v['img_per_s'] * v['median'] / v['max']:.1f}-"
                f"{v['img_per_s'] * v['median'] / v['min']:.1f}] | {h['img_per_s']:.1f} | "
                f"{v['img_per_s'] / h['img_per_s']:.2f}x | - | - | ")
            lines[-1] += f"{achieved:.0f} ({achieved / peak:.0%}) |"
    lines.append("\nSame weights in vitkit and HF: max |logit difference| per model: " + ", ".join(
        f"{r['model']} {r['max_abs_diff_vs_hf']:.1e}" for r in results["models"]))
    return "\n".join(lines) + "\n"


def save(results: dict, out: Path, stem: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2))
    (out / f"{stem}.md").write_text(report(results))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny model, one repeat (a smoke test)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.quick:
        models = [("vit_nano_patch4_28", {})]
        batch, repeats, calls = 4, 1, 1
    else:
        models = [("vit_tiny_patch16_224", {}), ("vit_small_patch16_224", {}), ("vit_base_patch16_224", {}),
                  # HF ViT always pools a class token: the demo's architecture with one instead of GAP
                  ("vit_mnist_patch7_28", {"class_token": True, "global_pool": "token"})]
        batch, repeats, calls = args.batch, args.repeats, 2
    results = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "repeats": repeats,
               "command": "python benchmarks/speed.py" + (" --quick" if args.quick else ""),
               "matmul_peak_gflops": matmul_peak(256 if args.quick else 1024, 1 if args.quick else 5),
               "models": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in models:
            print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
            results["models"].append(bench_model(name, kw, batch, repeats, calls, Path(tmp)))
            save(results, args.out, "speed_quick" if args.quick else "speed")  # after every model
    print(report(results))
    return results


if __name__ == "__main__":
    main()
