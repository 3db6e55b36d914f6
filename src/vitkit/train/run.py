"""One run from a `TrainConfig` (any task, see `vitkit.train.tasks`), and a finished run folder loaded back.

    model, task, loaders, bundle = build_run(cfg)      # what `vitkit train` fits
    run = load_run("runs/demo")                        # what `vitkit eval/predict/info` use

The run folder's config.json holds the TrainConfig fields plus ``meta``: the model's full config,
the class names and the normalisation statistics, so a run can be used without its dataset.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import data as vdata
from . import checkpoint as ckpt
from . import distributed as dist
from .config import TrainConfig
from .tasks import DataInfo, build_task
from .trainer import seed_everything


def loader_preprocessing(bundle: vdata.DataBundle, pretrained: Any = None) -> dict[str, Any]:
    """The normalisation and eval crop the loaders use: a checkpoint's (``pretrained``: its
    ``PretrainedCfg`` or that as a dict, e.g. ``model.pretrained_cfg``) where it states them, else the
    bundle's statistics, and for images kept at their own sizes crop_pct 0.875 (timm, DeiT), bicubic."""
    get = pretrained.get if isinstance(pretrained, dict) else (lambda k: getattr(pretrained, k, None))
    mean, std = get("mean"), get("std")
    if mean is None or std is None or len(mean) != bundle.in_chans:
        mean, std = bundle.mean, bundle.std  # no statistics, or a checkpoint for other channels
    out = {"mean": tuple(mean), "std": tuple(std), "crop_pct": None, "crop_mode": "center", "interpolation": None}
    if pretrained is not None:
        interp = get("interpolation")
        out.update(crop_pct=get("crop_pct"), crop_mode=get("crop_mode") or "center",
                   interpolation=interp if interp in vdata.transforms.INTERPOLATIONS else None)
    return out


def build_loaders(cfg: TrainConfig, bundle: vdata.DataBundle, img_size: int | tuple[int, int] | None = None,
                  pretrained: Any = None) -> dict:
    """Train loader (augmented, shuffled, this rank's shard) and test loader (every image once).

    img_size: the size the model takes (default: ``cfg.img_size``, else the bundle's). pretrained: the
    checkpoint's preprocessing (`loader_preprocessing`): its mean/std normalise both loaders, its crop_pct /
    crop_mode / interpolation make the eval crop. Images kept at their own sizes (an image folder of photos)
    are cropped per image in ``cfg.num_workers`` worker processes (None: `vdata.default_num_workers`).
    """
    per_rank = cfg.batch_size // dist.world_size()
    if len(bundle.train) < cfg.batch_size:
        raise ValueError(f"the training split has {len(bundle.train)} images, fewer than one batch "
                         f"(batch_size {cfg.batch_size}); lower --batch-size")
    size = img_size or cfg.img_size
    pre = loader_preprocessing(bundle, pretrained)
    augment = dict(cfg.augment)
    if bundle.keep_original and pre["interpolation"] and "interpolation" not in augment:
        augment["interpolation"] = pre["interpolation"]  # train with the checkpoint's resampling too
    workers = getattr(cfg, "num_workers", None)
    workers = {split: vdata.default_num_workers(ds) if workers is None else int(workers)
               for split, ds in (("train", bundle.train), ("test", bundle.test))}
    train = vdata.make_loader(bundle.train, batch_size=per_rank, shuffle=True, drop_last=True, seed=cfg.seed,
                              transform=vdata.train_transform(bundle, size, mean=pre["mean"], std=pre["std"],
                                                              **augment),
                              rank=dist.rank(), world_size=dist.world_size(), num_workers=workers["train"],
                              repeats=cfg.repeated_aug)
    # One-size data is resized whole, as in training; photos are resized and centre-cropped (the checkpoint's
    # crop_pct, else 0.875). Each rank evaluates its own unpadded shard, so the all-reduced sums count every
    # image once.
    crop = dict(crop_pct=pre["crop_pct"], crop_mode=pre["crop_mode"], interpolation=pre["interpolation"]) \
        if bundle.keep_original else {}
    test = vdata.make_loader(bundle.test, batch_size=max(per_rank, 256), shuffle=False, drop_last=False,
                             transform=vdata.eval_transform(bundle, size, mean=pre["mean"], std=pre["std"], **crop),
                             rank=dist.rank(), world_size=dist.world_size(), pad=False,
                             num_workers=workers["test"])
    return {"train": train, "test": test}


