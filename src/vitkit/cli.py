"""The ``vitkit`` command.

    vitkit models [PATTERN]                  registered models with parameter counts
    vitkit train --config configs/demo_mnist.yaml --out runs/demo   (or flags: --model --data ...)
    vitkit pretrain --task mae --model vit_mnist_patch7_28 --out runs/mae   (self-supervised / generative)
    vitkit train --init runs/mae --labels-per-class 10 [--probe]    fine-tune / linear-probe a backbone
    vitkit eval RUN                          held-out top-1 of a run folder
    vitkit predict RUN IMAGE...              top-k classes with probabilities
    vitkit info RUN                          what a run folder holds
    vitkit zero-shot RUN IMAGE... --labels "cat,dog"   CLIP zero-shot labels (run or HF CLIP folder)
    vitkit generate RUN --n 64 --class 7     sample a grid from an ar / var / hart run
    vitkit ablate [--data digits] [--quick]  ViT ablations (pos-embed, pooling, patch, depth) over 3 seeds
    vitkit bench [--quick] [--device cuda]   speed vs HF transformers, ONNX Runtime, vit-pytorch
    vitkit export RUN --onnx m.onnx [--int8] ONNX graph (dynamic batch; int8 by ONNX Runtime), checked
    vitkit sparsevit-search --run RUN --latency-budget MS   SparseViT per-stage sparsity search (Pareto table)

Errors the user can fix print one line (``vitkit: error: ...``) and exit non-zero; set
``VITKIT_DEBUG=1`` to see the traceback. Under ``torchrun`` training is data-parallel.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

EXIT_USAGE, EXIT_ERROR = 2, 1


class CLIError(Exception):
    """An error with a message meant for the user."""


# ---------------------------------------------------------------------------- models
def cmd_models(args) -> int:
    from .models import create_model, list_models
    names = list_models(args.pattern or "*")
    if not names:
        raise CLIError(f"no model matches {args.pattern!r}")
    width = max(28, *(len(n) for n in names))
    print(f"{'model':<{width}} {'params':>10}  input (C, H, W)")
    for n in names:
        m = create_model(n, device="meta")
        count = sum(p.numel() for p in m.parameters())
        print(f"{n:<{width}} {count / 1e6:>9.2f}M  {tuple(getattr(m, 'input_size', ()))}")
    return 0


# ---------------------------------------------------------------------------- train
TRAIN_FLAGS = {  # flag -> TrainConfig field
    "model": "model", "data": "data", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
    "img_size": "img_size", "device": "device", "out": "out", "seed": "seed", "ema": "ema_decay",
    "warmup": "warmup_epochs", "weight_decay": "weight_decay", "threads": "num_threads",
    "task": "task", "init": "init", "labels_per_class": "labels_per_class",
}


def parse_set(items: list[str]) -> dict:
    """``["lr=3e-4", "model_args.depth=8", "augment.rotate=10"]`` -> nested dict (YAML values)."""
    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CLIError(f"--set expects KEY=VALUE, got {item!r}")
        *parents, leaf = key.split(".")
        d = out
        for p in parents:
            d = d.setdefault(p, {})
        d[leaf] = _scalar(value)
    return out


def _scalar(text: str):
    """A YAML value, with numbers YAML 1.1 leaves as strings (``3e-4``) read as numbers."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def train_config(args):
    from .train import TrainConfig
    base = TrainConfig.from_file(args.config).to_dict() if args.config else {}
    for flag, field in TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            base[field] = value
    if args.resume:
        base["resume"] = True
    if getattr(args, "probe", False):
        base["probe"] = True
    if getattr(args, "teacher", None):
        base["task"] = "distill"
        base["task_args"] = {**base.get("task_args", {}), "teacher": args.teacher}
    for key, value in parse_set(args.set).items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return TrainConfig.from_dict(base)


