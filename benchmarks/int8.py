"""Int8 dynamic quantisation vs fp32 vitkit: speed on ViT-S/16 and accuracy on the demo run.

    python benchmarks/int8.py --run runs/demo     # writes benchmarks/results/int8.{md,json}
    python benchmarks/int8.py --quick             # a tiny model, no run folder (the test suite)
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import vitkit
from vitkit.export import quantize_int8

RESULTS = Path(__file__).parent / "results"


def speed(name: str, batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = vitkit.create_model(name).eval()
    q = quantize_int8(model)
    x = torch.randn(batch, *model.input_size)
    times = {"fp32": [], "int8": []}
    with torch.inference_mode():
        model(x), q(x)  # warm up
        for _ in range(repeats):  # interleaved
            for key, f in (("fp32", model), ("int8", q)):
                t = time.perf_counter()
                f(x)
                times[key].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": name, "batch": batch, "fp32_img_per_s": batch / med["fp32"],
            "int8_img_per_s": batch / med["int8"], "speedup": med["fp32"] / med["int8"]}


def accuracy(run_dir: str) -> dict:
    from vitkit.train.run import load_run, predict_batches, top1
    run = load_run(run_dir)
    loader = run.test_loader()
    out = {"run": run_dir, "weights": run.weights}
    for key, model in (("fp32", run.model), ("int8", quantize_int8(run.model))):
        logits, labels = predict_batches(model, loader)
        out[f"{key}_top1"] = top1(logits, labels)
    out["change_points"] = 100 * (out["int8_top1"] - out["fp32_top1"])
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", help="a trained run folder (the demo's) for the accuracy change")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    name, batch, repeats = ("vit_nano_patch4_28", 4, 1) if args.quick else ("vit_small_patch16_224", 32, 5)
    res = {"threads": torch.get_num_threads(), "torch": torch.__version__, "speed": speed(name, batch, repeats),
           "accuracy": accuracy(args.run) if args.run else None,
           "command": "python benchmarks/int8.py" + (" --quick" if args.quick else "") +
                      (f" --run {args.run}" if args.run else "")}
    s = res["speed"]
    md = [f"# Int8 dynamic quantisation (CPU, {res['threads']} threads)\n",
          f"Made by `{res['command']}`; medians of {repeats} interleaved repeats; do not edit by hand.\n",
          "| model | batch | fp32 img/s | int8 img/s | speedup |", "|---|---|---|---|---|",
          f"| {s['model']} | {s['batch']} | {s['fp32_img_per_s']:.1f} | {s['int8_img_per_s']:.1f} | "
          f"{s['speedup']:.2f}x |"]
    if res["accuracy"]:
        a = res["accuracy"]
        md += ["", f"Held-out top-1 of `{a['run']}` ({a['weights']} weights): fp32 {a['fp32_top1']:.2%}, "
                   f"int8 {a['int8_top1']:.2%} ({a['change_points']:+.1f} points)."]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "int8_quick" if args.quick else "int8"
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=2))
    (args.out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return res


if __name__ == "__main__":
    main()
