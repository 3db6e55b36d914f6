"""The ViT paper's ablations (Dosovitskiy et al. 2021, appendix D) as one sweep of a small ViT.

    vitkit ablate                       # mnist5k -> benchmarks/results/ablations.{md,json} + ablations.png
    vitkit ablate --data digits         # the 8x8 digits -> benchmarks/results/ablations_digits.*
    vitkit ablate --labels-per-class 20 # 20 images per class -> benchmarks/results/ablations_lpc20.*
    vitkit ablate --quick --out /tmp/a  # a tiny version (the test suite)

Each row changes ONE thing of the base ViT; the recipe, epochs and seeds are the same for every row:

    position embedding    none / learned 1D / learned 2D (x|y halves) / relative bias    (D.4, Table 8)
    where (learned 1D)    added at the input / before every block / before every block, one shared table
    pooling               class token vs global average pooling (no class token), at the same lr  (D.3)
    patch size            4 vs 7 on 28x28 (49 vs 16 tokens); 2 vs 4 on 8x8
    depth                 2 / 4 / 6 blocks

Base: ``vit_nano_patch4_28`` (mnist5k) or ``vit_nano_patch2_8`` (digits): D=64, 4 blocks, 4 heads,
class token, learned 1D position embedding added at the input. The base run appears in every group
and is trained once. Recipe (`RECIPE`): AdamW, batch 64, peak lr 1e-3 after one warmup epoch, cosine
to 1e-5, weight decay 0.05, label smoothing 0.1, grad clip 1, rotation +-10 deg and translation
+-10 %. Every run is scored once, after its last epoch, on the held-out split (mean and std over the
seeds): nothing is chosen on the test split. ``--labels-per-class N`` trains on a seeded draw of N
images per class with the epochs raised to keep the full-data run's optimizer steps.

The CLI reuses this module's parser: ``add_arguments(parser)`` then ``run(args)``; ``main(argv)``
does both. Runs go to ``--work`` (a finished run is reused, an interrupted one resumes) and run in
``--jobs`` single-thread processes (`vitkit.train.sweep`).
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..argtypes import positive_float, positive_int

BASE = {"mnist5k": "vit_nano_patch4_28", "digits": "vit_nano_patch2_8"}
PATCH_SIZES = {"mnist5k": (4, 7), "digits": (2, 4)}
DEPTHS = (2, 4, 6)
# Epochs of the default run: ~15 min for mnist5k (30 runs), ~3 for digits, on 2 single-thread processes
# (estimated from step times measured on a loaded 2-core machine: 10 distinct rows ~ 23 s an epoch per seed).
EPOCHS = {"mnist5k": 25, "digits": 40}
# amp=None: fp32, the precision every committed sweep was trained in (TrainConfig's default became "auto" with
# issue 19; a sweep keeps its runs reusable and its figures comparable by naming its precision)
RECIPE = dict(batch_size=64, lr=1e-3, min_lr=1e-5, warmup_epochs=1.0, weight_decay=0.05, label_smoothing=0.1,
              clip_grad=1.0, augment={"rotate": 10, "translate": 0.1}, amp=None)
POS = (("none", "none"), ("learn", "learned 1D"), ("learn2d", "learned 2D"), ("rel", "relative"))
WHERE = (("input", "at the input"), ("every", "every block"), ("every_shared", "every block, shared"))


@dataclass(frozen=True)
class Variant:
    """One row: ``model_args`` over the base model (only what differs from it) and the peak lr."""
    group: str
    label: str
    model_args: dict = field(default_factory=dict)
    lr: float = RECIPE["lr"]

    @property
    def key(self) -> str:
        """The run's name: equal for equal models and lr, so a run shared by two groups trains once."""
        parts = [f"{k}={v}" for k, v in sorted(self.model_args.items())]
        if self.lr != RECIPE["lr"]:
            parts.append(f"lr={self.lr:g}")
        return ",".join(parts) or "base"


