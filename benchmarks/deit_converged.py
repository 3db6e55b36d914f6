"""DeiT in the regime it was made for: the demo's ViT trained to convergence against its distilled twin.

    python benchmarks/deit_converged.py                  # runs/deit_converged/*, results/deit_converged.{md,json}
    python benchmarks/deit_converged.py --settings demo  # the demo's augmentation only (about half the runs)
    python benchmarks/deit_converged.py --control        # + the no-teacher DeiT rows
    python benchmarks/deit_converged.py --quick          # a tiny version (the test suite)

Why. benchmarks/results/small_data.md's DeiT rows come from 15-epoch runs in which the plain ViT is still
at 67%: they measure how fast a model optimises, not what a teacher gives. DeiT (Touvron et al. 2021)
distils into a ViT trained for hundreds of epochs with strong augmentation. Here every ViT row takes
the demo's recipe and schedule as it stood before PatchDropout (configs/demo_mnist_v2.yaml, 130 epochs), which
reaches ~98% on its own; the demo has since added PatchDropout (configs/demo_mnist.yaml), not measured here.

Protocol. mnist5k (4,000 training digits, 1,000 held out); seeds 0, 1, 2; one thread per run; each run is
scored once after its last epoch (EMA weights; no early stopping, nothing chosen on the held-out digits).
Rows, per augmentation setting:
- the CNN teacher: ``resnet_small_28`` trained on the same 4,000 digits with the demo's recipe (the demo
  setting's augmentation) for TEACHER_EPOCHS epochs; one teacher per seed, the same for both settings.
- ViT: the demo's model and recipe, unchanged.
- DeiT, no teacher (with ``--control``; 3 more runs a setting): the same ViT with a class and a distillation token (``class_token=True,
  global_pool=token, distilled=True``: DeiT reads its two heads off those tokens) trained on the labels
  alone (`vitkit.train.tasks`: both heads, averaged). It separates what the tokens change from what the
  teacher gives.
- DeiT, hard / soft distillation: that model distilled from the seed's teacher (``vitkit train --teacher
  RUN --set task_args.kind=hard|soft``; soft: tau 3, alpha 0.1, the paper's values), the distillation
  term seeing the same augmented (and mixed) images as the student.
Two augmentation settings: the demo's own, and DeiT's stronger one on top of it (RandAugment
``rand-m9-mstd0.5-inc1``, mixup 0.8, cutmix 1.0, random erasing 0.25; no flips: digits).

Teacher agreement. A teacher trained on the same 4,000 images reproduces their labels on clean images, so
hard distillation adds a signal only where augmentation makes the teacher disagree with the label. For
each setting and seed one pass over the training batches, augmented (and mixed) exactly as the student
sees them, counts how often the teacher's argmax equals the label: on the clean training images, on the
augmented images before mixing, and on the mixed images (the label of the larger share).

Verdict (computed): the ViT-to-CNN gap is CNN - ViT; a DeiT row closes (DeiT - ViT) / gap of it. A
difference smaller than the two rows' seed spread (sqrt(std_a^2 + std_b^2)) is flagged. Distillation
"wins" a setting when a distilled row beats the ViT (and, with ``--control``, the no-teacher DeiT) by more
than the spread; without the control a gain cannot tell the teacher from the two extra tokens, and the
verdict says so.

Runs go to ``--work`` (default runs/deit_converged), except the demo setting's ViT rows, which are the
demo's own seed runs (``--demo-work``, default runs/demo_recipe: benchmarks/demo_recipe.py trains the same
configs there). A finished run is reused, an interrupted one resumes; ``--jobs`` processes of one thread.
The teachers train first, then one setting after another, so a stopped session leaves whole settings
behind; the report covers the ``--settings`` asked for.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import time
from pathlib import Path

from vitkit.bench.ablations import spread
from vitkit.bench.measure import environment, write_results
from vitkit.train.sweep import mean_std, param_count, run_all, train_seconds

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SEEDS = (0, 1, 2)
TEACHER = "resnet_small_28"
TEACHER_EPOCHS = 40
DEIT_ARGS = {"class_token": True, "global_pool": "token", "distilled": True}
SOFT = {"kind": "soft", "tau": 3.0, "alpha": 0.1}
SETTINGS = {
    "demo": ("the demo's augmentation", {}),
    "deit": ("DeiT's augmentation: the demo's + RandAugment rand-m9-mstd0.5-inc1, mixup 0.8, cutmix 1.0, "
             "random erasing 0.25",
             {"augment.auto_augment": "rand-m9-mstd0.5-inc1", "augment.erase": 0.25, "mixup": 0.8, "cutmix": 1.0}),
}
ROWS = (  # (key, label)
    ("cnn", "CNN teacher"),
    ("vit", "ViT (demo_mnist_v2.yaml)"),
    ("deit_none", "DeiT tokens, no teacher"),
    ("deit_hard", "DeiT, hard distillation"),
    ("deit_soft", "DeiT, soft distillation"),
)
CONTROL = "deit_none"  # trained only with --control (3 more runs a setting)


def _demo_recipe():
    spec = importlib.util.spec_from_file_location("demo_recipe", HERE / "demo_recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------- configs
def configs(work: Path, demo_work: Path | None, quick: bool = False, seeds=SEEDS,
            settings=tuple(SETTINGS), control: bool = True) -> dict[str, dict]:
    """Job name "<setting>/<row>/s<seed>" -> TrainConfig dict; the teachers are "teacher/s<seed>".
    ``control`` False leaves out the no-teacher DeiT rows."""
    dr = _demo_recipe()
    base = dr.v2_config()
    run = dict(num_threads=1, log_every=1_000_000)
    if quick:  # one epoch on 20 images per class, batch 64
        base = dict(base, epochs=1, warmup_epochs=0, labels_per_class=20, batch_size=min(base["batch_size"], 64))
    demo_seed_runs = dr.seed_runs(demo_work, dr.V2) if demo_work is not None and not quick else {}
    jobs = {}
    for seed in seeds:
        teacher = dict(base, model=TEACHER, model_args={}, seed=seed, **run,
                       epochs=1 if quick else TEACHER_EPOCHS, out=str(work / "teacher" / f"s{seed}"))
        jobs[f"teacher/s{seed}"] = teacher
        for setting in settings:
            cfg = dict(dr.apply(base, SETTINGS[setting][1]), seed=seed, **run)
            deit = dict(cfg, model_args={**cfg["model_args"], **DEIT_ARGS})
            out = lambda row: str(work / setting / row / f"s{seed}")  # noqa: E731
            vit_out = demo_seed_runs[seed] if setting == "demo" and seed in demo_seed_runs else out("vit")
            jobs[f"{setting}/vit/s{seed}"] = dict(cfg, out=str(vit_out))
            if control:
                jobs[f"{setting}/deit_none/s{seed}"] = dict(deit, out=out("deit_none"))
            jobs[f"{setting}/deit_hard/s{seed}"] = dict(deit, task="distill", out=out("deit_hard"),
                                                        task_args={"kind": "hard", "teacher": teacher["out"]})
            jobs[f"{setting}/deit_soft/s{seed}"] = dict(deit, task="distill", out=out("deit_soft"),
                                                        task_args={**SOFT, "teacher": teacher["out"]})
    return jobs


# ---------------------------------------------------------------------------- teacher agreement
def teacher_agreement(teacher_dir: str, cfg_dict: dict, passes: int = 1) -> dict:
    """How often the teacher's argmax equals the label on the training images: clean, augmented as the
    student sees them (before mixing), and mixed (the label of the larger share), over ``passes``
    epochs of the config's training batches (its own seeds, so the images are the ones training drew)."""
    import torch

    from vitkit import data as vdata
    from vitkit.tasks.classify import Classify
    from vitkit.train import TrainConfig, precision
    from vitkit.train.run import build_data, build_loaders, predict_batches
    from vitkit.train.tasks import load_teacher
    from vitkit.train.trainer import seed_everything
    cfg = TrainConfig.from_dict(cfg_dict)
    bundle = build_data(cfg)
    if cfg.labels_per_class:  # as build_run draws it
        bundle = dataclasses.replace(bundle, train=vdata.labelled_subset(bundle.train, cfg.labels_per_class,
                                                                        seed=cfg.seed))
    teacher = load_teacher(teacher_dir)
    amp = precision.resolve_amp(cfg.amp, "cpu")
    clean = vdata.make_loader(bundle.train, batch_size=256, shuffle=False, drop_last=False,
                              transform=vdata.eval_transform(bundle))
    logits, labels = predict_batches(teacher, clean, amp)
    counts = {"clean": [int((logits.argmax(1) == labels).sum()), len(labels)], "augmented": [0, 0], "mixed": [0, 0]}
    loader = build_loaders(cfg, bundle)["train"]
    mixer = Classify(cfg.label_smoothing, cfg.mixup, cfg.cutmix)
    mixing = cfg.mixup > 0 or cfg.cutmix > 0
    with torch.no_grad():
        for epoch in range(passes):
            seed_everything(cfg.seed + epoch * 1000)  # the trainer's per-epoch reseeding (rank 0)
            loader.set_epoch(epoch)
            for x, y in loader:
                with precision.autocast("cpu", amp):
                    pred = teacher(x).float().argmax(1)
                counts["augmented"][0] += int((pred == y).sum())
                counts["augmented"][1] += len(y)
                if mixing:
                    xm, lam = mixer.mix_images(x)
                    major = y if lam >= 0.5 else y.flip(0)
                    with precision.autocast("cpu", amp):
                        pm = teacher(xm).float().argmax(1)
                    counts["mixed"][0] += int((pm == major).sum())
                    counts["mixed"][1] += len(y)
    return {k: (a / n if n else None) for k, (a, n) in counts.items()} | {"images": counts}