def cmd_train(args) -> int:
    from .train import distributed as dist
    from .train import fit
    from .train.run import build_run
    cfg = train_config(args)
    if args.command == "pretrain" and cfg.task == "classify":
        raise CLIError("pretrain needs --task (mae, simclr, mocov3, clip, vq, ar, var, hart); "
                       "supervised training is `vitkit train`")
    dist.init_distributed()
    model, task, loaders, bundle, meta = build_run(cfg)
    if dist.is_main():
        from .train.tasks import GENERATORS
        what = (cfg.model if cfg.task == "classify" else cfg.task if cfg.task in (*GENERATORS, "vq")
                else f"{cfg.task} ({cfg.model})")
        print(f"vitkit: training {what}, {meta['num_trainable'] / 1e6:.2f}M trainable params, on {cfg.data} "
              f"({len(bundle.train)} train / {len(bundle.test)} test images) for {cfg.epochs} epochs "
              f"-> {cfg.out}", flush=True)
    t0 = time.time()
    result = fit(model, task, loaders, cfg, meta)
    seconds = time.time() - t0
    if dist.is_main():
        if "test_acc" in result and cfg.task in ("classify", "sparsevit_adapt"):
            print(f"vitkit: held-out top-1 {result['test_acc']:.2%} on {result.get('test_count')} images "
                  f"({result.get('eval_weights', 'model')} weights); training took {seconds:.0f} s")
        else:
            held_out = ", ".join(f"{k[5:]} {v:.4g}" for k, v in result.items()
                                 if k.startswith("test_") and k != "test_count" and isinstance(v, float))
            print(f"vitkit: held-out {held_out}; training took {seconds:.0f} s")
        if not args.no_report:
            if cfg.task == "classify":
                report(cfg.out)
            else:
                task_pictures(cfg.out)
    dist.cleanup()
    return 0


def task_pictures(run_dir: str | Path) -> dict:
    """The pictures of a pretraining run (MAE reconstructions, generated samples...), where the task has any."""
    from .train.pictures import task_pictures as draw
    pictures = draw(run_dir)
    if pictures:
        print(f"vitkit: pictures: {', '.join(str(p) for p in pictures.values())}")
    return pictures


def report(run_dir: str | Path, weights: str | None = None) -> dict:
    """Evaluate a run folder on its test split and write its pictures; returns the summary."""
    from .train.run import load_run, predict_batches, top1
    from .viz.report import classification_pictures
    run = load_run(run_dir, weights)
    loader = run.test_loader()
    logits, labels = predict_batches(run.model, loader)
    acc = top1(logits, labels)
    images = next(iter(loader))[0][:8]
    pictures = classification_pictures(run.path, run.model, logits, labels, images, run.classes,
                                       run.mean, run.std, run.path / "metrics.jsonl")
    summary = {"test_acc": acc, "test_count": len(labels), "weights": run.weights,
               "pictures": {k: str(v) for k, v in pictures.items()}}
    (run.path / "report.json").write_text(json.dumps(summary, indent=2))
    print(f"vitkit: pictures: {', '.join(str(p) for p in pictures.values())}")
    return summary


# ---------------------------------------------------------------------------- eval / predict / info
def cmd_eval(args) -> int:
    import torch

    from .train.run import load_run, predict_batches, top1
    run = load_run(args.run, args.weights)
    spec = args.data or run.train_cfg.data
    loader = run.test_loader(spec, args.batch_size)
    logits, labels = predict_batches(run.model, loader)
    acc = top1(logits, labels)
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    out = {"run": str(run.path), "data": spec, "weights": run.weights, "test_acc": acc,
           "test_loss": loss, "test_count": len(labels)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{run.path}: top-1 {acc:.2%} ({int(round(acc * len(labels)))}/{len(labels)}) on the {spec} "
              f"test split, loss {loss:.4f}, {run.weights} weights")
    return 0


