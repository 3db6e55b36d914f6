"""``vitkit generate`` (sample a grid from an ar / var / hart run) and ``vitkit zero-shot`` (CLIP labels)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .common import CLIError, rank_images


def cmd_generate(args) -> int:
    import torch

    from ..train.run import load_run
    from ..viz import image_grid
    run = load_run(args.run)
    run.needs(("generator",), "generate")
    k = len(run.classes)
    if args.cls is None:
        labels = torch.arange(args.n) % k  # every class in turn: one class per column of the grid
    else:
        if args.cls not in run.classes:
            raise CLIError(f"--class {args.cls!r} is not one of the run's classes {run.classes}")
        labels = torch.full((args.n,), run.classes.index(args.cls))
    out = Path(args.out or run.path / "samples.png")
    sampling = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                "cfg_scale": args.cfg_scale, "generator": torch.Generator().manual_seed(args.seed)}
    if run.train_cfg.task_args.get("order") == "masked":
        sampling["steps"] = args.steps
    from ..train.precision import autocast
    t0 = time.perf_counter()
    with autocast("cpu", run.amp(args.amp)):
        images = run.model.generate(labels, **sampling).float()
    seconds = time.perf_counter() - t0
    image_grid(images, k if args.cls is None else min(8, args.n), out, run.mean, run.std, scale=args.scale)
    passes = getattr(run.model.generator, "last_forward_passes", None)
    print(f"vitkit: {args.n} samples -> {out} ({seconds / args.n * 1e3:.1f} ms/image"
          + (f", {passes} transformer forward passes" if passes is not None else "") + ")")
    return 0


def _clip_normalisation(src: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The image normalisation of a CLIP: a vitkit run's data statistics, a HF folder's preprocessor
    config, else OpenAI CLIP's."""
    from ..weights import hub
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
    from ..tasks.clip import zero_shot_predict
    from ..train import checkpoint as ckpt
    from ..train.run import KIND_USE, resolve_run_dir, run_kind
    from ..train.tasks import _is_run_folder
    from ..weights.clip import load_clip
    path = Path(args.run)
    if path.exists():
        path = resolve_run_dir(path) if path.is_file() else path
        if _is_run_folder(path):
            task = ckpt.read_config(path).get("task")
            if run_kind(task) != "clip":
                raise CLIError(f"{path} is a {task!r} run; `vitkit zero-shot` needs a CLIP run (vitkit pretrain "
                               f"--task clip) or a HF CLIPModel folder. For this run, {KIND_USE[run_kind(task)]}")
    labels = [x.strip() for x in args.labels.split(",") if x.strip()]
    if not labels:
        raise CLIError("--labels needs at least one label, e.g. --labels \"cat,dog\"")
    templates = None
    if args.templates:
        templates = [line.strip() for line in Path(args.templates).read_text().splitlines() if line.strip()]
        if not templates:
            raise CLIError(f"{args.templates} holds no templates (one per line, with {{}} for the label)")
    model = load_clip(str(path) if path.exists() else args.run)
    mean, std = _clip_normalisation(str(path) if path.exists() else args.run)
    from ..train.precision import autocast
    amp = args.amp or ((ckpt.read_config(path).get("amp") if _is_run_folder(path) else None) if path.exists() else None)

    def probs(x):
        with autocast("cpu", amp):
            return zero_shot_predict(model, x, labels, templates)[0].float()
    from ..data import model_input_transform
    c, h, w = model.input_size
    return rank_images(args.images, c, model_input_transform((h, w), mean, std), probs, labels, args.topk)
