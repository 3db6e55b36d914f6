"""Does self-supervised pretraining help when labels are few? MAE and contrastive vs scratch, on mnist5k.

    python -P benchmarks/self_supervised.py               # writes benchmarks/results/ssl.{md,json} and ssl_*.png
    python -P benchmarks/self_supervised.py --quick       # a tiny version (the test suite)

(-P: benchmarks/ stays off sys.path, where benchmarks/kernels.py would shadow the `kernels` package that
transformers imports for the LiT text tower.)

Protocol (everything on mnist5k's fixed 4,000 / 1,000 split, the same ViT: vit_mnist_patch7_28 with
the fixed 2D sin-cos position table, as MAE and MoCo v3 build their ViTs):
1. Pretrain without labels on all 4,000 training images: MAE (mask ratio 0.75, and 0.25 / 0.5 / 0.9
   for the sweep; AdamW betas (0.9, 0.95) as MAE's main_pretrain.py) and the contrastive methods
   (``--contrastive``: MoCo v3, with its BN predictor and its frozen random patch projection
   (``stop_grad_conv1``), and SimCLR). One pretraining run each (seed 0): pretraining is the
   expensive part on a CPU.
2. For 10 and 100 labels per class (a seeded draw, the seed also drives the head and the order),
   seeds 0, 1, 2: fine-tune every pretrained backbone, with MAE's layer-wise lr decay 0.75
   (main_finetune.py), and the same ViT from scratch (no layer decay: nothing pretrained to keep),
   otherwise with one recipe; and linear-probe (frozen backbone, BatchNorm without affine + linear
   head) the pretrained backbones and a random-init one with MAE's probe recipe (main_linprobe.py:
   LARS, lr 0.1 x batch / 256, no weight decay, no clipping). Held-out top-1 on all 1,000 test
   images, mean +- std over the seeds.
3. CLIP: zero-shot top-1 on the held-out digits with templates not used in training, with and
   without prompt ensembling, for a text tower trained from scratch and for the locked pretrained
   MiniLM tower (LiT).

The report keeps the numbers of the previous recipe (learned position table, MAE betas (0.9, 0.999),
MoCo v3 training its patch projection, one flat fine-tuning lr, an AdamW probe at lr 0.05) beside the
new ones: ``--previous`` (default: the ssl.json in ``--out``, read before it is overwritten) when it
was written by that recipe; a report of this recipe passes its own "previous" on.

Runs go to ``--work`` (default runs/ssl_bench); a finished run is reused, so an interrupted
benchmark continues where it stopped. Jobs run in ``--jobs`` processes of one thread each (on this
2-core machine two single-thread jobs beat one two-thread job for these small models).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from vitkit.bench.measure import command, write_results
from vitkit.train.sweep import mean_std, run_all

RESULTS = Path(__file__).parent / "results"
BACKBONE = "vit_mnist_patch7_28"
BACKBONE_ARGS = {"pos_embed": "sincos"}  # MAE's and MoCo v3's fixed 2D sin-cos table, every run but CLIP's
AUGMENT = {"rotate": 10, "translate": 0.1, "scale": [0.9, 1.1]}
RECIPE = "reference"  # results["recipe"]: written by this recipe (the reports before it have no "recipe")
LAYER_DECAY = 0.75    # MAE's main_finetune.py default (the paper's Table 9)
PROBE_BLR = 0.1       # MAE's main_linprobe.py: lr = blr x batch / 256 (--probe-blr)
MAE_HEAD = {"fc_norm": True, "pos_embed": "sincos_learn"}  # main_finetune.py: fc_norm(mean(x)), sin-cos table learned


# ---------------------------------------------------------------------------- run configs
def pretrain_configs(args) -> dict[str, dict]:
    """name -> TrainConfig dict of every pretraining run."""
    common = dict(model=BACKBONE, model_args=BACKBONE_ARGS, data="mnist5k", epochs=args.pretrain_epochs, seed=0,
                  amp=None,  # fp32, the precision of the committed results (TrainConfig's default is "auto")
                  num_threads=1, log_every=10_000, eval_every=args.pretrain_epochs, label_smoothing=0.0, clip_grad=1.0)
    out = {}
    for r in args.mask_ratios:
        out[f"mae_{r}"] = dict(common, task="mae", batch_size=128, lr=1.5e-3, warmup_epochs=5, weight_decay=0.05,
                               betas=[0.9, 0.95],
                               task_args={"mask_ratio": r, "decoder_dim": 64, "decoder_depth": 2,
                                          "decoder_heads": 4, "norm_pix_loss": True},
                               augment={"translate": 0.05})
    own = {"mocov3": {"tau": 0.2, "stop_grad_conv1": True}, "simclr": {"tau": 0.2}}
    for method in args.contrastive:
        out[method] = dict(common, task=method, batch_size=256, lr=1.5e-3, warmup_epochs=5, weight_decay=0.1,
                           epochs=args.contrastive_epochs, eval_every=args.contrastive_epochs,
                           task_args=own[method])
    return out


def finetune_config(args, name: str, labels: int, seed: int, init: str | None, probe: bool,
                    pretrained: bool = True, mae_head: bool = False) -> dict:
    """Fine-tuning / probing recipe: a fixed number of optimizer steps whatever the label count.

    Fine-tuning a pretrained backbone (``pretrained``) decays the lr layer-wise (MAE); the probe is MAE's
    (LARS at ``args.probe_blr`` x batch / 256, no weight decay, no clipping, cosine to 0). ``init`` is the
    pretraining run, or for the scratch rows a random-init weights file (probe) / None (fine-tuning from scratch).

    LARS moves a weight matrix by at most lr x 0.001 x ||W|| a step (x 10 with momentum 0.9): MAE's probe sees
    ~115M images (90 ImageNet epochs at lr 6.4), ours 600 steps at lr 0.0125 (batch 32), so its head can move
    only ~7% of its norm. Measured on a 1-epoch MAE backbone (10 labels/class, seed 0, 600 steps): LARS at
    blr 0.1 13.3%, at blr 1.0 28.3%, the previous AdamW probe (lr 0.05) 33.8%. On the real backbones (3 seeds,
    results/ssl.md at blr 0.1 vs results/ssl_probe_blr10/ssl.md at --probe-blr 10; only the probe runs retrain):
    MAE 16.3 / 23.7% -> 74.2 / 84.6%, scratch 8.9 / 12.9% -> 41.4 / 52.7% at 10 / 100 labels per class.

    Pooling: every method's fine-tuning row shares one head, vitkit's GAP (global_pool="avg" averages the
    final-normed patch tokens, mean(norm(x))) with the sin-cos table kept fixed, so that the methods are
    compared on the same classifier. MAE's own fine-tuning (main_finetune.py, models_vit.py with
    global_pool=True) drops the pretrained final norm, pools as fc_norm(mean(x)) with a new LayerNorm, and
    trains its sin-cos table as a learned one: ``mae_head`` (ViTConfig ``fc_norm=True``,
    ``pos_embed="sincos_learn"``), the row "mae_fcnorm" beside "mae" in the report, same seeds and steps.
    Measured (results/ssl_probe_blr10/ssl.md, 3 seeds): MAE's head 89.5 / 95.3% against the shared head's
    88.7 / 94.9% at 10 / 100 labels per class, within a seed's spread (std 1.4 / 0.8); the shared head
    stays the table's, MAE's is reported beside it.
    """
    batch = 32 if labels <= 10 else 64
    steps_per_epoch = max(labels * 10 // batch, 1)
    epochs = max(args.finetune_steps // steps_per_epoch, 1)
    cfg = dict(model=BACKBONE, data="mnist5k", labels_per_class=labels, seed=seed, epochs=epochs, amp=None,
               batch_size=batch, lr=1e-3, warmup_epochs=max(epochs // 10, 1), weight_decay=0.05,
               label_smoothing=0.1, augment=AUGMENT, num_threads=1, log_every=10_000, eval_every=epochs,
               model_args={**BACKBONE_ARGS, "drop_path_rate": 0.1, "global_pool": "avg"})
    if probe:
        cfg.update(probe=True, optimizer="lars", lr=args.probe_blr * batch / 256, min_lr=0.0, weight_decay=0.0,
                   clip_grad=None, label_smoothing=0.0, augment={}, model_args={**BACKBONE_ARGS, "global_pool": "avg"})
    elif pretrained:
        cfg["layer_decay"] = LAYER_DECAY
        if mae_head:
            cfg["model_args"] = {**cfg["model_args"], **MAE_HEAD}
    if init:
        cfg["init"] = init
    return cfg


def random_init(work: Path, seed: int) -> str:
    """The random-init backbone the scratch probe reads (a weights file: a probe needs --init), seeded."""
    import torch

    from vitkit import create_model
    from vitkit.weights.io import save_weights
    path = work / "random_init" / f"s{seed}.safetensors"
    if not path.is_file():
        torch.manual_seed(seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_weights(path, create_model(BACKBONE, **BACKBONE_ARGS).state_dict())
    return str(path)


def previous_results(path: Path | None) -> dict | None:
    """The previous recipe's numbers: ``path``'s own when it predates this recipe, its "previous" otherwise."""
    if path is None or not path.is_file():
        return None
    import json
    old = json.loads(path.read_text())
    if old.get("quick"):
        return None
    if old.get("recipe") == RECIPE:
        return old.get("previous")
    return {"source": str(path), "finetune": old["finetune"], "seeds": old.get("seeds"),
            "pretrain": old.get("pretrain")}


# ---------------------------------------------------------------------------- report
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default="runs/ssl_bench")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--labels", type=int, nargs="+", default=[10, 100])
    p.add_argument("--mask-ratios", type=float, nargs="+", default=[0.75, 0.25, 0.5, 0.9], dest="mask_ratios")
    p.add_argument("--contrastive", nargs="+", default=["mocov3", "simclr"], choices=["mocov3", "simclr"])
    p.add_argument("--pretrain-epochs", type=int, default=60, dest="pretrain_epochs")
    p.add_argument("--contrastive-epochs", type=int, default=30, dest="contrastive_epochs",
                   help="a contrastive epoch costs ~4x an MAE one (two full views, plus MoCo's momentum encoder)")
    p.add_argument("--finetune-steps", type=int, default=600, dest="finetune_steps")
    p.add_argument("--clip-epochs", type=int, default=15, dest="clip_epochs")
    p.add_argument("--probe-blr", type=float, default=PROBE_BLR, dest="probe_blr",
                   help="the probe's LARS base lr: lr = blr x batch / 256 (MAE: 0.1)")
    p.add_argument("--previous", default=None,
                   help="results .json of the previous recipe to report beside (default: --out's ssl.json)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny settings, for the test suite")
    args = p.parse_args(argv)
    args.command = command("python benchmarks/self_supervised.py", args, p, skip=("work",))  # before --quick's changes
    if args.quick:  # one contrastive method, the first given
        args.seeds, args.labels, args.mask_ratios = [0], [10], [0.75]
        args.pretrain_epochs, args.finetune_steps, args.clip_epochs, args.jobs = 1, 6, 1, 1
        args.contrastive_epochs, args.contrastive = 1, args.contrastive[:1]
    work, out_dir = Path(args.work), Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = previous_results(Path(args.previous) if args.previous else
                                None if args.quick else out_dir / "ssl.json")
    t_start = time.time()

    # 1. pretraining
    pre = pretrain_configs(args)
    pre_jobs = [(n, {**c, "out": str(work / "pretrain" / n)}) for n, c in pre.items()]
    pre_res = run_all(pre_jobs, args.jobs)

    # 2. fine-tuning and probes
    main_mae = "mae_0.75" if 0.75 in args.mask_ratios else f"mae_{args.mask_ratios[0]}"
    methods = {"scratch": None, "mae": main_mae, **{m: m for m in args.contrastive}}
    sweep = [f"mae_{r}" for r in args.mask_ratios if f"mae_{r}" != main_mae]
    jobs = []
    for labels in args.labels:
        for seed in args.seeds:
            for method, src in list(methods.items()) + [(s, s) for s in sweep]:
                for probe in (False, True):
                    init = str(work / "pretrain" / src) if src else random_init(work, seed) if probe else None
                    name = f"{method}_{'probe' if probe else 'ft'}_{labels}_s{seed}"
                    cfg = finetune_config(args, method, labels, seed, init, probe, pretrained=src is not None)
                    jobs.append((name, {**cfg, "out": str(work / "finetune" / name)}))
            name = f"mae_fcnorm_ft_{labels}_s{seed}"  # the main MAE backbone with MAE's own fine-tuning head
            cfg = finetune_config(args, "mae_fcnorm", labels, seed, str(work / "pretrain" / main_mae), False,
                                  mae_head=True)
            jobs.append((name, {**cfg, "out": str(work / "finetune" / name)}))
    ft_res = run_all(jobs, args.jobs)

    # 3. CLIP
    clip_res = clip_zero_shot(args, work)

    table = {}
    for name, r in ft_res.items():
        method, kind, labels, seed = name.rsplit("_", 3)
        table.setdefault((method, kind, int(labels)), []).append(r["test_acc"])
    results = {"protocol": __doc__, "recipe": RECIPE, "previous": previous, "backbone": BACKBONE,
               "backbone_args": BACKBONE_ARGS, "contrastive": args.contrastive, "seeds": args.seeds,
               "labels_per_class": args.labels,
               "pretrain": {n: {"test_loss": r.get("test_loss"), "seconds": r.get("seconds")} for n, r in pre_res.items()},
               "finetune": {f"{m}|{k}|{l}": {"accs": v, "mean": mean_std(v)[0], "std": mean_std(v)[1]}
                            for (m, k, l), v in sorted(table.items())},
               "clip": clip_res, "minutes": (time.time() - t_start) / 60, "quick": args.quick,
               "train_minutes": sum(r.get("seconds") or 0 for r in [*pre_res.values(), *ft_res.values()]) / 60}
    stem = "ssl_quick" if args.quick else "ssl"
    write_results(out_dir, stem, results, markdown(results, args, main_mae, sweep, table))
    plots(out_dir, stem, args, table, main_mae, sweep)
    return results


def clip_zero_shot(args, work: Path) -> dict:
    """Train CLIP with a scratch and a locked text tower; zero-shot with unseen templates, +- ensembling."""
    common = dict(model=BACKBONE, data="mnist5k", task="clip", epochs=args.clip_epochs, batch_size=128, lr=1e-3,
                  amp=None,
                  warmup_epochs=1, weight_decay=0.05, num_threads=1, log_every=10_000, eval_every=args.clip_epochs,
                  label_smoothing=0.0, augment={"translate": 0.05}, seed=0)
    towers = {"scratch": {"text": "scratch", "embed_dim": 64}, "locked": {"text": "locked", "embed_dim": 64}}
    jobs = [(f"clip_{t}", {**common, "task_args": a, "out": str(work / "clip" / t)}) for t, a in towers.items()]
    res = run_all(jobs, args.jobs)
    return {t: {**zero_shot_accuracy(work / "clip" / t), "seconds": res[f"clip_{t}"].get("seconds")} for t in towers}


def zero_shot_accuracy(run_dir: Path) -> dict:
    """Top-1 on the held-out digits: each held-out template alone (one class name), and all of them
    prompt-ensembled (every held-out template x every name of the class, CLIP's notebook)."""
    import torch

    from vitkit.tasks.clip import CLIPTask, zero_shot_classify, zero_shot_weights
    from vitkit.train.run import load_run
    run = load_run(run_dir)
    task = CLIPTask.for_classes(run.classes)
    images, labels = [], []
    for x, y in run.test_loader():
        images.append(x)
        labels.append(y)
    images, labels = torch.cat(images), torch.cat(labels)

    def acc(names, templates) -> float:
        w = zero_shot_weights(run.model, names, templates)
        with torch.no_grad():
            logits = torch.cat([zero_shot_classify(run.model, x, w) for x in images.split(500)])
        return float((logits.argmax(1) == labels).float().mean())

    first_names = [n[0] for n in task.classnames]
    single = [acc(first_names, [t]) for t in task.eval_templates]
    return {"single": statistics.mean(single), "single_each": dict(zip(task.eval_templates, single)),
            "ensemble": acc(task.classnames, task.eval_templates), "eval_templates": list(task.eval_templates),
            "train_templates": list(task.templates)}


def mae_head_section(table: dict, labels: list[int]) -> list[str]:
    """MAE fine-tuned with the shared GAP head ("mae") and with MAE's own (fc_norm, learned sin-cos table:
    "mae_fcnorm"), and the computed verdict: a difference within the larger std counts as none."""
    lines = ["", "## MAE's own fine-tuning head", "",
             "The MAE backbone fine-tuned with the head every row shares (GAP of the normed tokens, sin-cos table "
             "fixed) and with MAE's (main_finetune.py: the final norm dropped, fc_norm(mean(x)), the sin-cos "
             "table trained), same seeds, steps and layer decay.", "",
             "| labels / class | mae (shared GAP head) | mae, MAE's head | difference (points) |", "|---|---|---|---|"]
    verdicts = []
    for lab in labels:
        a, b = table.get(("mae", "ft", lab)), table.get(("mae_fcnorm", "ft", lab))
        if not (a and b):
            continue
        (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
        d = 100 * (mb - ma)
        lines.append(f"| {lab} | {100 * ma:.1f} +- {100 * sa:.1f} | {100 * mb:.1f} +- {100 * sb:.1f} | {d:+.1f} |")
        noise = 100 * max(sa, sb)
        verdicts.append(f"{lab} labels/class: MAE's head is "
                        + ("within noise of" if abs(d) <= noise else "better than" if d > 0 else "worse than")
                        + f" the shared one ({d:+.1f} points, larger std {noise:.1f})")
    return lines + [""] + [f"- {v}" for v in verdicts]


def markdown(results: dict, args, main_mae: str, sweep: list[str], table: dict) -> str:
    old = (results.get("previous") or {}).get("finetune", {})

    def fmt(m: float, s: float) -> str:
        return f"{100 * m:.1f} +- {100 * s:.1f}"

    def cell(method, kind, labels):
        v = table.get((method, kind, labels))
        return fmt(*mean_std(v)) if v else "-"

    def old_cell(method, kind, labels):
        v = old.get(f"{method}|{kind}|{labels}")
        return fmt(v["mean"], v["std"]) if v else "-"

    methods = ["scratch", "mae", *args.contrastive]
    with_old = [m for m in methods if any(f"{m}|{k}|{lab}" in old for k in ("ft", "probe") for lab in args.labels)]
    lines = ["# Self-supervised pretraining with few labels (mnist5k)", "",
             f"Written by `{getattr(args, 'command', 'python benchmarks/self_supervised.py')}` in "
             f"{results['minutes']:.0f} min ({results['train_minutes']:.0f} min of training summed over the runs, one "
             f"thread each, 2 at a time; finished runs are reused). Backbone `{BACKBONE}` (0.8M params) with the fixed "
             f"2D sin-cos position table; held-out top-1 (%) on the 1,000 test digits, mean +- std over seeds "
             f"{args.seeds}.", "",
             f"Pretraining: {args.pretrain_epochs} epochs ({args.contrastive_epochs} for the contrastive methods) on "
             f"the 4,000 training images without labels (seed 0); MAE with AdamW betas (0.9, 0.95), MoCo v3 with "
             f"its BN predictor and a frozen random patch projection. Fine-tuning / probing: {args.finetune_steps} "
             f"optimizer steps on N labelled images per class; a pretrained backbone is fine-tuned with layer-wise lr "
             f"decay {LAYER_DECAY} (MAE), the probe is MAE's (LARS, lr {args.probe_blr:g} x batch / 256, no weight "
             "decay).", ""]
    if old:
        lines += [f"*(old)*: the previous recipe's numbers ({results['previous'].get('source', '-')}: learned position "
                  "table, MAE betas (0.9, 0.999), MoCo v3 training its patch projection, one flat fine-tuning lr, an "
                  "AdamW probe at lr 0.05), same data, seeds and step counts.", ""]
    for kind, title in (("ft", "Fine-tuning"), ("probe", "Linear probe (frozen backbone, BN + linear head)")):
        heads = [h for m in methods for h in ([m, f"{m} *(old)*"] if m in with_old else [m])]
        lines += [f"## {title}", "", "| labels / class | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
        for labels in args.labels:
            cells = [c for m in methods for c in ([cell(m, kind, labels), old_cell(m, kind, labels)]
                                                   if m in with_old else [cell(m, kind, labels)])]
            lines.append(f"| {labels} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Gain over scratch (points)", ""]
    for kind in ("ft", "probe"):
        for labels in args.labels:
            base = table.get(("scratch", kind, labels))
            for m in methods[1:]:
                v = table.get((m, kind, labels))
                if base and v:
                    lines.append(f"- {kind}, {labels} labels/class, {m}: "
                                 f"{100 * (mean_std(v)[0] - mean_std(base)[0]):+.1f}")
    lines += ["", "## MAE mask ratio", "", "| mask ratio | " + " | ".join(
        f"{k} {lab}" for k in ("ft", "probe") for lab in args.labels) + " |",
              "|---|" + "---|" * (2 * len(args.labels))]
    for name in sorted([main_mae] + sweep, key=lambda s: float(s.split("_")[1])):
        method = "mae" if name == main_mae else name
        cells = []
        for k in ("ft", "probe"):
            for lab in args.labels:
                was = old.get(f"{method}|{k}|{lab}")
                cells.append(cell(method, k, lab) + (f" *(old {100 * was['mean']:.1f})*" if was else ""))
        lines.append(f"| {name.split('_')[1]} | " + " | ".join(cells) + " |")
    lines.append("")
    for kind in ("ft", "probe"):
        for lab in args.labels:
            scores = {name: table.get(("mae" if name == main_mae else name, kind, lab)) for name in [main_mae] + sweep}
            scores = {float(n.split("_")[1]): mean_std(v)[0] for n, v in scores.items() if v}
            if len(scores) > 1:
                best = max(scores, key=scores.get)
                lines.append(f"- {'fine-tuning' if kind == 'ft' else 'linear probe'}, {lab} labels/class: best mask "
                             f"ratio {best} ({100 * scores[best]:.1f}%); the paper's 0.75 gives {100 * scores.get(0.75, float('nan')):.1f}%")
    lines += mae_head_section(table, args.labels)
    if results["clip"]:
        lines += ["", "## CLIP zero-shot (held-out digits, templates unseen in training)", "",
                  "| text tower | one template (mean over templates) | prompt ensemble |", "|---|---|---|"]
        for t, r in results["clip"].items():
            lines.append(f"| {t} | {100 * r['single']:.1f} | {100 * r['ensemble']:.1f} |")
    stem = "ssl_quick" if args.quick else "ssl"
    lines += ["", f"![fine-tuning]({stem}_finetune.png)", "", f"![mask ratio]({stem}_mask_ratio.png)", ""]
    return "\n".join(lines)


def plots(out_dir: Path, stem: str, args, table: dict, main_mae: str, sweep: list[str]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    methods = ["scratch", "mae", *args.contrastive]
    width = 0.8 / len(methods)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, kind in zip(axes, ("ft", "probe")):
        for i, m in enumerate(methods):
            xs, ms, ss = [], [], []
            for j, labels in enumerate(args.labels):
                v = table.get((m, kind, labels))
                if v:
                    xs.append(j + width * (i - (len(methods) - 1) / 2))
                    ms.append(100 * mean_std(v)[0])
                    ss.append(100 * mean_std(v)[1])
            ax.bar(xs, ms, width, yerr=ss, label=m)
        ax.set_xticks(range(len(args.labels)), [f"{n} labels/class" for n in args.labels])
        ax.set_title("fine-tuning" if kind == "ft" else "linear probe")
        ax.set_ylabel("held-out top-1 (%)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}_finetune.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ratios = sorted([main_mae] + sweep, key=lambda s: float(s.split("_")[1]))
    for kind in ("ft", "probe"):
        for labels in args.labels:
            ys = [table.get(("mae" if n == main_mae else n, kind, labels)) for n in ratios]
            if all(ys):
                ax.plot([float(n.split("_")[1]) for n in ratios], [100 * mean_std(y)[0] for y in ys], "o-",
                        label=f"{kind}, {labels}/class")
    ax.set_xlabel("MAE mask ratio")
    ax.set_ylabel("held-out top-1 (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}_mask_ratio.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