def rank_images(paths: list[str], input_size, mean, std, probs_of, names: list[str], topk: int) -> int:
    """Print each image's top-k ``names`` with probabilities; ``probs_of(x (1, C, H, W)) -> (K,)``.
    Unreadable files print one error line and are counted; returns the exit code."""
    import torch

    from .data import load_image
    from .data.transforms import Compose, Normalize, Resize
    c, h, w = input_size
    tf = Compose([Resize((h, w)), Normalize(mean, std)])
    failed = 0
    for path in paths:
        try:
            x = load_image(path, in_chans=c)
        except (ValueError, FileNotFoundError, OSError) as e:
            print(f"vitkit: error: {e}", file=sys.stderr)
            failed += 1
            continue
        with torch.no_grad():
            probs = probs_of(tf(x[None]))
        top = probs.topk(min(topk, probs.numel()))
        ranked = ", ".join(f"{names[i]} {p:.1%}" for p, i in zip(top.values.tolist(), top.indices.tolist()))
        print(f"{path}: {ranked}")
    return EXIT_ERROR if failed else 0


def cmd_predict(args) -> int:
    from .train.run import load_run
    run = load_run(args.run, args.weights)
    return rank_images(args.images, run.model.input_size, run.mean, run.std,
                       lambda x: run.model(x).softmax(-1)[0], run.classes, args.topk)


def cmd_info(args) -> int:
    from .train import checkpoint as ckpt
    from .train.run import load_run
    run = load_run(args.run)
    cfg, c = run.train_cfg, run.config
    epochs = [r for r in ckpt.read_metrics(run.path) if r.get("kind") == "epoch"]
    print(f"run:      {run.path}")
    print(f"model:    {cfg.model} ({c.get('num_params', 0) / 1e6:.2f}M params), input {tuple(run.model.input_size)}")
    print(f"data:     {cfg.data}, classes {run.classes}")
    print(f"training: {cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr}, seed {cfg.seed}, "
          f"weights evaluated: {run.weights}")
    if epochs:
        last = epochs[-1]
        print(f"last epoch {last.get('epoch')}: test top-1 {last.get('test_acc', float('nan')):.2%}, "
              f"train loss {last.get('train_loss', float('nan')):.4f}")
    for name in sorted(p.name for p in run.path.iterdir() if p.is_file()):
        print(f"  {name:<24} {(run.path / name).stat().st_size / 1e3:>10.1f} kB")
    return 0