# ---------------------------------------------------------------------------- the grid
def grid(data: str = "mnist5k", patch_sizes=None, depths=DEPTHS, pool_lrs=None) -> list[Variant]:
    """Every row of the ablation, in table order; each variant's model_args is minimal (see ``canonical``)."""
    base = BASE[data]
    patch_sizes = patch_sizes or PATCH_SIZES[data]
    pool_lrs = pool_lrs or [RECIPE["lr"]]
    rows = [(("position embedding", label), {"pos_embed": kind}, RECIPE["lr"]) for kind, label in POS]
    rows += [(("where (learned 1D)", label), {"pos_embed_where": where}, RECIPE["lr"]) for where, label in WHERE]
    for lr in pool_lrs:
        rows += [(("pooling", f"class token, lr {lr:g}"), {}, lr),
                 (("pooling", f"global average pool, lr {lr:g}"), {"class_token": False, "global_pool": "avg"}, lr)]
    rows += [(("patch size", f"P={p}"), {"patch_size": p}, RECIPE["lr"]) for p in patch_sizes]
    rows += [(("depth", f"{d} blocks"), {"depth": d}, RECIPE["lr"]) for d in depths]
    return [Variant(g, label, canonical(base, args), lr) for (g, label), args, lr in rows]


def canonical(base: str, model_args: dict) -> dict:
    """``model_args`` without the entries the base model already has (so equal models get equal runs)."""
    from ..models import create_model
    cfg = create_model(base, device="meta").cfg
    same = {k for k, v in model_args.items() if getattr(cfg, k) == v}
    if model_args.get("pos_embed_where") == cfg.where:  # None means "input" (learned) / "every" (rel)
        same.add("pos_embed_where")
    return {k: v for k, v in model_args.items() if k not in same}


