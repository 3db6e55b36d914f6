"""Commands on a finished run folder: ``eval``, ``predict``, ``info`` and ``report``.

Each works on every kind of run (`vitkit.train.run.run_kind`) or says which kind it needs and which
command serves the run instead: ``eval`` scores a classifier's top-1 and any other run with its
task's held-out metrics; ``report`` draws what the run's task has pictures for.
"""
from __future__ import annotations

import json
from pathlib import Path

from .common import CLIError, rank_images


def _scored(run, spec: str | None) -> str:
    """Which images ``eval_loader(spec)`` scores, in words."""
    if spec is None or spec == run.train_cfg.data:
        return f"the {run.train_cfg.data} test split"
    if spec.partition(":")[0].strip().lower() == "imagefolder":
        folder = Path(spec.partition(":")[2])
        split = next((folder / s for s in ("test", "val") if (folder / "train").is_dir() and (folder / s).is_dir()),
                     None)
        return f"every image of {split}" if split else f"every image of {folder}"
    return f"the {spec} test split"


def evaluate_run(run, spec: str | None = None, batch_size: int = 256, amp: str | None = None) -> dict:
    """Held-out metrics of a run: top-1 and loss for a classifier, its task's metrics otherwise; under
    ``amp`` (default: the run's own precision, as its training evaluated it)."""
    import torch

    from ..train import evaluate
    from ..train.precision import precision_name
    from ..train.run import predict_batches, top1
    loader = run.eval_loader(spec, batch_size)
    dtype = run.amp(amp)
    if run.kind == "classifier":
        logits, labels = predict_batches(run.model, loader, dtype)
        metrics = {"acc": top1(logits, labels), "loss": torch.nn.functional.cross_entropy(logits, labels).item(),
                   "count": len(labels)}
    else:
        metrics = evaluate(run.model, run.task, loader, amp=dtype)
    return {"run": str(run.path), "task": run.train_cfg.task, "data": spec or run.train_cfg.data,
            "scored": _scored(run, spec), "weights": run.weights, "precision": precision_name(dtype),
            **{f"test_{k}": v for k, v in metrics.items()}}


def describe(result: dict) -> str:
    """One line for `evaluate_run`'s result."""
    n = result["test_count"]
    from ..train.run import run_kind
    if "test_acc" in result and run_kind(result["task"]) == "classifier":
        acc = result["test_acc"]
        return (f"{result['run']}: top-1 {acc:.2%} ({int(round(acc * n))}/{n}) on {result['scored']}, "
                f"loss {result['test_loss']:.4f}, {result['weights']} weights, {result['precision']}")
    metrics = ", ".join(f"{k[5:]} {v:.4g}" for k, v in result.items()
                        if k.startswith("test_") and k != "test_count" and isinstance(v, float))
    return f"{result['run']} ({result['task']}): held-out {metrics} on {n} images of {result['scored']}, " \
           f"{result['weights']} weights, {result['precision']}"


def cmd_eval(args) -> int:
    from ..train.run import load_run
    run = load_run(args.run, args.weights)
    result = evaluate_run(run, args.data, args.batch_size, args.amp)
    print(json.dumps(result) if args.json else describe(result))
    return 0


def pretrained_classifier(spec: str):
    """(model, one-image transform, class names) of a classifier straight from the hub: ``hf:org/name``
    (a ViT or DeiT checkpoint, its architecture read from its config) or a model name with a default
    source; preprocessed as its own files say (`PretrainedCfg`), classes from its id2label / label_names."""
    from ..data import model_input_transform
    from ..weights import hub
    from ..weights.load import from_checkpoint
    from ..weights.sources import load_pretrained
    model = (from_checkpoint(spec) if hub.is_hub_id(spec) else load_pretrained(spec)).eval()
    pc = model.pretrained_cfg
    if not getattr(model, "num_classes", 0):
        raise CLIError(f"{spec} has no classifier head (a backbone): fine-tune it first, "
                       f"`vitkit train --init {spec} --data imagefolder:DIR --out RUN`")
    _, h, w = pc.input_size or model.input_size
    mean, std = pc.mean or (0.5,) * 3, pc.std or (0.5,) * 3
    tf = model_input_transform((h, w), mean, std, crop_pct=pc.crop_pct, interpolation=pc.interpolation,
                               crop_mode=pc.crop_mode or "center")
    names = list(pc.label_names) if pc.label_names else [str(i) for i in range(model.num_classes)]
    return model, tf, names


def cmd_predict(args) -> int:
    from ..train.run import load_run
    from ..weights import hub
    from ..weights.sources import SOURCES
    if hub.is_hub_id(args.run) or (args.run in SOURCES and not Path(args.run).exists()):
        model, tf, names = pretrained_classifier(args.run)
        return rank_images(args.images, model.input_size[0], tf,
                           lambda x: model(x).float().softmax(-1)[0], names, args.topk)
    run = load_run(args.run, args.weights)
    run.needs(("classifier",), "predict")
    from ..train.precision import autocast
    dtype = run.amp(args.amp)

    def probs(x):
        with autocast("cpu", dtype):
            return run.model(x).float().softmax(-1)[0]
    return rank_images(args.images, run.input_size[0], run.input_transform(), probs, run.classes, args.topk)


