"""MKL's dynamic threading and the demo ViT's training step, vitkit vs HF: why `vitkit bench` keeps torch's
thread settings as they are.

    python benchmarks/threads.py            # writes benchmarks/results/threads.{md,json}
    python benchmarks/threads.py --quick    # a tiny model, one repeat (the test suite)

``torch.set_num_threads(n)``, even with n equal to the default, does more than set a thread count: it
also turns MKL's dynamic threading off (``mkl_set_dynamic(0)``, so that OpenMP's team is not resized
around MKL calls). HF's ViT runs its matmuls on MKL and vitkit's on oneDNN, so the switch can move the
two differently, and a benchmark that calls it (``vitkit bench --threads N``) would not compare them as
a user's process runs them. This measures it: the training step (forward, cross-entropy, backward,
fused AdamW) of each, with MKL's dynamic threading on (torch's start-up state) and off (the state
after ``torch.set_num_threads``), all four interleaved in one process; the switch is flipped before
every step with MKL's own ``MKL_Set_Dynamic`` from torch's library.
"""
from __future__ import annotations

import argparse
import ctypes
import sys
import tempfile
from pathlib import Path

import torch

import vitkit
from vitkit.bench.measure import command, environment, interleaved, write_results
from vitkit.bench.speed import DEMO, SETTLE_S, hf_twin, train_fn

RESULTS = Path(__file__).parent / "results"
MODES = {"on (torch's start-up state)": 1, "off (after torch.set_num_threads)": 0}


def mkl_library():
    """torch's CPU library if it exports MKL's dynamic-threading switch, else None."""
    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
    except OSError:
        return None
    return lib if hasattr(lib, "MKL_Set_Dynamic") and hasattr(lib, "mkl_serv_get_dynamic") else None


def measure(name: str, overrides: dict, batch: int, repeats: int, block_s: float, lib) -> dict:
    torch.manual_seed(0)
    model = vitkit.create_model(name, **overrides).eval()
    x = torch.randn(batch, *model.input_size)
    y = torch.randint(0, model.num_classes, (batch,))

    def with_mode(step, dynamic: int):
        def run():
            lib.MKL_Set_Dynamic(ctypes.c_int(dynamic))
            step()
        return run

    with tempfile.TemporaryDirectory() as tmp:  # HF's twin loads the same weights from a folder written here
        hf = hf_twin(model, Path(tmp), x.device)
        steps = {"vitkit": train_fn(model, model, x, y, x.device),
                 "hf": train_fn(hf, lambda t: hf(pixel_values=t).logits, x, y, x.device)}
        fns = {f"{impl} | {mode}": with_mode(step, dyn) for mode, dyn in MODES.items() for impl, step in steps.items()}
        res = interleaved(fns, repeats, min_block_s=block_s, settle_s=SETTLE_S)
    return {"model": name, "overrides": overrides, "batch": batch,
            "ms_per_step": {k: {s: v[s] * 1e3 for s in ("median", "min", "max")} for k, v in res.items()}}


def report(res: dict) -> str:
    t = res["ms_per_step"]
    lines = [f"# MKL's dynamic threading and a training step of {res['model']} (batch {res['batch']}, vitkit vs HF)",
             "", f"Machine: {res['machine']}, torch {res['torch']}, {res['threads']} threads. Made by "
             f"`{res['command']}`; ms per training step (forward, cross-entropy, backward, fused AdamW), "
             f"medians of {res['repeats']} interleaved repeats (each a block of at least "
             f"{res['block_seconds']} s of consecutive steps), min-max in brackets; do not edit by hand.", "",
             "| MKL dynamic threading | vitkit | hf | hf / vitkit |", "|---|---|---|---|"]
    for mode in MODES:
        v, h = t[f"vitkit | {mode}"], t[f"hf | {mode}"]
        lines.append(f"| {mode} | {v['median']:.2f} [{v['min']:.2f}-{v['max']:.2f}] | "
                     f"{h['median']:.2f} [{h['min']:.2f}-{h['max']:.2f}] | {h['median'] / v['median']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny model, one repeat (a smoke test)")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    lib = mkl_library()
    if lib is None:
        sys.exit("threads: this PyTorch build does not export MKL's MKL_Set_Dynamic")
    repeats = 1 if args.quick else args.repeats
    block_s = 0.0 if args.quick else 0.5
    name, overrides = ("vit_nano_patch4_28", {}) if args.quick else DEMO
    before = lib.mkl_serv_get_dynamic()
    try:
        res = {**environment(), "repeats": repeats, "block_seconds": block_s,
               "command": command("python benchmarks/threads.py", args, p),
               **measure(name, overrides, 4 if args.quick else 32, repeats, block_s, lib)}
    finally:
        lib.MKL_Set_Dynamic(ctypes.c_int(before))
    print(write_results(args.out, "threads_quick" if args.quick else "threads", res, report(res)))
    return res


if __name__ == "__main__":
    main()
