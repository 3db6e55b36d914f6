"""How the demo's recipe got there: every row a `vitkit train` config and its measured held-out top-1.

    python benchmarks/demo_recipe.py            # runs/demo_recipe/*, benchmarks/results/demo_recipe.{md,json}
    python benchmarks/demo_recipe.py --cost     # + the training cost of the first row, v2, the recipe and PatchDropout detours
    python benchmarks/demo_recipe.py --quick    # a tiny version (the test suite)

Protocol. The data is mnist5k (4,000 real 28x28 MNIST training digits, 1,000 held out). Every row is
``vitkit train --config configs/demo_mnist.yaml`` plus the flags in its row (the report prints them), seed 0,
one thread; each run is scored once, on the EMA weights after its last epoch (no early stopping, nothing
chosen on the held-out digits). The first row is the previous recipe (configs/demo_mnist_v1.yaml: P=7,
90 epochs, batch 64, fp32); each following row changes one thing more; the last row is configs/demo_mnist.yaml
itself. It and the row before it (configs/demo_mnist_v2.yaml, the recipe before PatchDropout, which
benchmarks/deit_converged.py trains from) are also trained with seeds 1 and 2 (mean +- std over the three seeds).

Cost. ``--cost`` trains the first row, v2, the last row and the PatchDropout detours side by side in this
process (``--threads``, default 1), alternating one epoch of each for ``--rounds`` rounds, and reports the
median epoch time of each (the
trainer's own ``epoch_time_s``: augmentation, forward, backward, optimizer, EMA; no evaluation) and the
ratio of whole-run training times (epochs x epoch time) to v2's and the previous recipe's. A ratio measured side by side holds on a loaded
machine; seconds do not. The estimate multiplies the previous recipe's measured training time on an
idle 2-core Zen 4 (403 s, ``--reference-s``) by the ratio. To time the recipe itself on a quiet machine:
``vitkit train --config configs/demo_mnist.yaml --out runs/demo_time --overwrite`` and sum the
``epoch_time_s`` of runs/demo_time/metrics.jsonl (``python benchmarks/demo_recipe.py --time runs/demo_time``
prints the sum).

Finished runs are reused (`vitkit.train.sweep.run_all`: same config, same folder), an interrupted one
resumes. Jobs run in ``--jobs`` processes of one thread each.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

from vitkit.bench.measure import environment, write_results
from vitkit.train.sweep import mean_std, param_count, run_all, train_seconds

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
CONFIG = ROOT / "configs" / "demo_mnist.yaml"
SEEDS = (0, 1, 2)
REFERENCE_S = 403.0  # the previous recipe's training time (`make demo`, fp32, 2 threads) on an idle 2-core Zen 4

PREVIOUS_CONFIG = ROOT / "configs" / "demo_mnist_v1.yaml"  # the previous recipe: the first row
V2_CONFIG = ROOT / "configs" / "demo_mnist_v2.yaml"  # the recipe before PatchDropout: row V2
V2 = "recipe"  # its row (and run folder) key


# (key, label, the fields this row changes over the row before it). Dotted keys change one entry of a dict
# field (augment.erase, model_args.depth). The rows are cumulative: the last one is configs/demo_mnist.yaml.
STEPS: tuple[tuple[str, str, dict], ...] = (
    ("previous", "the previous recipe: P=7, 90 epochs of batch 64, fp32", {}),
    ("bf16", "+ bf16 autocast (avx512_bf16): a step costs ~0.6x", {"amp": "bf16"}),
    ("b128_e140", "+ batch 128 for 140 epochs: the time bf16 saves spent on a longer schedule",
     {"batch_size": 128, "epochs": 140}),
    ("affine5", "+ a lighter random affine: rotate 5, translate 0.05, scale 0.95-1.05 (was 10, 0.1, 0.9-1.1)",
     {"augment.rotate": 5, "augment.translate": 0.05, "augment.scale": [0.95, 1.05]}),
    (V2, "configs/demo_mnist_v2.yaml: 130 epochs (~5 min on 2 cores), amp auto (bf16 on this host)",
     {"epochs": 130, "amp": "auto"}),
    ("patch_drop", "+ PatchDropout 0.25 (Liu et al. 2022: training sees 12 of the 16 patch tokens, so an epoch "
     "costs less; Cost below): 145 epochs in about v2's time; configs/demo_mnist.yaml",
     {"model_args.patch_drop": 0.25, "epochs": 145}),
)
SEEDED = (V2, STEPS[-1][0])  # the rows also trained with seeds 1 and 2
COST_DETOURS = ("patch_drop50", "patch_drop25_e170")  # detours whose time --cost measures too

# Tried and not kept: (key, the row it starts from, label, changes). Reported in their own table.
DETOURS: tuple[tuple[str, str, str, dict], ...] = (
    ("affine15", "b128_e140", "stronger affine: rotate 15, translate 0.15, scale 0.85-1.15, shear 10",
     {"augment.rotate": 15, "augment.translate": 0.15, "augment.scale": [0.85, 1.15], "augment.shear": 10}),
    ("elastic", "b128_e140", "+ elastic distortion (Simard et al. 2003: alpha 34, sigma 4)", {"augment.elastic": 34}),
    ("elastic_affine5", "b128_e140", "+ elastic distortion with the lighter affine",
     {"augment.elastic": 34, "augment.rotate": 5, "augment.translate": 0.05, "augment.scale": [0.95, 1.05]}),
    ("no_mixup", "b128_e140", "no mixup", {"mixup": 0.0}),
    ("sincos", "recipe", "fixed 2-D sin-cos position embedding (MAE's) instead of the learned one",
     {"model_args.pos_embed": "sincos"}),
    ("repeated_aug", "recipe", "repeated augmentation x3 (DeiT's RASampler: 1,334 images a epoch, 3 copies each)",
     {"repeated_aug": 3}),
    ("lr2e3", "recipe", "peak lr 2e-3 (was 1e-3)", {"lr": 2e-3}),
    ("drop_path02", "recipe", "stochastic depth 0.2 (was 0.1)", {"model_args.drop_path_rate": 0.2}),
    ("patch_drop50", "recipe", "PatchDropout 0.5 (8 of 16 tokens) for 210 epochs (time: Cost below)",
     {"model_args.patch_drop": 0.5, "epochs": 210}),
    ("patch_drop25_e170", "recipe", "PatchDropout 0.25 for 170 epochs (time: Cost below)",
     {"model_args.patch_drop": 0.25, "epochs": 170}),
)


# ---------------------------------------------------------------------------- configs
def final_config() -> dict:
    """configs/demo_mnist.yaml as a TrainConfig dict."""
    from vitkit.train import TrainConfig
    return TrainConfig.from_file(CONFIG).to_dict()


def apply(cfg: dict, changes: dict) -> dict:
    """``cfg`` with ``changes`` (dotted keys set one entry of a dict field) applied; a copy."""
    out = copy.deepcopy(cfg)
    for key, value in changes.items():
        field, _, leaf = key.partition(".")
        if leaf:
            out[field] = {**out.get(field, {}), leaf: value}
        else:
            out[field] = copy.deepcopy(value)
    return out


def row_configs() -> dict[str, dict]:
    """Row key -> TrainConfig fields (without run fields: out, threads), cumulative from PREVIOUS."""
    from vitkit.train import TrainConfig
    base = TrainConfig.from_file(PREVIOUS_CONFIG).to_dict()
    out, cfg = {}, base
    for key, _, changes in STEPS:
        cfg = TrainConfig.from_dict(apply(cfg, changes)).to_dict()
        out[key] = cfg
    return out


def detour_configs() -> dict[str, dict]:
    """Detour key -> TrainConfig fields: its starting row with its changes."""
    from vitkit.train import TrainConfig
    rows = row_configs()
    return {key: TrainConfig.from_dict(apply(rows[start], changes)).to_dict() for key, start, _, changes in DETOURS}


RUN_FIELDS = ("out", "num_threads", "num_workers", "log_every", "resume")


def _value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return f"{v:g}" if isinstance(v, float) else str(v)


_FLAGS = {"model": "--model", "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr",
          "warmup_epochs": "--warmup", "weight_decay": "--weight-decay", "amp": "--amp", "ema_decay": "--ema",
          "seed": "--seed"}


def flags(cfg: dict, final: dict) -> str:
    """The `vitkit train --config configs/demo_mnist.yaml` flags that turn the final config into ``cfg``."""
    parts = []
    for key in final:
        if key in RUN_FIELDS or cfg.get(key) == final.get(key):
            continue
        a, b = cfg.get(key), final.get(key)
        if isinstance(a, dict) or isinstance(b, dict):
            a, b = a or {}, b or {}
            for leaf in list(b) + [k for k in a if k not in b]:
                if a.get(leaf) != b.get(leaf):
                    parts.append(f"--set {key}.{leaf}={_value(a[leaf] if leaf in a else _neutral(key, leaf))}")
        elif key == "amp":
            parts.append(f"--amp {a or 'none'}")
        elif key in _FLAGS and a is not None:
            parts.append(f"{_FLAGS[key]} {_value(a)}")
        else:
            parts.append(f"--set {key}={_value(a)}")
    return " ".join(parts)


def _neutral(field: str, leaf: str):
    """The value that turns off a dict entry the row does not have (augment keys: their no-augmentation
    default; model_args: the demo ViT's ``ViTConfig`` default, e.g. patch_drop 0)."""
    if field == "augment":
        from vitkit.data.pipeline import AUGMENT_DEFAULTS
        return AUGMENT_DEFAULTS[leaf]
    if field == "model_args":
        import dataclasses

        from vitkit.models.vit import ViTConfig
        defaults = {f.name: f.default for f in dataclasses.fields(ViTConfig)}
        if leaf in defaults:
            return defaults[leaf]
    raise ValueError(f"row drops {field}.{leaf}, which a --set flag cannot do: give it its value instead")


def jobs(work: Path, quick: bool = False) -> dict[str, dict]:
    """Job name -> TrainConfig dict: every row at seed 0, and the last row at the other seeds."""
    rows = row_configs()
    last = list(rows)[-1]
    out = {}
    for key, cfg in rows.items():
        out[key] = dict(cfg, out=str(work / key), num_threads=1, log_every=1_000_000)
    for key, cfg in detour_configs().items():
        out[f"detour/{key}"] = dict(cfg, out=str(work / "detour" / key), num_threads=1, log_every=1_000_000)
    for key in SEEDED:
        for seed, folder in seed_runs(work, key).items():
            if seed != SEEDS[0]:
                out[f"{key}/s{seed}"] = dict(rows[key], seed=seed, out=str(folder), num_threads=1, log_every=1_000_000)
    if quick:  # one epoch on 20 images per class, every row
        for name, c in out.items():
            c.update(epochs=1, warmup_epochs=0, labels_per_class=20, batch_size=min(c["batch_size"], 64))
    return out


def seed_runs(work: Path, key: str | None = None) -> dict[int, Path]:
    """Seed -> run folder of a row's seed runs (default the last row; benchmarks/deit_converged.py reuses
    row V2's as its ViT rows)."""
    key = key or STEPS[-1][0]
    return {seed: work / (key if seed == SEEDS[0] else f"{key}_s{seed}") for seed in SEEDS}


def v2_config() -> dict:
    """configs/demo_mnist_v2.yaml (the recipe before PatchDropout) as a TrainConfig dict."""
    from vitkit.train import TrainConfig
    return TrainConfig.from_file(V2_CONFIG).to_dict()


# ---------------------------------------------------------------------------- cost
def measure_cost(configs: dict[str, dict], rounds: int, threads: int, work: Path) -> dict:
    """Median epoch time (the trainer's epoch_time_s) of each config, one epoch of each in turn per round."""
    import torch

    from vitkit.train import TrainConfig, fit
    from vitkit.train.run import build_run
    torch.set_num_threads(threads)
    times: dict[str, list[float]] = {k: [] for k in configs}
    for r in range(rounds + 1):  # round 0 warms up and is not counted
        for name, d in configs.items():
            cfg = TrainConfig.from_dict(dict(d, epochs=1, warmup_epochs=0, num_threads=threads,
                                             out=str(work / "cost" / f"{name}_r{r}"), log_every=1_000_000))
            model, task, loaders, _, meta = build_run(cfg)
            rec = fit(model, task, {"train": loaders["train"]}, cfg, meta)
            if r:
                times[name].append(rec["epoch_time_s"])
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = {"epoch_s": ts, "median_epoch_s": med, "epochs": configs[name]["epochs"],
                     "train_s": med * configs[name]["epochs"]}
    return out


def run_seconds(run_dir: Path) -> float:
    return train_seconds(run_dir)


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default="runs/demo_recipe")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--cost", action="store_true", help="also measure the training cost of the first row, v2, the recipe and the PatchDropout detours")
    p.add_argument("--rounds", type=int, default=3, help="--cost: interleaved rounds (one epoch of each)")
    p.add_argument("--threads", type=int, default=1, help="--cost: torch threads")
    p.add_argument("--reference-s", type=float, default=REFERENCE_S, dest="reference_s",
                   help="the previous recipe's training seconds on the machine the estimate is for")
    p.add_argument("--time", metavar="RUN", help="print the training seconds of a finished run and exit")
    p.add_argument("--quick", action="store_true", help="tiny settings, for the test suite")
    args = p.parse_args(argv)
    if args.time:
        s = run_seconds(Path(args.time))
        print(f"{args.time}: {s:.1f} s of training (sum of epoch_time_s)")
        return {"train_s": s}
    if args.quick:
        args.jobs, args.rounds = 1, 1
    import torch
    torch.set_num_threads(1)
    work, out_dir = Path(args.work), Path(args.out)
    t0 = time.time()
    js = jobs(work, args.quick)
    res = run_all(list(js.items()), args.jobs)

    from vitkit import data as vdata
    bundle = vdata.build("mnist5k")
    final = final_config()
    rows = row_configs()
    last = list(rows)[-1]
    table = []
    for key, label, changes in STEPS:
        cfg = rows[key]
        table.append({"key": key, "label": label, "changes": changes, "flags": flags(cfg, final),
                      "model": cfg["model"], "params": param_count(cfg, bundle), "epochs": cfg["epochs"],
                      "test_acc": res[key]["test_acc"], "train_s": train_seconds(js[key]["out"])})
    detours = []
    for key, start, label, changes in DETOURS:
        cfg = detour_configs()[key]
        name = f"detour/{key}"
        detours.append({"key": key, "start": start, "label": label, "changes": changes, "flags": flags(cfg, final),
                        "epochs": cfg["epochs"], "test_acc": res[name]["test_acc"],
                        "start_acc": res[start]["test_acc"], "train_s": train_seconds(js[name]["out"])})
    def seeded(key):
        names = [key] + [f"{key}/s{s}" for s in SEEDS[1:]]
        accs = [res[n]["test_acc"] for n in names]
        m, s = mean_std(accs)
        return {"key": key, "config": rows[key], "seeds": list(SEEDS), "accs": accs, "mean": m, "std": s,
                "train_s": [train_seconds(js[n]["out"]) for n in names]}

    results = {"protocol": __doc__, "args": vars(args), "environment": environment(), "rows": table, "detours": detours,
               "final": seeded(last), "seeded": {key: seeded(key) for key in SEEDED}, "quick": args.quick}
    if args.cost:
        first = list(rows)[0]
        detours = detour_configs()
        cost = measure_cost({"previous": rows[first], "v2": rows[V2], "recipe": final,
                             **{k: detours[k] for k in COST_DETOURS}}, args.rounds, args.threads, work)
        ratio = cost["recipe"]["train_s"] / cost["previous"]["train_s"]
        results["cost"] = {"threads": args.threads, "rounds": args.rounds, "runs": cost, "ratio": ratio,
                           "vs_v2": {k: c["train_s"] / cost["v2"]["train_s"] for k, c in cost.items()},
                           "reference_s": args.reference_s, "estimate_s": ratio * args.reference_s}
    results["minutes"] = (time.time() - t0) / 60
    stem = "demo_recipe" + ("_quick" if args.quick else "")
    write_results(out_dir, stem, results, markdown(results))
    print(markdown(results))
    return results