def build_run(cfg: TrainConfig):
    """-> (model, task, loaders, bundle, meta) for ``fit(model, task, loaders, cfg, meta)``.

    ``model`` is what the trainer optimises and saves for ``cfg.task`` (a classifier, or a
    pretraining wrapper holding the backbone); see `vitkit.train.tasks`.
    """
    if cfg.probe and not cfg.init:
        raise ValueError("a linear probe freezes its backbone, so it needs pretrained weights: add --init RUN "
                         "(a pretraining or classifier run) or --init WEIGHTS (a file or checkpoint folder)")
    bundle = build_data(cfg)
    if cfg.labels_per_class:
        bundle = dataclasses.replace(bundle, train=vdata.labelled_subset(bundle.train, cfg.labels_per_class,
                                                                         seed=cfg.seed))
    seed_everything(cfg.seed)  # the initial weights depend on the run's seed and nothing else
    info = DataInfo.from_bundle(bundle, target_size(cfg, bundle))
    model, task = build_task(cfg, info)
    pretrained = pretrained_cfg_of(model)
    meta = run_meta(model, bundle, cfg, info, loader_preprocessing(bundle, pretrained))
    if pretrained is not None:
        meta["pretrained_cfg"] = pretrained.to_dict()
    if cfg.task == "clip":  # what `vitkit.load_clip` reads from config.json
        from ..weights.clip import clip_meta
        meta.update(clip_meta(model, task))
    return model, task, build_loaders(cfg, bundle, info.img_size, pretrained), bundle, meta


def build_data(cfg: TrainConfig) -> vdata.DataBundle:
    """The run's data: an image folder is split by the run's seed and, given --img-size, decoded at it."""
    extra = {"img_size": cfg.img_size} if cfg.img_size and _is_folder(cfg.data) else {}
    return vdata.build(cfg.data, split_seed=_split_seed(cfg), **extra)


def target_size(cfg: TrainConfig, bundle: vdata.DataBundle) -> tuple[int, int]:
    """The image size the model is built for: --img-size; else, fine-tuning a vitkit run (--init RUN), that
    run's size; else, fine-tuning a checkpoint or training on photos of mixed sizes, the registered
    model's own input size (ViT-Ti/16: 224), which a pretrained checkpoint was made for; else the
    data's size (a model trained from scratch on 28x28 digits)."""
    from .tasks import _is_run_folder
    if cfg.img_size:
        return cfg.img_size, cfg.img_size
    if cfg.init and Path(cfg.init).is_dir() and _is_run_folder(Path(cfg.init)):
        size = ckpt.read_config(cfg.init).get("data_img_size")
        if size:
            return tuple(int(v) for v in size)
    if cfg.init or bundle.keep_original:
        from ..models import create_model
        own = getattr(create_model(cfg.model, device="meta", **cfg.model_args), "input_size", None)
        if own is not None:
            return tuple(int(v) for v in own[1:])
    return tuple(bundle.img_size)


def pretrained_cfg_of(model: nn.Module):
    """The `PretrainedCfg` the model (or the backbone a wrapper holds) was loaded with, if any."""
    for m in (model, getattr(model, "backbone", None)):
        if getattr(m, "pretrained_cfg", None) is not None:
            return m.pretrained_cfg
    return None


def _is_folder(spec: str) -> bool:
    return spec.partition(":")[0].strip().lower() == "imagefolder"