def matched_schedule(epochs: int, batch: int, n_full: int, labels_per_class: int | None,
                     num_classes: int = 10) -> tuple[int, int]:
    """(epochs, batch) for N labels per class: a batch giving at least two steps an epoch, and as many
    epochs as keep the full-data run's optimizer steps. Without labels_per_class: unchanged."""
    if not labels_per_class:
        return epochs, batch
    n = labels_per_class * num_classes
    b = max(1, min(batch, n // 2))
    return max(epochs, math.ceil(epochs * (n_full // batch) / (n // b))), b


def configs(args, variants: list[Variant], n_full: int) -> dict[str, dict]:
    """Job name ("<variant key>/s<seed>") -> TrainConfig dict, one per distinct variant and seed."""
    epochs, batch = matched_schedule(args.epochs, RECIPE["batch_size"], n_full, args.labels_per_class)
    epochs = args.epochs if args.quick else epochs
    work = work_dir(args)
    jobs = {}
    for v in {v.key: v for v in variants}.values():
        for seed in args.seeds:
            jobs[f"{v.key}/s{seed}"] = dict(
                RECIPE, model=BASE[args.data], model_args=dict(v.model_args), data=args.data, seed=seed,
                epochs=epochs, batch_size=batch, lr=v.lr, eval_every=epochs, labels_per_class=args.labels_per_class,
                num_threads=1, log_every=1_000_000, out=str(work / v.key / f"s{seed}"))
    return jobs


def work_dir(args) -> Path:
    """Where the sweep's run folders go (finished ones are reused)."""
    return Path(args.work) / args.data


# ---------------------------------------------------------------------------- verdicts
def spread(a: dict, b: dict) -> float:
    """The seed spread of a difference of two means: sqrt(std_a^2 + std_b^2)."""
    return math.hypot(a["std"], b["std"])


def summarize(groups: dict[str, list[dict]]) -> dict[str, dict]:
    """Per group: the best row, and whether best and worst are further apart than their seed spread.

    For position embeddings also: is "none" clearly worse, i.e. below EVERY other variant by more
    than the two rows' seed spread (the paper: any position embedding beats none, the kinds tie)?
    """
    out = {}
    for g, rows in groups.items():
        best, worst = max(rows, key=lambda r: r["mean"]), min(rows, key=lambda r: r["mean"])
        out[g] = {"best": best["label"], "range": best["mean"] - worst["mean"],
                  "separated": best["mean"] - worst["mean"] > spread(best, worst)}
    pos = groups.get("position embedding")
    if pos:
        none = next((r for r in pos if r["label"] == "none"), None)
        others = [r for r in pos if r is not none]
        if none is not None and others:
            out["position embedding"]["none_clearly_worse"] = all(
                o["mean"] - none["mean"] > spread(o, none) for o in others)
            out["position embedding"]["none_deficit"] = max(o["mean"] for o in others) - none["mean"]
            out["position embedding"]["best"] = max(others, key=lambda r: r["mean"])["label"]
            kinds = max(others, key=lambda r: r["mean"]), min(others, key=lambda r: r["mean"])
            out["position embedding"]["kinds_tie"] = kinds[0]["mean"] - kinds[1]["mean"] <= spread(*kinds)
    return out


# ---------------------------------------------------------------------------- command
def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--data", default="mnist5k", choices=sorted(BASE), help="mnist5k (28x28) or digits (8x8)")
    p.add_argument("--epochs", type=positive_int, default=None, help=f"epochs of every run (default: {EPOCHS})")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=positive_int, default=2, help="single-thread training processes side by side")
    p.add_argument("--labels-per-class", type=positive_int, default=None, dest="labels_per_class",
                   help="train on N labelled images per class (epochs raised to keep the optimizer steps)")
    p.add_argument("--patch-sizes", type=positive_int, nargs="+", default=None, dest="patch_sizes",
                   help=f"patch sizes to compare (default: {PATCH_SIZES})")
    p.add_argument("--depths", type=positive_int, nargs="+", default=list(DEPTHS))
    p.add_argument("--pool-lrs", type=positive_float, nargs="+", default=None, dest="pool_lrs",
                   help=f"peak lrs of the class token vs GAP rows, both at each (default: {RECIPE['lr']:g})")
    p.add_argument("--work", default="runs/ablations", help="run folders (reused when finished)")
    p.add_argument("--out", default="benchmarks/results", help="where ablations.{md,json,png} go")
    p.add_argument("--quick", action="store_true", help="1 epoch, 1 seed, 10 images per class (the test suite)")
    return p


def run(args: argparse.Namespace) -> dict:
    """Train every row (reusing finished runs), write the md / json / png and return the results."""
    import torch

    from .. import data as vdata
    from ..train.sweep import mean_std, param_count, run_all, train_seconds
    from .measure import write_results
    torch.set_num_threads(1)
    if args.quick:
        args.epochs, args.seeds, args.jobs = args.epochs or 1, args.seeds[:1], 1
        args.labels_per_class = args.labels_per_class or 10
    args.epochs = args.epochs or EPOCHS[args.data]
    t_start = time.time()
    bundle = vdata.build(args.data)
    variants = grid(args.data, args.patch_sizes, args.depths, args.pool_lrs)
    jobs = configs(args, variants, len(bundle.train))
    res = run_all(list(jobs.items()), args.jobs)

    groups: dict[str, list[dict]] = {}
    for v in variants:
        names = [f"{v.key}/s{s}" for s in args.seeds]
        accs = [res[n]["test_acc"] for n in names]
        m, s = mean_std(accs)
        groups.setdefault(v.group, []).append({
            "label": v.label, "key": v.key, "model_args": v.model_args, "lr": v.lr, "accs": accs, "mean": m,
            "std": s, "params": param_count(jobs[names[0]], bundle),
            "train_seconds": mean_std([train_seconds(jobs[n]["out"]) for n in names])[0]})
    first = jobs[f"{variants[0].key}/s{args.seeds[0]}"]
    results = {"protocol": __doc__, "args": vars(args), "base": BASE[args.data], "recipe": RECIPE,
               "epochs": first["epochs"], "batch_size": first["batch_size"], "groups": groups,
               "summary": summarize(groups), "runs": len(jobs), "minutes": (time.time() - t_start) / 60}
    out = Path(args.out)
    stem = "ablations" + ("" if args.data == "mnist5k" else f"_{args.data}") + (
        f"_lpc{args.labels_per_class}" if args.labels_per_class and not args.quick else "") + (
        "_quick" if args.quick else "")
    write_results(out, stem, results, markdown(results, stem))
    plot(groups, out / f"{stem}.png", f"{BASE[args.data]} on {args.data}")
    print(f"vitkit: {len(jobs)} runs in {work_dir(args)}; results -> {out / stem}.md, {stem}.json, {stem}.png")
    return results


def main(argv: list[str] | None = None) -> dict:
    return run(add_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0])).parse_args(argv))


# ---------------------------------------------------------------------------- report
FINDINGS = {  # what the paper reports (appendix D), to read the measured rows against
    "position embedding": "any position embedding beats none clearly; 1D, 2D and relative are about equal",
    "where (learned 1D)": "small differences between input-only and every block",
    "pooling": "equal when each gets its own lr; GAP worse at the class token's lr",
    "patch size": "smaller patches (more tokens) are better, at a higher cost",
    "depth": "deeper is better, with diminishing returns",
}


def markdown(res: dict, stem: str) -> str:
    a = res["args"]
    flags = ["--quick"] if a["quick"] else [f"--{k.replace('_', '-')} {v}" for k, v in (
        ("data", a["data"] if a["data"] != "mnist5k" else None), ("epochs", a["epochs"]),
        ("seeds", " ".join(map(str, a["seeds"])) if a["seeds"] != [0, 1, 2] else None),
        ("labels_per_class", a["labels_per_class"])) if v]
    cmd = " ".join(["vitkit ablate", *([f"--data {a['data']}"] if a["quick"] and a["data"] != "mnist5k" else []),
                    *flags])
    lines = [f"# ViT ablations on {a['data']} (ViT paper, appendix D)", "",
             f"Written by `{cmd}` in {res['minutes']:.0f} min ({res['runs']} runs, {a['jobs']} single-thread "
             f"process{'es' if a['jobs'] > 1 else ''}). Base `{res['base']}`: class token, learned 1D position "
             f"embedding at the input; each row changes one thing. {res['epochs']} "
             f"epoch{'s' if res['epochs'] > 1 else ''} of batch {res['batch_size']}"
             + (f" on {a['labels_per_class']} images per class" if a["labels_per_class"] else " on all training images")
             + f", seeds {a['seeds']}; held-out top-1 (%) mean +- std, scored after the last epoch"
             + (" (one seed: no spread measured, every verdict below is on means alone)." if len(a["seeds"]) == 1
                else "."), "",
             "Recipe, the same for every row: AdamW, peak lr {lr:g} (unless the row says), {warmup_epochs:g} warmup "
             "epoch(s), cosine to {min_lr:g}, weight decay {weight_decay:g}, label smoothing {label_smoothing:g}, "
             "grad clip {clip_grad:g}, augment {augment}.".format(**res["recipe"]), ""]
    s = res["summary"]
    pos = s.get("position embedding")
    if pos and "none_clearly_worse" in pos:
        lines += [f"**Position embedding: best is {pos['best']}; \"none\" is "
                  + ("clearly worse" if pos["none_clearly_worse"] else "not clearly worse")
                  + f" ({100 * pos['none_deficit']:.1f} pts below the best; clearly = below every kind by more than "
                  "the seed spread sqrt(std_a^2 + std_b^2)); the kinds "
                  + ("tie within the seed spread" if pos["kinds_tie"] else "differ by more than the seed spread")
                  + ".**", ""]
    for g, rows in res["groups"].items():
        lines += [f"## {g}", "", f"Paper: {FINDINGS.get(g, '-')}. Measured: best {s[g]['best']}; best - worst = "
                  f"{100 * s[g]['range']:.1f} pts, " + ("more" if s[g]["separated"] else "no more")
                  + " than the seed spread.", "",
                  "| variant | model_args | params | top-1 (%) | train s |", "|---|---|---|---|---|"]
        for r in rows:
            margs = ", ".join(f"{k}={v}" for k, v in r["model_args"].items()) or "(base)"
            lines.append(f"| {r['label']} | {margs} | {r['params'] / 1e6:.3f}M | {100 * r['mean']:.1f} +- "
                         f"{100 * r['std']:.1f} | {r['train_seconds']:.1f} |")
        lines.append("")
    lines += ["Train s: mean training time of a run (its epochs), measured with the other job beside it.", "",
              f"![ablations]({stem}.png)", ""]
    return "\n".join(lines)


def plot(groups: dict[str, list[dict]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.6), squeeze=False)
    low = min(100 * (r["mean"] - r["std"]) for rows in groups.values() for r in rows)
    for ax, (g, rows) in zip(axes[0], groups.items()):
        ax.bar(range(len(rows)), [100 * r["mean"] for r in rows], yerr=[100 * r["std"] for r in rows], capsize=3)
        ax.set_xticks(range(len(rows)), [r["label"].replace(", lr", "\nlr") for r in rows], rotation=40, ha="right",
                      fontsize=8)
        ax.set_ylim(max(0.0, low - 5), 100)
        ax.set_title(g, fontsize=9)
    axes[0][0].set_ylabel("held-out top-1 (%)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