# ---------------------------------------------------------------------------- verdicts
def verdicts(rows: dict[str, dict]) -> dict:
    """Per DeiT row: the share of the ViT-to-CNN gap it closes and its gain over the ViT (and, with the
    no-teacher control, over that control), flagged when within the seed spread; distillation "wins" when a
    distilled row beats the ViT (and the control, when trained) by more than the spread."""
    cnn, vit, none = rows["cnn"], rows["vit"], rows.get(CONTROL)
    gap = cnn["mean"] - vit["mean"]
    out = {"gap": gap, "gap_spread": spread(cnn, vit), "rows": {}}
    wins = []
    for key in [k for k in (CONTROL, "deit_hard", "deit_soft") if k in rows]:
        r = rows[key]
        d_vit = r["mean"] - vit["mean"]
        v = {"over_vit": d_vit, "over_vit_spread": spread(r, vit), "gap_closed": d_vit / gap if gap > 0 else None}
        v["clear_over_vit"] = d_vit > v["over_vit_spread"]
        if none is not None:
            v["over_none"] = r["mean"] - none["mean"]
            v["over_none_spread"] = spread(r, none)
            v["clear_over_none"] = v["over_none"] > v["over_none_spread"]
        if key != CONTROL and v["clear_over_vit"] and v.get("clear_over_none", True):
            wins.append(key)
        out["rows"][key] = v
    out["wins"] = wins
    best = max(("deit_hard", "deit_soft"), key=lambda k: rows[k]["mean"])
    b = out["rows"][best]
    than = " and the no-teacher DeiT" if none is not None else ""
    if gap <= 0:
        text = (f"no gap to close: the ViT is {100 * -gap:.2f} pts above the CNN; the better distilled row "
                f"({best.replace('deit_', '')}) is {100 * b['over_vit']:+.2f} pts over the ViT")
    else:
        text = (f"the CNN leads the ViT by {100 * gap:.2f} pts"
                + (" (within the seed spread)" if gap <= out["gap_spread"] else "")
                + f"; the better distilled row ({best.replace('deit_', '')}) closes {100 * b['gap_closed']:.0f}% of it "
                f"({100 * b['over_vit']:+.2f} pts over the ViT"
                + (f", {100 * b['over_none']:+.2f} over DeiT without a teacher" if none is not None else "") + ")")
    if wins:
        text += ("; distillation wins: " + ", ".join(w.replace("deit_", "") for w in wins)
                 + f" beats the ViT{than} by more than the seed spread")
    else:
        text += f"; distillation does not win: no distilled row beats the ViT{than} by more than the seed spread"
    if none is None:
        text += " (without the no-teacher control, `--control`, a gain mixes the teacher with the two extra tokens)"
    out["text"] = text
    return out


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default="runs/deit_converged")
    p.add_argument("--demo-work", default="runs/demo_recipe", dest="demo_work",
                   help="where benchmarks/demo_recipe.py keeps the demo's seed runs (the demo setting's ViT rows)")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help=f"comma-separated augmentation settings to train and report ({', '.join(SETTINGS)}); "
                        "the report covers these only")
    p.add_argument("--control", action="store_true",
                   help="also train the no-teacher DeiT rows (the tokens without a teacher; 3 more runs a setting)")
    p.add_argument("--quick", action="store_true", help="tiny settings, for the test suite")
    args = p.parse_args(argv)
    settings = [x for x in args.settings.split(",") if x]
    unknown = [x for x in settings if x not in SETTINGS]
    if unknown or not settings:
        p.error(f"--settings: unknown {unknown}; choose from {list(SETTINGS)}")
    seeds = (0,) if args.quick else SEEDS
    if args.quick:
        args.jobs = 1
    import torch
    torch.set_num_threads(1)
    t0 = time.time()
    work = Path(args.work)
    jobs = configs(work, Path(args.demo_work), args.quick, seeds, settings, args.control)
    # The teachers first (the distilled runs need them), then one setting after the other, so that a
    # session that stops leaves whole settings behind (a re-run reuses them and goes on).
    res = run_all([(n, jobs[n]) for n in jobs if n.startswith("teacher/")], args.jobs)
    for setting in settings:
        res.update(run_all([(n, jobs[n]) for n in jobs if n.startswith(f"{setting}/")], args.jobs))

    from vitkit import data as vdata
    bundle = vdata.build("mnist5k")
    teacher_rows = [f"teacher/s{s}" for s in seeds]
    t_accs = [res[n]["test_acc"] for n in teacher_rows]
    tm, ts = mean_std(t_accs)
    cnn = {"accs": t_accs, "mean": tm, "std": ts, "params": param_count(jobs[teacher_rows[0]], bundle),
           "train_s": mean_std([train_seconds(jobs[n]["out"]) for n in teacher_rows])[0],
           "epochs": jobs[teacher_rows[0]]["epochs"], "model": TEACHER}
    report = {}
    for setting in settings:
        label, changes = SETTINGS[setting]
        rows = {"cnn": dict(cnn)}
        for key, _ in ROWS[1:]:
            if key == CONTROL and not args.control:
                continue
            names = [f"{setting}/{key}/s{s}" for s in seeds]
            accs = [res[n]["test_acc"] for n in names]
            m, s = mean_std(accs)
            c0 = jobs[names[0]]
            rows[key] = {"accs": accs, "mean": m, "std": s, "model": c0["model"], "epochs": c0["epochs"],
                         "model_args": c0["model_args"], "task": c0.get("task", "classify"),
                         "task_args": {k: v for k, v in c0.get("task_args", {}).items() if k != "teacher"},
                         "params": param_count(dict(c0, task="classify", task_args={}), bundle),
                         "train_s": mean_std([train_seconds(jobs[n]["out"]) for n in names])[0]}
        agreement = [teacher_agreement(jobs[f"teacher/s{s}"]["out"], jobs[f"{setting}/vit/s{s}"]) for s in seeds]
        agree = {k: mean_std([a[k] for a in agreement]) if agreement[0][k] is not None else None
                 for k in ("clean", "augmented", "mixed")}
        report[setting] = {"label": label, "changes": changes, "rows": rows, "verdict": verdicts(rows),
                           "agreement": agree, "agreement_per_seed": agreement}
    results = {"protocol": __doc__, "args": vars(args), "environment": environment(), "seeds": list(seeds),
               "teacher_epochs": cnn["epochs"], "settings": report, "minutes": (time.time() - t0) / 60,
               "quick": args.quick}
    stem = "deit_converged" + ("_quick" if args.quick else "")
    md = markdown(results)
    write_results(Path(args.out), stem, results, md)
    print(md)
    return results