def run_meta(model: nn.Module, bundle: vdata.DataBundle, cfg: TrainConfig, info: DataInfo | None = None,
             preprocess: dict | None = None) -> dict[str, Any]:
    """What config.json needs beyond the TrainConfig to rebuild and use the model on its own: among it the
    normalisation the loaders used and, for photos kept at their own sizes, the eval crop
    (``preprocess``: `loader_preprocessing`), so eval and predict preprocess as training's test loader."""
    from .precision import host, precision_name, resolve_amp
    from .trainer import resolve_device
    info = info or DataInfo.from_bundle(bundle, cfg.img_size)
    pre = preprocess or loader_preprocessing(bundle)
    device = resolve_device(cfg.device)
    model_cfg = getattr(model, "cfg", None)
    crop = ({"crop_pct": pre["crop_pct"] or vdata.photo.DEFAULT_CROP_PCT, "crop_mode": pre["crop_mode"],
             "interpolation": pre["interpolation"] or vdata.photo.DEFAULT_INTERPOLATION}
            if bundle.keep_original else {})
    return {"model_config": dataclasses.asdict(model_cfg) if dataclasses.is_dataclass(model_cfg) else None,
            "classes": list(bundle.classes), "mean": list(pre["mean"]), "std": list(pre["std"]),
            "eval_crop": crop or None,
            "in_chans": bundle.in_chans, "data_img_size": list(info.img_size),
            "input_size": list(getattr(model, "input_size", None) or ()),
            "train_count": len(bundle.train),
            "num_params": sum(p.numel() for p in model.parameters()),
            "num_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "host": host(device), "precision": precision_name(resolve_amp(cfg.amp, device))}


CLASSIFIER_TASKS = ("classify", "distill", "diverse_patch", "sparsevit_adapt")
"""Tasks whose saved model maps images to logits over the run's classes."""

KIND_USE = {
    "classifier": "`vitkit predict RUN IMAGE...` classifies images with it",
    "clip": "`vitkit zero-shot RUN IMAGE... --labels a,b` classifies images with it by text labels",
    "generator": "`vitkit generate RUN` samples images from it",
    "tokenizer": "it feeds `vitkit pretrain --task ar|var|hart --set task_args.tokenizer=RUN`, and "
                 "`vitkit report RUN` draws its reconstructions",
    "pretraining": "fine-tune it into a classifier first: `vitkit train --init RUN --out NEW_RUN`",
    "other": "`vitkit eval RUN` scores it with its task's metrics",
}
"""What serves a run of each kind: the hint an error gives when a command does not apply to it."""


def run_kind(task: str) -> str:
    """classifier | clip | generator | tokenizer | pretraining (mae, simclr, mocov3) | other."""
    from .tasks import GENERATORS
    if task in CLASSIFIER_TASKS:
        return "classifier"
    if task == "clip":
        return "clip"
    if task in GENERATORS:
        return "generator"
    if task == "vq":
        return "tokenizer"
    return "pretraining" if task in ("mae", "simclr", "mocov3") else "other"


@dataclass
class Run:
    """A trained run folder: its config, the model with the weights it was evaluated with, and its task."""
    path: Path
    config: dict
    train_cfg: TrainConfig
    model: nn.Module
    weights: str  # "ema" or "model"
    task: Any = None  # the task object (loss / eval_metrics) the run was trained with

    @property
    def classes(self) -> list[str]:
        return self.config["classes"]

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.config["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.config["std"])

    @property
    def kind(self) -> str:
        """What the run's model is (`run_kind`); a linear probe is a classifier."""
        return run_kind(self.train_cfg.task)

    def amp(self, override: str | None = None) -> torch.dtype | None:
        """The autocast dtype to use it with on this host: ``override`` (an amp name), else the run's own."""
        from .precision import resolve_amp
        return resolve_amp(override or self.train_cfg.amp, next(self.model.parameters()).device)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model takes."""
        size = self.config.get("input_size") or [self.config["in_chans"], *self.config["data_img_size"]]
        return tuple(int(v) for v in size)

    def needs(self, kinds: tuple[str, ...], command: str) -> None:
        """Raise ValueError naming the run's kind, what ``command`` needs, and what serves this run."""
        if self.kind in kinds:
            return
        names = {"classifier": "a classifier run (vitkit train)", "clip": "a CLIP run (vitkit pretrain --task clip)",
                 "generator": "a generator run (vitkit pretrain --task ar|var|hart)",
                 "tokenizer": "a tokenizer run (vitkit pretrain --task vq)",
                 "pretraining": "a pretraining run (mae, simclr, mocov3)"}
        want = " or ".join(names.get(k, k) for k in kinds)
        raise ValueError(f"{self.path} is a {self.train_cfg.task!r} run; `vitkit {command}` needs {want}. "
                         f"For this run, {KIND_USE[self.kind]}")

    def eval_loader(self, spec: str | None = None, batch_size: int = 256):
        """Held-out images labelled by the run's classes, transformed as in evaluation (the run's
        image size and normalisation).

        ``spec`` None: the run's own test split (the same split the trainer scored). Another spec is
        matched to the run's classes by name: an ``imagefolder:DIR`` gives every image of DIR (or of
        DIR/test when it has its own split); a built-in dataset its test split. A class the run does
        not know raises ValueError naming it.
        """
        cfg = self.train_cfg
        c, h, w = self.input_size
        crop = self.config.get("eval_crop")
        if spec is None or spec == cfg.data:
            dataset = build_data(cfg).test
        elif _is_folder(spec):
            from ..data.folder import evaluation_images
            dataset = evaluation_images(spec.partition(":")[2], self.classes, c,
                                        None if crop else tuple(self.config["data_img_size"]))
        else:
            bundle = vdata.build(spec)
            unknown = [name for name in bundle.classes if name not in self.classes]
            if unknown:
                raise ValueError(f"the classes {unknown} of {spec} are not among the run's classes {self.classes}: "
                                 "top-1 would compare unrelated labels")
            if bundle.in_chans != c:
                raise ValueError(f"{spec} has {bundle.in_chans}-channel images, the run's model takes {c}")
            index = torch.tensor([self.classes.index(name) for name in bundle.classes])
            test = bundle.test
            dataset = vdata.TensorImageDataset(test.images, index[test.labels], test.max_value)
        return vdata.make_loader(dataset, batch_size=batch_size, transform=self.input_transform(),
                                 num_workers=vdata.default_num_workers(dataset))

    def input_transform(self):
        """Images in [0, 1] -> what the model takes, as the run's test loader prepared them: resized to the
        model's size and normalised with the run's statistics; photos resized and centre-cropped (the
        run's eval crop). Takes a batch (B, C, H, W), or one image of any size for photo runs."""
        _, h, w = self.input_size
        crop = self.config.get("eval_crop") or {}
        return vdata.model_input_transform((h, w), self.mean, self.std, crop_pct=crop.get("crop_pct"),
                                           interpolation=crop.get("interpolation"),
                                           crop_mode=crop.get("crop_mode") or "center")

    def test_loader(self, spec: str | None = None, batch_size: int = 256):
        """The held-out split of the run's data (or of ``spec``): `eval_loader`."""
        return self.eval_loader(spec, batch_size)


def _split_seed(cfg: TrainConfig) -> int:
    """The split seed `build_run` used: an image folder's 80/20 split follows the run's seed."""
    return cfg.seed if _is_folder(cfg.data) else 0


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Correct / count as a Python float (the same arithmetic as the trainer's evaluation)."""
    return int((logits.argmax(1) == labels).sum()) / len(labels)


def resolve_run_dir(path: str | Path) -> Path:
    """The run folder ``path`` names: the folder itself, or the folder of a file in it (RUN/config.json)."""
    path = Path(path)
    if path.is_file() and (path.parent / ckpt.CONFIG_FILE).is_file():
        return path.parent
    if not path.exists():
        raise FileNotFoundError(f"run folder {path} does not exist (train one with `vitkit train --out {path}`)")
    if not path.is_dir():
        raise ValueError(f"{path} is a file, not a run folder (a folder written by `vitkit train --out`)")
    if not (path / ckpt.CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{path} has no {ckpt.CONFIG_FILE}: it is not a vitkit run folder")
    return path


def _check_is_run(path: Path, config: dict) -> None:
    """A ValueError naming the kind of a checkpoint folder (`vitkit convert`'s, HF's, timm's) given where a
    run folder is expected: both hold config.json and model.safetensors, only a run has a training config."""
    if all(k in config for k in ("task", "data", "epochs")):  # TrainConfig fields: a run (which may also
        return                                                # carry its --init source's config keys)
    kind = ("vitkit" if config.get("format") == "vitkit" else "hf" if "model_type" in config
            else "timm" if "architecture" in config or "pretrained_cfg" in config else None)
    what = f"a {kind} checkpoint folder" if kind else "not a folder written by `vitkit train`"
    raise ValueError(f"{path} is {what}, not a training run, which this reads (eval, predict, report, serve, "
                     f"--teacher: the folder of a `vitkit train` run). Start a run from its weights: `vitkit train "
                     f"--init {path} --data ...`")


def load_run(path: str | Path, weights: str | None = None, device: str = "cpu") -> Run:
    """Load a run folder written by `fit`. ``weights``: "ema", "model" or None (the evaluated ones).

    ``path`` may also name a file inside the folder (``RUN/config.json``). The shipped
    model.safetensors is checked even when the EMA weights are the ones loaded. A folder without
    its EMA weights (model_ema.safetensors, train_state.pt) loads model.safetensors, with a warning,
    unless ``weights="ema"`` asks for them.
    """
    path = resolve_run_dir(path)
    config = ckpt.read_config(path)
    _check_is_run(path, config)
    try:
        train_cfg = TrainConfig.from_run_config(config)
    except ValueError as e:
        raise ValueError(f"{path / ckpt.CONFIG_FILE}: {e}") from None
    if "data_img_size" not in config:  # runs written before task builders: the model's own input size
        config = {**config, "data_img_size": config["input_size"][1:]}
    rebuild = train_cfg.replace(init=None)
    if train_cfg.task == "distill":  # the student alone: its teacher is not needed to use it
        rebuild = rebuild.replace(task="classify", task_args={})
    with torch.random.fork_rng():  # building draws initial weights; leave the caller's RNG alone
        model, task = build_task(rebuild, DataInfo.from_meta(config))
    ckpt.check_weights_file(path / ckpt.MODEL_FILE)
    if weights is None:
        weights = "ema" if train_cfg.ema_decay else "model"
        if weights == "ema" and not ((path / ckpt.EMA_FILE).is_file() or (path / ckpt.STATE_FILE).is_file()):
            warnings.warn(f"{path} has no EMA weights ({ckpt.EMA_FILE} or {ckpt.STATE_FILE}); using "
                          f"{ckpt.MODEL_FILE}, the raw weights", stacklevel=2)
            weights = "model"
    ckpt.load_model_state(model, ckpt.load_run_weights(path, weights))
    return Run(path, config, train_cfg, model.to(device).eval(), weights, task)


@torch.no_grad()
def predict_batches(model: nn.Module, loader, amp: str | torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, K) fp32, labels (N,)) over a loader, in eval mode, under ``amp``'s autocast."""
    from .precision import autocast
    model.eval()
    device = next(model.parameters()).device
    logits, labels = [], []
    for x, y in loader:
        with autocast(device, amp):
            logits.append(model(x.to(device)).float().cpu())
        labels.append(y)
    return torch.cat(logits), torch.cat(labels)