def markdown(res: dict) -> str:
    f = res["final"]
    lines = ["# The demo's recipe, row by row", "",
             f"Written by `python benchmarks/demo_recipe.py{' --cost' if 'cost' in res else ''}"
             f"{' --quick' if res['quick'] else ''}` ({res['environment']['machine']}). mnist5k: 4,000 training "
             "digits, 1,000 held out. Every row is `vitkit train --config configs/demo_mnist.yaml --out runs/x` plus "
             "its flags, seed 0, one thread, scored once after its last epoch (EMA weights); each row changes one "
             "thing over the row above it. Train s: the run's training time (its epochs), measured with other jobs "
             "beside it: compare rows within this table only.", "",
             "| run | flags | epochs | held-out top-1 | train s |", "|---|---|---|---|---|"]
    for r in res["rows"]:
        flg = f"`{r['flags']}`" if r["flags"] else "(the recipe)"
        lines.append(f"| {r['label']} | {flg} | {r['epochs']} | {100 * r['test_acc']:.1f}% | {r['train_s']:.0f} |")
    if res.get("detours"):
        lines += ["", "Tried and not kept (seed 0, one thread; each starts from the row named and changes what it says):",
                  "", "| run | from row | flags | epochs | held-out top-1 | the row it starts from |",
                  "|---|---|---|---|---|---|"]
        for d in res["detours"]:
            lines.append(f"| {d['label']} | {d['start']} | `{d['flags']}` | {d['epochs']} | {100 * d['test_acc']:.1f}% "
                         f"| {100 * d['start_acc']:.1f}% |")
    names = {V2: "configs/demo_mnist_v2.yaml (before PatchDropout)", STEPS[-1][0]: "configs/demo_mnist.yaml (`make demo`)"}
    lines += ["", "Over seeds (one thread each; std over seeds):", "",
              "| config | " + " | ".join(f"seed {s}" for s in f["seeds"]) + " | mean +- std |",
              "|---|" + "---|" * (len(f["seeds"]) + 1)]
    for key, r in res["seeded"].items():
        lines.append(f"| {names.get(key, key)} | " + " | ".join(f"{100 * a:.2f}%" for a in r["accs"])
                     + f" | **{100 * r['mean']:.2f} +- {100 * r['std']:.2f}%** |")
    lines.append("")
    if "cost" in res:
        c = res["cost"]
        pr, rc = c["runs"]["previous"], c["runs"]["recipe"]
        lines += ["## Cost", "", "| config | s an epoch (median) | epochs | whole run, x v2's |", "|---|---|---|---|"]
        lines += [f"| {k} | {r['median_epoch_s']:.2f} | {r['epochs']} | {c['vs_v2'][k]:.2f}x |"
                  for k, r in c["runs"].items()] if "vs_v2" in c else []
        lines += ["",
                  f"Side by side in one process ({c['threads']} thread{'s' if c['threads'] > 1 else ''}), one epoch "
                  f"of each in turn, {c['rounds']} rounds: the previous recipe {pr['median_epoch_s']:.2f} s an epoch x "
                  f"{pr['epochs']} epochs, the recipe {rc['median_epoch_s']:.2f} s an epoch x {rc['epochs']} epochs: "
                  f"its training costs **{c['ratio']:.2f}x** the previous recipe's, i.e. about "
                  f"**{c['estimate_s']:.0f} s** where the previous one took {c['reference_s']:.0f} s (idle 2-core Zen 4, "
                  "`make demo`).", ""]
    return "\n".join(lines)


report = markdown  # tests/test_results.py: the committed report is this function of the committed json


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