def cmd_info(args) -> int:
    from ..train import checkpoint as ckpt
    from ..train.run import KIND_USE, load_run
    run = load_run(args.run)
    cfg, c = run.train_cfg, run.config
    epochs = [r for r in ckpt.read_metrics(run.path) if r.get("kind") == "epoch"]
    what = cfg.model if cfg.task == "classify" and not cfg.probe else (
        f"linear probe on {cfg.model}" if cfg.probe else f"{cfg.task} ({type(run.model).__name__}, backbone {cfg.model})")
    print(f"run:      {run.path}")
    print(f"model:    {what}, {c.get('num_params', 0) / 1e6:.2f}M params, input {run.input_size}")
    print(f"kind:     {run.kind}: {KIND_USE[run.kind]}")
    print(f"data:     {cfg.data}, classes {run.classes}")
    print(f"training: {cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr}, seed {cfg.seed}"
          + (f", from {cfg.init}" if cfg.init else "") + f"; weights evaluated: {run.weights}")
    if epochs:
        last = epochs[-1]
        held_out = ", ".join(f"{k[5:]} {v:.2%}" if k == "test_acc" else f"{k[5:]} {v:.4g}" for k, v in last.items()
                             if k.startswith("test_") and k != "test_count" and isinstance(v, (int, float)))
        print(f"last epoch {last.get('epoch')} of {cfg.epochs}: train loss {last.get('train_loss', float('nan')):.4f}"
              + (f"; held-out {held_out}" if held_out else ""))
    for name in sorted(p.name for p in run.path.iterdir() if p.is_file()):
        print(f"  {name:<24} {(run.path / name).stat().st_size / 1e3:>10.1f} kB")
    return 0


def task_pictures(run_dir: str | Path) -> dict:
    """The pictures of a pretraining run (MAE reconstructions, generated samples...), where the task has any."""
    from ..train.pictures import task_pictures as draw
    pictures = draw(run_dir)
    if pictures:
        print(f"vitkit: pictures: {', '.join(str(p) for p in pictures.values())}")
    return pictures


def report(run_dir: str | Path, weights: str | None = None) -> dict:
    """Evaluate a run folder on its test split, write its pictures, report.json and index.html (one page
    with every picture, the metrics per epoch and the config); returns the summary.

    A classifier gets curves, confusion matrix, the held-out images it gets wrong, attention rollout
    and embeddings; other runs their task's pictures (`vitkit.train.pictures`), where it has any.
    """
    from ..train import checkpoint as ckpt
    from ..train.precision import precision_name
    from ..train.run import load_run
    from ..viz.page import write_run_page
    run = load_run(run_dir, weights)
    if run.kind == "classifier":
        summary, pictures = _classifier_pictures(run)
    else:
        result = evaluate_run(run)
        summary = {k: v for k, v in result.items() if k.startswith("test_") or k == "weights"}
        from ..train.pictures import task_pictures as draw
        pictures = draw(run.path)
    summary["precision"] = precision_name(run.amp())
    summary["pictures"] = {k: str(v) for k, v in pictures.items()}
    ckpt.atomic_write_bytes(run.path / "report.json", (json.dumps(summary, indent=2) + "\n").encode())
    epochs = [r for r in ckpt.read_metrics(run.path) if r.get("kind") == "epoch"]
    page = write_run_page(run.path, summary, run.config, epochs, pictures)
    if pictures:
        print(f"vitkit: pictures: {', '.join(str(p) for p in pictures.values())}; page: {page}")
    else:
        print(f"vitkit: a {run.train_cfg.task} run has no pictures; {run.path / 'report.json'} holds its "
              f"held-out metrics; page: {page}")
    return summary


ERROR_GRID = 32
"""At most this many misclassified held-out images in errors.png."""


def _classifier_pictures(run) -> tuple[dict, dict]:
    """(summary, pictures) of a classifier run: one pass over the test split gives the logits, the
    first images for the rollout and the misclassified ones for the error grid."""
    import torch

    from ..train import checkpoint as ckpt
    from ..train.precision import autocast
    from ..viz.images import plot_errors
    from ..viz.report import classification_pictures
    model, dtype = run.model.eval(), run.amp()
    logits, labels, wrong, first = [], [], [], None
    n_wrong = 0
    with torch.no_grad():
        for x, y in run.eval_loader():
            with autocast("cpu", dtype):
                out = model(x).float()
            first = x[:8] if first is None else first
            miss = out.argmax(1) != y
            n_wrong += int(miss.sum())
            if miss.any() and sum(len(w[0]) for w in wrong) < ERROR_GRID:
                wrong.append((x[miss], out[miss].argmax(1), y[miss]))
            logits.append(out)
            labels.append(y)
    logits, labels = torch.cat(logits), torch.cat(labels)
    pictures = classification_pictures(run.path, model, logits, labels, first, run.classes, run.mean, run.std,
                                       run.path / ckpt.METRICS_FILE)
    if wrong:
        images = torch.cat([w[0] for w in wrong])[:ERROR_GRID]
        pred = [run.classes[i] for i in torch.cat([w[1] for w in wrong])[:ERROR_GRID].tolist()]
        true = [run.classes[i] for i in torch.cat([w[2] for w in wrong])[:ERROR_GRID].tolist()]
    else:
        images, pred, true = first[:0], [], []
    pictures["errors"] = plot_errors(images, pred, true, run.path / "errors.png", run.mean, run.std, total=n_wrong)
    acc = int((logits.argmax(1) == labels).sum()) / len(labels)
    return {"test_acc": acc, "test_count": len(labels), "test_wrong": n_wrong, "weights": run.weights}, pictures