# ---------------------------------------------------------------------------- zero-shot / generate
def _clip_normalisation(src: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The image normalisation of a CLIP: a vitkit run's data statistics, a HF folder's preprocessor
    config, else OpenAI CLIP's."""
    from .weights import hub
    folder = hub.resolve(src) if hub.is_hub_id(src) else Path(src)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    if "mean" in config and "std" in config:
        return tuple(config["mean"]), tuple(config["std"])
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        p = json.loads(pre.read_text())
        if "image_mean" in p and "image_std" in p:
            return tuple(p["image_mean"]), tuple(p["image_std"])
    return (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def cmd_zero_shot(args) -> int:
    from . import load_clip
    from .tasks.clip import zero_shot_predict
    model = load_clip(args.run)
    mean, std = _clip_normalisation(args.run)
    templates = None
    if args.templates:
        templates = [line.strip() for line in Path(args.templates).read_text().splitlines() if line.strip()]
        if not templates:
            raise CLIError(f"{args.templates} holds no templates (one per line, with {{}} for the label)")
    labels = [x.strip() for x in args.labels.split(",") if x.strip()]
    return rank_images(args.images, model.input_size, mean, std,
                       lambda x: zero_shot_predict(model, x, labels, templates)[0], labels, args.topk)


def cmd_generate(args) -> int:
    import torch

    from .train.run import load_run
    from .viz import image_grid
    run = load_run(args.run)
    if run.train_cfg.task not in ("ar", "var", "hart"):
        raise CLIError(f"{args.run} is a {run.train_cfg.task!r} run; generate needs an ar, var or hart run "
                       "(`vitkit pretrain --task ar|var|hart`)")
    k = len(run.classes)
    if args.cls is None:
        labels = torch.arange(args.n) % k  # every class in turn: one class per column of the grid
    else:
        if args.cls not in run.classes:
            raise CLIError(f"--class {args.cls!r} is not one of the run's classes {run.classes}")
        labels = torch.full((args.n,), run.classes.index(args.cls))
    sampling = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                "cfg_scale": args.cfg_scale, "generator": torch.Generator().manual_seed(args.seed)}
    if run.train_cfg.task_args.get("order") == "masked":
        sampling["steps"] = args.steps
    t0 = time.perf_counter()
    images = run.model.generate(labels, **sampling)
    seconds = time.perf_counter() - t0
    out = Path(args.out or run.path / "samples.png")
    image_grid(images, k if args.cls is None else min(8, args.n), out, run.mean, run.std, scale=args.scale)
    passes = getattr(run.model.generator, "last_forward_passes", None)
    print(f"vitkit: {args.n} samples -> {out} ({seconds / args.n * 1e3:.1f} ms/image"
          + (f", {passes} transformer forward passes" if passes is not None else "") + ")")
    return 0


# ---------------------------------------------------------------------------- export
def cmd_export(args) -> int:
    """ONNX export of a classifier run, checked against PyTorch (and on the test split with --check)."""
    import torch

    from .export.onnx import export_onnx, max_abs_diff, onnx_forward, onnx_session, quantize_onnx_int8
    from .train.run import load_run, predict_batches, top1
    if not args.onnx:
        raise CLIError("say where to write the model: --onnx PATH (for int8 in PyTorch itself, see "
                       "vitkit.export.quantize_int8)")
    run = load_run(args.run, args.weights)
    model = run.model.eval()
    if not hasattr(model, "input_size"):
        raise CLIError(f"{args.run} holds a {run.train_cfg.task} model; only image classifiers export to ONNX")
    out = Path(args.onnx)
    fp32 = out.with_name(out.stem + ".fp32.onnx") if args.int8 else out
    export_onnx(model, fp32)
    if args.int8:
        quantize_onnx_int8(fp32, out)
        fp32.unlink()
    session = onnx_session(out)
    diff = max_abs_diff(model, session, torch.randn(3, *model.input_size))
    print(f"vitkit: {run.path} -> {out} ({'int8 weights, ' if args.int8 else ''}dynamic batch, input "
          f"'pixel_values' {tuple(model.input_size)}, output 'logits'); max |logit diff| vs PyTorch {diff:.1e}")
    if args.check:
        loader = run.test_loader(None, 256)
        logits, labels = predict_batches(model, loader)
        onnx_logits = torch.cat([onnx_forward(session, xb) for xb, _ in loader])
        print(f"vitkit: held-out top-1 PyTorch {top1(logits, labels):.2%}, ONNX {top1(onnx_logits, labels):.2%} "
              f"({len(labels)} images)")
    return 0


# ---------------------------------------------------------------------------- sparsevit-search
def cmd_sparsevit_search(args) -> int:
    """Rejection-sampling search of per-stage window sparsity under a latency budget (SparseViT Sec. 3.3)."""
    import torch

    from .models.sparsevit import (SPARSITY_CHOICES, SparseViT, accuracy_fn, format_table, measure_latency_table,
                                   search, table_latency_fn)
    from .models.swin import SwinTransformer
    from .train.run import load_run
    if args.threads:
        torch.set_num_threads(args.threads)
    run = load_run(args.run, args.weights)
    model = run.model.eval()
    if not isinstance(model, SparseViT):
        if not isinstance(model, SwinTransformer):
            raise CLIError(f"{args.run} holds a {type(model).__name__}; the search needs a Swin or SparseViT run "
                           "(e.g. vitkit train --model sparsevit_swin_nano_patch2_window4_28)")
        model = SparseViT.from_swin(model)
    choices = [float(c) for c in args.choices.split(",")] if args.choices else list(SPARSITY_CHOICES)
    loader = run.test_loader(args.data, 256)
    if args.table:  # a table measured earlier (the "table" of a previous --json): search other budgets on it
        try:
            table = json.loads(Path(args.table).read_text())
            table = table.get("table", table) if isinstance(table, dict) else table
            stages, table_choices = len(table["stage_ms"]), [float(c) for c in table["choices"]]
            if any(len(row) != len(table_choices) for row in table["stage_ms"]):
                raise ValueError(f"every stage needs one time per choice ({len(table_choices)})")
            table_latency_fn(table)([table_choices[0]] * stages)                # base_ms and every row there
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            raise CLIError(f"--table {args.table}: not a latency table written by --json ({e})") from e
        if args.choices and sorted(choices) != sorted(table_choices):
            raise CLIError(f"--choices {choices} differ from the table's {table_choices}; drop --choices or "
                           "measure a new table")
        if stages != model.num_stages:
            raise CLIError(f"--table has {stages} stages, the run's model {model.num_stages}")
        choices = table_choices
    else:
        x = next(iter(loader))[0][:args.batch]
        print(f"vitkit: measuring a per-stage latency table (batch {len(x)}, {torch.get_num_threads()} threads) ...",
              file=sys.stderr)
        with torch.inference_mode():
            table = measure_latency_table(model, x, choices, repeats=args.repeats)
    latency = table_latency_fn(table)
    dense_ms = latency([0.0] * model.num_stages)
    accuracy = accuracy_fn(loader)
    best, rows = search(model, accuracy, latency, args.latency_budget, args.samples, choices, seed=args.seed)
    model.set_sparsity([0.0] * model.num_stages)
    dense_acc = accuracy(model)
    print(f"dense: {dense_ms:.2f} ms (predicted from the table), top-1 {dense_acc:.4f} on "
          f"{args.data or 'the test split'}")
    print(f"budget {args.latency_budget} ms: {len(rows)} configs evaluated; "
          f"{'Pareto front' if not args.all else 'all'}:")
    print(format_table(rows, pareto_only=not args.all))
    best_row = next(r for r in rows if r["sparsity"] == best)
    print(f"best: {'/'.join(f'{s:.0%}' for s in best)} -> {best_row['latency_ms']:.2f} ms "
          f"({dense_ms / best_row['latency_ms']:.2f}x faster than dense), top-1 {best_row['score']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"run": str(run.path), "budget_ms": args.latency_budget,
                                               "table": table, "dense_ms": dense_ms, "dense_score": dense_acc,
                                               "best": list(best), "rows": rows}, indent=2))
    return 0


