"""Does bf16 autocast cost the demo recipe accuracy? The demo config trained in fp32 and under
``--amp bf16``, 3 seeds each, on one host (issue 19, item 3).

    python benchmarks/amp_accuracy.py                     # writes benchmarks/results/amp_accuracy.{md,json}
    python benchmarks/amp_accuracy.py --quick             # 1 epoch, 1 seed (the test suite)

Every run is ``configs/demo_mnist_v1.yaml`` (the demo's recipe when this was measured; ``make demo``
has trained configs/demo_mnist.yaml, which descends from it, since issue 20) with only ``amp`` and ``seed``
changed: the same data, schedule, augmentation and EMA. Under bf16 the master weights, AdamW's state
and the EMA stay fp32 (torch.autocast casts the matmul inputs only); evaluation runs in the run's own
precision. The accuracy is the EMA weights' held-out top-1 on mnist5k's 1,000 test digits at the last
epoch. The verdict is computed: bf16 holds when its mean is no more than ``--tolerance`` points (0.3, the
issue's bar) below fp32's (the question is what bf16 costs; a bf16 mean above fp32's costs nothing). The
difference is rounded to 1e-6 first: means of 1,000-digit accuracies are multiples of 1/30 point, and
their float difference must not decide a tie with the bar. Jobs run two at a time, one thread each (``vitkit.train.sweep``); the
training seconds are per run at one thread, so the bf16/fp32 time ratio is the speed-up of one run.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

from vitkit.bench.measure import command, environment, write_results
from vitkit.train.sweep import mean_std, run_all, train_seconds

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "configs" / "demo_mnist_v1.yaml"
PRECISIONS = ("none", "bf16")
LABEL = {"none": "fp32", "bf16": "bf16 autocast"}


def jobs(args) -> dict[str, dict]:
    """TrainConfig dicts by job name (``bf16_s1``): the demo config with ``amp`` and ``seed`` set."""
    base = yaml.safe_load(CONFIG.read_text())
    if args.quick:
        base.update(epochs=1, warmup_epochs=0)
    out = {}
    for amp in PRECISIONS:
        for seed in args.seeds:
            name = f"{amp}_s{seed}"
            out[name] = dict(base, amp=amp, seed=seed, num_threads=1, out=str(Path(args.work) / name))
    return out


def summarise(res: dict[str, dict], args) -> dict:
    """Per precision: the runs' accuracies and training seconds, their mean and std, and the verdict."""
    rows = {}
    for amp in PRECISIONS:
        runs = [res[f"{amp}_s{s}"] for s in args.seeds]
        accs = [100.0 * r["test_acc"] for r in runs]
        secs = [train_seconds(Path(args.work) / f"{amp}_s{s}") for s in args.seeds]
        rows[amp] = {"acc": accs, "seconds": secs, "acc_mean_std": mean_std(accs), "seconds_mean": mean_std(secs)[0]}
    diff = round(rows["bf16"]["acc_mean_std"][0] - rows["none"]["acc_mean_std"][0], 6)
    return {"rows": rows, "diff_points": diff, "holds": diff >= -args.tolerance,
            "speedup": rows["none"]["seconds_mean"] / max(rows["bf16"]["seconds_mean"], 1e-9)}


def report(data: dict) -> str:
    """The markdown report, a function of the results JSON alone."""
    s, a = data["summary"], data["args"]
    env = data["environment"]
    lines = [
        "# The demo recipe in fp32 and under bf16 autocast",
        "",
        f"Host: {env['machine']}; torch {env['torch']}; one thread per run, {a['jobs']} at a time. The training "
        "seconds depend on what else ran on the host (their ratio less so); the accuracies do not.",
        f"Command: `{data['command']}`",
        "",
        f"`{data.get('config', 'configs/demo_mnist_v1.yaml')}` (the demo's recipe before issue 20; {data['epochs']} "
        f"epochs), seeds {', '.join(map(str, a['seeds']))}; held-out "
        "top-1 of the EMA weights on mnist5k's 1,000 test digits at the last epoch.",
        "",
        "| precision | " + " | ".join(f"seed {x}" for x in a["seeds"]) + " | mean +- std | training s / run (mean) |",
        "|---|" + "---|" * len(a["seeds"]) + "---|---|",
    ]
    for amp in PRECISIONS:
        r = s["rows"][amp]
        m, sd = r["acc_mean_std"]
        lines.append(f"| {LABEL[amp]} | " + " | ".join(f"{x:.1f}%" for x in r["acc"])
                     + f" | {m:.2f} +- {sd:.2f}% | {r['seconds_mean']:.0f} |")
    verdict = "holds" if s["holds"] else "does not hold"
    lines += [
        "",
        f"bf16 - fp32: **{s['diff_points']:+.2f} points** (bar: bf16 no more than {a['tolerance']:.1f} points below "
        f"fp32); bf16 accuracy **{verdict}**. One bf16 run trains {s['speedup']:.2f}x as fast as one fp32 run here.",
        "",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tolerance", type=float, default=0.3, help="bf16 holds when at most this many points below fp32")
    p.add_argument("--work", default="runs/amp_accuracy", help="run folders (a finished run is reused)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="1 epoch, 1 seed, results stem amp_accuracy_quick")
    return p


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    cmd = command("python benchmarks/amp_accuracy.py", args, parser, skip=("out", "work"))
    if args.quick:
        args.seeds, args.jobs = args.seeds[:1], 1
    every = jobs(args)
    load = os.getloadavg()[0]
    res = run_all(list(every.items()), args.jobs)
    data = {"command": cmd, "load_at_start": load,
            "environment": environment(), "args": {k: v for k, v in vars(args).items() if k != "out"},
            "config": str(CONFIG.relative_to(ROOT)), "epochs": next(iter(every.values()))["epochs"],
            "summary": summarise(res, args)}
    data["environment"]["threads"] = 1
    write_results(args.out, "amp_accuracy_quick" if args.quick else "amp_accuracy", data, report(data))
    print(report(data))
    return data


if __name__ == "__main__":
    main()
