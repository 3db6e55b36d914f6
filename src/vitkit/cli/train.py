"""``vitkit train`` and ``vitkit pretrain``: a TrainConfig from a file and flags, a run folder kept safe.

    vitkit train --config configs/demo_mnist.yaml --out runs/demo
    vitkit train --resume --out runs/demo          # the run's own config.json; flags change it
    vitkit train ... --out runs/demo --overwrite   # replace the run already there

A folder that already holds a run is never overwritten without ``--overwrite``; ``--resume`` on a
folder with no checkpoint, or with fewer epochs than it already trained, is an error.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .common import AMP_CHOICES, AMP_HELP, CLIError, nonneg_float, nonneg_int, one_line, positive_float, positive_int

TRAIN_FLAGS = {  # flag -> TrainConfig field
    "model": "model", "data": "data", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
    "img_size": "img_size", "device": "device", "out": "out", "seed": "seed", "ema": "ema_decay",
    "warmup": "warmup_epochs", "weight_decay": "weight_decay", "threads": "num_threads",
    "task": "task", "init": "init", "labels_per_class": "labels_per_class", "amp": "amp", "workers": "num_workers",
}
DEFAULT_OUT = "runs/default"


def add_train_flags(t: argparse.ArgumentParser) -> None:
    t.add_argument("--config", help="YAML/JSON file of TrainConfig fields (flags override it)")
    t.add_argument("--model", help="registered model name (see `vitkit models`): the classifier or the backbone")
    t.add_argument("--task", help="classify | distill | diverse_patch | sparsevit_adapt (train); "
                   "mae | simclr | mocov3 | clip | vq | ar | var | hart (pretrain)")
    t.add_argument("--data", help="mnist5k | digits | imagefolder:PATH | cifar10:PATH")
    t.add_argument("--labels-per-class", type=positive_int, dest="labels_per_class",
                   help="train on this many labelled images per class (a seeded draw)")
    t.add_argument("--init", help="start from this backbone (fine-tuning): a run folder, a weights file, a checkpoint "
                   "folder (e.g. written by `vitkit convert`), hf:org/name[@rev] (downloaded and cached), or a "
                   "model name with a default source (`vitkit models --pretrained`)")
    t.add_argument("--probe", action="store_true",
                   help="linear probe: freeze the --init backbone, train a BatchNorm + linear head")
    t.add_argument("--teacher", help="DeiT distillation from this classifier: a run folder, hf:org/name, or a model "
                   "name with a default source (task distill); "
                   "tune it with --set task_args.kind=soft|hard, task_args.tau, task_args.alpha")
    t.add_argument("--epochs", type=positive_int)
    t.add_argument("--batch-size", type=positive_int, dest="batch_size", help="global batch size")
    t.add_argument("--lr", type=positive_float, help="peak learning rate")
    t.add_argument("--warmup", type=nonneg_float, help="warmup epochs")
    t.add_argument("--weight-decay", type=nonneg_float, dest="weight_decay")
    t.add_argument("--img-size", type=positive_int, dest="img_size", help="train/eval image size (default: the data's)")
    t.add_argument("--ema", type=float, help="EMA decay of the weights, e.g. 0.999")
    t.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    t.add_argument("--amp", choices=AMP_CHOICES, help=AMP_HELP)
    t.add_argument("--threads", type=positive_int, help="torch CPU threads (at most the cores you have)")
    t.add_argument("--workers", type=nonneg_int, help="processes decoding an image folder (default: half the CPUs; "
                   "0 decodes in the training process)")
    t.add_argument("--out", help=f"run folder (default {DEFAULT_OUT})")
    t.add_argument("--seed", type=int)
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, with its own config (flags change it)")
    t.add_argument("--overwrite", action="store_true", help="replace the run already in --out (it is deleted)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any config field, e.g. --set model_args.depth=8 --set task_args.mask_ratio=0.5")
    t.add_argument("--no-report", action="store_true", help="skip the pictures after training")


# ---------------------------------------------------------------------------- the config
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
            if not isinstance(d, dict):
                raise CLIError(f"--set {item}: {p} was already given a value")
        d[leaf] = _scalar(value)
    return out


def _scalar(text: str):
    """A YAML value, with numbers YAML 1.1 leaves as strings (``3e-4``) read as numbers."""
    import yaml
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def read_config_file(path: str) -> dict:
    """The TrainConfig dict of a --config file, with one-line errors naming the file."""
    import yaml

    from ..train import TrainConfig
    try:
        return TrainConfig.from_file(path).to_dict()
    except FileNotFoundError:
        raise CLIError(f"--config {path}: no such file") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        raise CLIError(f"--config {path} is not valid YAML{at}: {one_line(getattr(e, 'problem', None) or e)}") from None
    except json.JSONDecodeError as e:
        raise CLIError(f"--config {path} is not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None


def train_config(args, base: dict | None = None):
    """TrainConfig from ``base`` (a resumed run's config), then --config, then the flags and --set."""
    from ..train import TrainConfig
    base = dict(base or {})
    if args.config:
        base.update(read_config_file(args.config))
    for flag, field in TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            base[field] = value
    base["resume"] = bool(args.resume)
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


# ---------------------------------------------------------------------------- the run folder
def out_folder(args) -> Path:
    """The run folder the command writes: --out, else the --config file's, else the default."""
    if args.out:
        return Path(args.out)
    if args.config:
        return Path(read_config_file(args.config).get("out") or DEFAULT_OUT)
    return Path(DEFAULT_OUT)


def holds_run(out: Path) -> bool:
    from ..train import checkpoint as ckpt
    return out.is_dir() and any((out / name).exists() for name in ckpt.RUN_FILES)


def resume_base(args, out: Path) -> dict:
    """The config a resumed run continues with (its config.json), or an error saying why there is none."""
    from ..train import TrainConfig
    from ..train import checkpoint as ckpt
    again = f"`vitkit {args.command} --out {out} ...` without --resume"
    if not out.is_dir():
        raise CLIError(f"nothing to resume: {out} does not exist; start the run with {again}")
    ckpt.recover(out)  # a checkpoint whose save was killed: committed or rolled back
    if not (out / ckpt.STATE_FILE).is_file():
        what = "was stopped before its first checkpoint" if (out / ckpt.CONFIG_FILE).is_file() else "holds no run"
        fix = " --overwrite" if holds_run(out) else ""
        raise CLIError(f"nothing to resume: {out} {what} (no {ckpt.STATE_FILE}); start it again with "
                       f"`vitkit {args.command} --out {out}{fix} ...`")
    base = TrainConfig.from_run_config(ckpt.read_config(out)).to_dict()
    return {**base, "out": str(out)}


def clear_run(out: Path) -> None:
    """Delete the files a run writes in ``out`` (for --overwrite); anything else in the folder stays."""
    from ..train import checkpoint as ckpt
    for name in (*ckpt.RUN_FILES, *ckpt.REPORT_FILES):
        (out / name).unlink(missing_ok=True)


def interrupt_hint(args) -> str:
    """What to tell a user who pressed Ctrl-C: how to continue, where a checkpoint exists."""
    if getattr(args, "command", None) not in ("train", "pretrain"):
        return ""
    try:  # no torch: the interrupt may have landed inside `import torch`
        out = Path(args.out) if args.out else None
        if out is None and args.config:
            import yaml
            out = Path((yaml.safe_load(Path(args.config).read_text()) or {}).get("out") or DEFAULT_OUT)
        out = out or Path(DEFAULT_OUT)
        if not (out / "train_state.pt").is_file():
            return f"; no checkpoint had been written to {out}"
        lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").is_file() else []
        epochs = [json.loads(x)["epoch"] for x in lines if '"kind": "epoch"' in x]
        after = f" after epoch {epochs[-1]}" if epochs else ""
        return f"; `vitkit {args.command} --resume --out {out}` continues{after}"
    except Exception:
        return ""


# ---------------------------------------------------------------------------- the command
def cmd_train(args) -> int:
    from ..train import checkpoint as ckpt
    from ..train import distributed as dist
    from ..train import fit
    from ..train.run import build_run, run_kind
    from ..train.trainer import resolve_device
    from .runs import report, task_pictures
    out = out_folder(args)
    if args.resume and args.overwrite:
        raise CLIError("--resume continues the run in --out, --overwrite replaces it: give one of them")
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; the run folder must be a directory")
    if args.resume:
        base = resume_base(args, out)
    elif holds_run(out) and not args.overwrite:
        epoch = ckpt.saved_epoch(out) if (out / ckpt.STATE_FILE).is_file() else None
        what = f"a run trained for {epoch} epoch(s)" if epoch else "a run"
        raise CLIError(f"{out} already holds {what}; continue it with `vitkit {args.command} --resume --out {out}`, "
                       f"or replace it with --overwrite (its files are deleted)")
    else:
        base = None
    cfg = train_config(args, base)
    if args.command == "pretrain" and run_kind(cfg.task) == "classifier":
        raise CLIError("pretrain needs --task (mae, simclr, mocov3, clip, vq, ar, var, hart); "
                       "supervised training is `vitkit train`")
    resolve_device(cfg.device)  # a missing GPU is named before any data is read
    if args.resume:
        ckpt.check_weights_file(out / ckpt.MODEL_FILE)  # a torn copy is named now, finished run or not
        done = ckpt.saved_epoch(out)
        if cfg.epochs < done:
            raise CLIError(f"{out} has already trained {done} epochs; --epochs {cfg.epochs} would train none. "
                           f"To train on, give --epochs greater than {done}")
        if cfg.epochs == done:
            print(f"vitkit: {out} has finished its {done} epochs; nothing to train (`vitkit eval {out}` scores it; "
                  f"--resume --epochs N with N > {done} trains on)")
            return 0
    dist.init_distributed()
    if args.overwrite and dist.is_main():
        clear_run(out)
    dist.barrier()
    model, task, loaders, bundle, meta = build_run(cfg)
    if dist.is_main():
        from ..train.tasks import GENERATORS
        what = (cfg.model if cfg.task == "classify" else cfg.task if cfg.task in (*GENERATORS, "vq")
                else f"{cfg.task} ({cfg.model})")
        print(f"vitkit: training {what}, {meta['num_trainable'] / 1e6:.2f}M trainable params, on {cfg.data} "
              f"({len(bundle.train)} train / {len(bundle.test)} test images) for {cfg.epochs} epochs "
              f"-> {cfg.out}", flush=True)
    t0 = time.time()
    result = fit(model, task, loaders, cfg, meta)
    seconds = time.time() - t0
    if dist.is_main():
        if "test_acc" in result and run_kind(cfg.task) == "classifier":
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