# ---------------------------------------------------------------------------- convert
def cmd_convert(args) -> int:
    from .weights import convert
    print(convert(args.src, args.dst, to=args.to, model=args.model))
    return 0


# ---------------------------------------------------------------------------- parser / main
def add_train_flags(t: argparse.ArgumentParser) -> None:
    t.add_argument("--config", help="YAML/JSON file of TrainConfig fields (flags override it)")
    t.add_argument("--model", help="registered model name (see `vitkit models`): the classifier or the backbone")
    t.add_argument("--task", help="classify | distill | diverse_patch | sparsevit_adapt (train); "
                   "mae | simclr | mocov3 | clip | vq | ar | var | hart (pretrain)")
    t.add_argument("--data", help="mnist5k | digits | imagefolder:PATH | cifar10:PATH")
    t.add_argument("--labels-per-class", type=int, dest="labels_per_class",
                   help="train on this many labelled images per class (a seeded draw)")
    t.add_argument("--init", help="start from the backbone of this run folder or weights file (fine-tuning)")
    t.add_argument("--probe", action="store_true",
                   help="linear probe: freeze the --init backbone, train a BatchNorm + linear head")
    t.add_argument("--teacher", help="DeiT distillation from this trained run folder (task distill); "
                   "tune it with --set task_args.kind=soft|hard, task_args.tau, task_args.alpha")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int, dest="batch_size", help="global batch size")
    t.add_argument("--lr", type=float, help="peak learning rate")
    t.add_argument("--warmup", type=float, help="warmup epochs")
    t.add_argument("--weight-decay", type=float, dest="weight_decay")
    t.add_argument("--img-size", type=int, dest="img_size", help="train/eval image size (default: the data's)")
    t.add_argument("--ema", type=float, help="EMA decay of the weights, e.g. 0.999")
    t.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--out", help="run folder")
    t.add_argument("--seed", type=int)
    t.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any config field, e.g. --set model_args.depth=8 --set task_args.mask_ratio=0.5")
    t.add_argument("--no-report", action="store_true", help="skip the pictures after training")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vitkit", description="Vision Transformers: train, evaluate, predict.")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("models", help="list registered models")
    m.add_argument("pattern", nargs="?", help="shell pattern, e.g. 'vit_*_patch16_224'")
    m.set_defaults(func=cmd_models)

    for name, text in (("train", "train a classifier (config file and/or flags)"),
                       ("pretrain", "self-supervised / generative pretraining: --task mae|simclr|mocov3|clip|vq|ar|var|hart")):
        t = sub.add_parser(name, help=text)
        add_train_flags(t)
        t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="top-1 accuracy of a run on its test split")
    e.add_argument("run", help="run folder")
    e.add_argument("--weights", choices=["ema", "model"], help="default: the weights the run evaluated")
    e.add_argument("--data", help="another data spec with the same classes")
    e.add_argument("--batch-size", type=int, default=256, dest="batch_size")
    e.add_argument("--json", action="store_true", help="print one JSON line")
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("predict", help="classify image files with a trained run")
    r.add_argument("run", help="run folder")
    r.add_argument("images", nargs="+", help="PNG/JPEG/BMP files")
    r.add_argument("--topk", type=int, default=3)
    r.add_argument("--weights", choices=["ema", "model"])
    r.set_defaults(func=cmd_predict)

    i = sub.add_parser("info", help="describe a run folder")
    i.add_argument("run")
    i.set_defaults(func=cmd_info)

    rp = sub.add_parser("report", help="(re)write a run's pictures and report.json")
    rp.add_argument("run")
    rp.set_defaults(func=lambda a: (report(a.run), 0)[1])

    z = sub.add_parser("zero-shot", help="classify images by text labels with a CLIP (run folder or HF folder)")
    z.add_argument("run", help="a CLIP run folder, a HF CLIPModel folder, or hf:org/name (local cache)")
    z.add_argument("images", nargs="+", help="PNG/JPEG/BMP files")
    z.add_argument("--labels", required=True, help='comma-separated labels, e.g. "cat,dog,seven"')
    z.add_argument("--templates", help="file of prompt templates, one per line with {} for the label "
                   "(default: the run's held-out templates); several templates are ensembled")
    z.add_argument("--topk", type=int, default=3)
    z.set_defaults(func=cmd_zero_shot)

    g = sub.add_parser("generate", help="sample images from a generator run (ar, var, hart) into a PNG grid")
    g.add_argument("run", help="run folder of `vitkit pretrain --task ar|var|hart`")
    g.add_argument("--n", type=int, default=64, help="number of images")
    g.add_argument("--class", dest="cls", help="class name to generate (default: every class in turn)")
    g.add_argument("--out", help="PNG path (default: RUN/samples.png)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    g.add_argument("--top-k", type=int, dest="top_k")
    g.add_argument("--top-p", type=float, dest="top_p")
    g.add_argument("--cfg-scale", type=float, default=1.0, dest="cfg_scale", help="classifier-free guidance")
    g.add_argument("--steps", type=int, default=8, help="decoding steps of masked AR (MaskGIT)")
    g.add_argument("--scale", type=int, default=3, help="pixel enlargement of the PNG")
    g.set_defaults(func=cmd_generate)

    ab = sub.add_parser("ablate", help="the ViT paper's ablations as one sweep: position embedding, class token "
                        "vs GAP, patch size, depth -> benchmarks/results/ablations.{md,json,png}")
    from .bench import ablations  # stdlib-only at import time; torch loads in run()
    ablations.add_arguments(ab)
    ab.set_defaults(func=lambda a: (ablations.run(a), 0)[1])

    bn = sub.add_parser("bench", help="speed of vitkit's ViT vs HF transformers, ONNX Runtime and vit-pytorch "
                        "-> benchmarks/results/speed.{md,json}")
    from .bench import speed  # stdlib-only at import time; torch loads in run()
    speed.add_arguments(bn)
    bn.set_defaults(func=lambda a: (speed.run(a), 0)[1])

    x = sub.add_parser("export", help="export a classifier run to ONNX (dynamic batch), optionally int8")
    x.add_argument("run", help="run folder")
    x.add_argument("--onnx", help="output .onnx path")
    x.add_argument("--int8", action="store_true", help="int8 weights (ONNX Runtime dynamic quantisation)")
    x.add_argument("--weights", choices=["ema", "model"], help="default: the weights the run evaluated")
    x.add_argument("--check", action="store_true", help="also compare held-out top-1 of PyTorch and ONNX")
    x.set_defaults(func=cmd_export)

    sv = sub.add_parser("sparsevit-search", help="SparseViT: per-stage window sparsity search under a latency "
                        "budget (rejection sampling on a latency table measured here); prints the Pareto table")
    sv.add_argument("--run", required=True, help="a Swin or SparseViT classifier run folder")
    sv.add_argument("--latency-budget", type=float, required=True, dest="latency_budget", help="milliseconds")
    sv.add_argument("--samples", type=int, default=20, help="configs to evaluate (those within the budget)")
    sv.add_argument("--choices", help="comma-separated sparsity levels per stage (default 0,0.1,...,0.8)")
    sv.add_argument("--batch", type=int, default=1, help="batch size the latency is measured at")
    sv.add_argument("--repeats", type=int, default=5, help="timing repeats per table entry (median)")
    sv.add_argument("--data", help="data spec to score on (default: the run's test split)")
    sv.add_argument("--weights", choices=["ema", "model"])
    sv.add_argument("--threads", type=int)
    sv.add_argument("--seed", type=int, default=0)
    sv.add_argument("--all", action="store_true", help="print every evaluated config, not only the Pareto front")
    sv.add_argument("--json", help="write the latency table and the search rows to this file")
    sv.add_argument("--table", help="reuse the latency table of an earlier --json file instead of measuring one "
                    "(search several budgets on one measurement)")
    sv.set_defaults(func=cmd_sparsevit_search)

    c = sub.add_parser("convert", help="convert ViT weights between vitkit, HF transformers and timm")
    c.add_argument("src", help="weights file, checkpoint folder (HF/timm/vitkit), Google .npz, or hf:org/name")
    c.add_argument("dst", help="output folder (model.safetensors + config.json)")
    c.add_argument("--to", required=True, choices=["vitkit", "hf", "timm"], help="layout to write")
    c.add_argument("--model", help="registered model whose config fills what the weights cannot tell (heads)")
    c.set_defaults(func=cmd_convert)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("vitkit: interrupted; `vitkit train --resume` continues from the last checkpoint",
              file=sys.stderr)
        return 130
    except Exception as e:  # one line for the user; the traceback on request
        if os.environ.get("VITKIT_DEBUG"):
            raise
        known = isinstance(e, (CLIError, ValueError, TypeError, FileNotFoundError, OSError))
        name = "" if known else f"internal error ({type(e).__name__}): "
        print(f"vitkit: error: {name}{e}" + ("" if known else " (set VITKIT_DEBUG=1 for the traceback)"),
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