def command(args: dict) -> str:
    """The command line that wrote a report (its settings, the control, --quick)."""
    cmd = "python benchmarks/deit_converged.py"
    if args["settings"] != ",".join(SETTINGS):
        cmd += f" --settings {args['settings']}"
    return cmd + (" --control" if args["control"] else "") + (" --quick" if args["quick"] else "")


def markdown(res: dict) -> str:
    labels = dict(ROWS)
    first = next(iter(res["settings"].values()))["rows"]
    lines = ["# DeiT where it applies: the demo's ViT, converged, against its distilled twin", "",
             f"Written by `{command(res['args'])}` "
             f"({res['environment']['machine']}). mnist5k: 4,000 training digits, 1,000 held out. Held-out top-1 "
             f"(%), mean +- std over seeds {res['seeds']}, each run scored once after its last epoch (EMA weights). "
             f"Every ViT row is configs/demo_mnist_v2.yaml ({first['vit']['epochs']} epochs: the demo's recipe before "
             "PatchDropout); the teacher is "
             f"`{TEACHER}` trained with the same recipe for {res['teacher_epochs']} epochs, one per seed, the same "
             "in every setting. DeiT rows: the same ViT with a class and a distillation token "
             "(`--set model_args.class_token=true --set model_args.global_pool=token --set model_args.distilled=true`); "
             "hard: `--teacher RUN --set task_args.kind=hard`; soft: `--set task_args.kind=soft` (tau 3, alpha 0.1). "
             "Train s: mean training time of a run, measured beside other jobs: compare within a table only. "
             "Protocol: the docstring of benchmarks/deit_converged.py.", ""]
    for setting, s in res["settings"].items():
        v = s["verdict"]
        a = s["agreement"]
        fmt = lambda ms: "-" if ms is None else f"{100 * ms[0]:.1f}%"  # noqa: E731
        lines += [f"## {s['label']}", "",
                  f"Teacher agrees with the label on {fmt(a['clean'])} of the clean training digits, "
                  f"{fmt(a['augmented'])} of the augmented ones" +
                  (f", {fmt(a['mixed'])} of the mixed ones (the larger share's label)" if a["mixed"] else "") +
                  " (one pass over the training batches, mean over the seeds' teachers): the hard distillation "
                  f"target differs from the label on {100 * (1 - (a['mixed'] or a['augmented'])[0]):.1f}% of the "
                  "images the student trains on.", "",
                  "| row | params | top-1 (%) | over the ViT | share of the gap closed | train s |",
                  "|---|---|---|---|---|---|"]
        for key, r in s["rows"].items():
            vr = v["rows"].get(key)
            over = closed = "-"
            if vr:
                over = f"{100 * vr['over_vit']:+.2f}" + ("" if vr["clear_over_vit"] or vr["over_vit"] <= 0 else
                                                         " (within spread)")
                closed = "-" if vr["gap_closed"] is None else f"{100 * vr['gap_closed']:.0f}%"
            lines.append(f"| {labels[key]} | {r['params'] / 1e6:.2f}M | {100 * r['mean']:.2f} +- {100 * r['std']:.2f} "
                         f"| {over} | {closed} | {r['train_s']:.0f} |")
        lines += ["", f"**Verdict ({setting}):** {v['text']}.", ""]
    return "\n".join(lines)


report = markdown  # tests/test_results.py: the committed report is this function of the committed json


if __name__ == "__main__":
    main()
