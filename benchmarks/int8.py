"""Int8 dynamic quantisation vs fp32 vitkit: speed on ViT-S/16 and accuracy on the demo run.

    python benchmarks/int8.py --run runs/demo     # writes benchmarks/results/int8.{md,json}
    python benchmarks/int8.py --quick             # a tiny model, no run folder (the test suite)

Two int8 paths, both dynamic quantisation of the Linear layers (int8 weights, activations quantised
per batch on the fly), against fp32 vitkit (oneDNN Linear), interleaved in one run:
- ``torch int8``: ``vitkit.export.quantize_int8`` (PyTorch's quantize_dynamic, FBGEMM kernels);
- ``onnx int8``: ``vitkit export RUN --onnx m.onnx --int8`` (ONNX Runtime's quantize_dynamic of the
  exported graph's MatMuls), with the fp32 ONNX graph beside it.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

import vitkit
from vitkit.bench.measure import command, environment, interleaved, write_results
from vitkit.bench.speed import SETTLE_S, infer_fn
from vitkit.export import quantize_int8

RESULTS = Path(__file__).parent / "results"


def onnx_int8(model: torch.nn.Module, folder: Path):
    """(fp32 forward, int8 forward) in ONNX Runtime, or None without the onnx extra."""
    try:
        from vitkit.export.onnx import export_onnx, onnx_forward, onnx_session, quantize_onnx_int8
        fp32 = export_onnx(model, folder / "fp32.onnx")
        quantize_onnx_int8(fp32, folder / "int8.onnx")
    except ImportError as e:
        print(f"int8: no ONNX Runtime path ({e})", file=sys.stderr)
        return None
    sessions = onnx_session(fp32), onnx_session(folder / "int8.onnx")
    return tuple((lambda x, s=s: onnx_forward(s, x)) for s in sessions)


def variants(model: torch.nn.Module, folder: Path) -> dict:
    """{name: forward} of every inference path of ``model``."""
    out = {"fp32": model.eval(), "torch int8": quantize_int8(model)}
    ort = onnx_int8(model, folder)
    if ort is not None:
        out["onnx fp32"], out["onnx int8"] = ort
    return out


def speed(name: str, batch: int, repeats: int, folder: Path, block_s: float = 0.0) -> dict:
    torch.manual_seed(0)
    model = vitkit.create_model(name).eval()
    x = torch.randn(batch, *model.input_size)
    fns = {k: infer_fn(f, x, x.device) for k, f in variants(model, folder).items()}
    res = interleaved(fns, repeats, min_block_s=block_s, settle_s=SETTLE_S)
    fp32 = res["fp32"]["median"]
    return {"model": name, "batch": batch, **{k: {"img_per_s": batch / v["median"], "speedup": fp32 / v["median"]}
                                               for k, v in res.items()}}


def accuracy(run_dir: str, folder: Path) -> dict:
    """Held-out top-1 of the run in every inference path, and each int8 path's change from fp32."""
    from vitkit.train.run import load_run, top1
    run = load_run(run_dir)
    batches = list(run.test_loader())
    labels = torch.cat([y for _, y in batches])
    out = {"run": run_dir, "weights": run.weights}
    with torch.inference_mode():
        for key, f in variants(run.model, folder).items():
            out[key] = {"top1": top1(torch.cat([f(x) for x, _ in batches]), labels)}
    for key, v in out.items():
        if isinstance(v, dict) and key != "fp32":
            v["change_points"] = 100 * (v["top1"] - out["fp32"]["top1"])
    return out


def report(res: dict) -> str:
    s = res["speed"]
    keys = [k for k in ("fp32", "torch int8", "onnx fp32", "onnx int8") if k in s]
    md = [f"# Int8 dynamic quantisation (CPU, {res['threads']} threads)\n",
          f"Machine: {res['machine']}, torch {res['torch']}. Made by `{res['command']}`; medians of {res['repeats']} "
          f"interleaved repeats (each a block of as many consecutive calls as filled {res['block_seconds']} s in "
          "an untimed block run first, after an untimed pause); do not edit by hand. "
          "fp32 is vitkit's own (oneDNN Linear); 'torch int8' is `vitkit.export.quantize_int8`, 'onnx int8' is "
          "`vitkit export RUN --onnx m.onnx --int8` run in ONNX Runtime.\n",
          "| model | batch | " + " | ".join(f"{k} img/s" for k in keys) + " | "
          + " | ".join(f"{k} / fp32" for k in keys[1:]) + " |",
          "|---|---|" + "---|" * (2 * len(keys) - 1),
          f"| {s['model']} | {s['batch']} | " + " | ".join(f"{s[k]['img_per_s']:.1f}" for k in keys) + " | "
          + " | ".join(f"{s[k]['speedup']:.2f}x" for k in keys[1:]) + " |"]
    a = res["accuracy"]
    if a:
        md += ["", f"Held-out top-1 of `{a['run']}` ({a['weights']} weights, mnist5k test split, 1,000 digits):", "",
               "| path | top-1 | change (points) |", "|---|---|---|"]
        for k in keys:
            md.append(f"| {k} | {a[k]['top1']:.2%} | " +
                      (f"{a[k]['change_points']:+.1f}" if "change_points" in a[k] else "-") + " |")
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", help="a trained run folder (the demo's) for the accuracy change")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--block-seconds", type=float, default=0.5,
                   help="each repeat runs every path for at least this long, in consecutive calls (default 0.5)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    block_s = 0.0 if args.quick else args.block_seconds
    name, batch, repeats = ("vit_nano_patch4_28", 4, 1) if args.quick else ("vit_small_patch16_224", 32, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        res = {**environment(), "repeats": repeats,
               "block_seconds": block_s, "speed": speed(name, batch, repeats, Path(tmp), block_s),
               "accuracy": accuracy(args.run, Path(tmp)) if args.run else None,
               "command": command("python benchmarks/int8.py", args, p)}
    print(write_results(args.out, "int8_quick" if args.quick else "int8", res, report(res)))
    return res


if __name__ == "__main__":
    main()
