"""One run from a `TrainConfig` (any task, see `vitkit.train.tasks`), and a finished run folder loaded back.

    model, task, loaders, bundle = build_run(cfg)      # what `vitkit train` fits
    run = load_run("runs/demo")                        # what `vitkit eval/predict/info` use

The run folder's config.json holds the TrainConfig fields plus ``meta``: the model's full config,
the class names and the normalisation statistics, so a run can be used without its dataset.
"""
from __future__ import annotations

import dataclasses
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


def build_loaders(cfg: TrainConfig, bundle: vdata.DataBundle) -> dict:
    """Train loader (augmented, shuffled, this rank's shard) and test loader (every image once)."""
    per_rank = cfg.batch_size // dist.world_size()
    if len(bundle.train) < cfg.batch_size:
        raise ValueError(f"the training split has {len(bundle.train)} images, fewer than one batch "
                         f"(batch_size {cfg.batch_size}); lower --batch-size")
    train = vdata.make_loader(bundle.train, batch_size=per_rank, shuffle=True, drop_last=True,
                              seed=cfg.seed, transform=vdata.train_transform(bundle, cfg.img_size, **cfg.augment),
                              rank=dist.rank(), world_size=dist.world_size())
    # Each rank evaluates its own unpadded shard, so the all-reduced sums count every image once.
    test = vdata.make_loader(bundle.test, batch_size=max(per_rank, 256), shuffle=False, drop_last=False,
                             transform=vdata.eval_transform(bundle, cfg.img_size),
                             rank=dist.rank(), world_size=dist.world_size(), pad=False)
    return {"train": train, "test": test}


def build_run(cfg: TrainConfig):
    """-> (model, task, loaders, bundle, meta) for ``fit(model, task, loaders, cfg, meta)``.

    ``model`` is what the trainer optimises and saves for ``cfg.task`` (a classifier, or a
    pretraining wrapper holding the backbone); see `vitkit.train.tasks`.
    """
    bundle = vdata.build(cfg.data, split_seed=cfg.seed if cfg.data.startswith("imagefolder") else 0)
    if cfg.labels_per_class:
        bundle = dataclasses.replace(bundle, train=vdata.labelled_subset(bundle.train, cfg.labels_per_class,
                                                                         seed=cfg.seed))
    seed_everything(cfg.seed)  # the initial weights depend on the run's seed and nothing else
    info = DataInfo.from_bundle(bundle, cfg.img_size)
    model, task = build_task(cfg, info)
    meta = run_meta(model, bundle, cfg, info)
    if cfg.task == "clip":  # what `vitkit.load_clip` reads from config.json
        from ..weights.clip import clip_meta
        meta.update(clip_meta(model, task))
    return model, task, build_loaders(cfg, bundle), bundle, meta


def run_meta(model: nn.Module, bundle: vdata.DataBundle, cfg: TrainConfig, info: DataInfo | None = None) -> dict[str, Any]:
    """What config.json needs beyond the TrainConfig to rebuild and use the model on its own."""
    info = info or DataInfo.from_bundle(bundle, cfg.img_size)
    model_cfg = getattr(model, "cfg", None)
    return {"model_config": dataclasses.asdict(model_cfg) if dataclasses.is_dataclass(model_cfg) else None,
            "classes": list(bundle.classes), "mean": list(bundle.mean), "std": list(bundle.std),
            "in_chans": bundle.in_chans, "data_img_size": list(info.img_size),
            "input_size": list(getattr(model, "input_size", None) or ()),
            "train_count": len(bundle.train),
            "num_params": sum(p.numel() for p in model.parameters()),
            "num_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


@dataclass
class Run:
    """A trained run folder: its config, the model with the weights it was evaluated with."""
    path: Path
    config: dict
    train_cfg: TrainConfig
    model: nn.Module
    weights: str  # "ema" or "model"

    @property
    def classes(self) -> list[str]:
        return self.config["classes"]

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.config["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.config["std"])

    def test_loader(self, spec: str | None = None, batch_size: int = 256):
        """The held-out split of the run's data (or of ``spec``), transformed as in evaluation."""
        bundle = vdata.build(spec or self.train_cfg.data)
        return vdata.make_loader(bundle.test, batch_size=batch_size,
                                 transform=vdata.eval_transform(bundle, self.train_cfg.img_size))


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Correct / count as a Python float (the same arithmetic as the trainer's evaluation)."""
    return int((logits.argmax(1) == labels).sum()) / len(labels)


def load_run(path: str | Path, weights: str | None = None, device: str = "cpu") -> Run:
    """Load a run folder written by `fit`. ``weights``: "ema", "model" or None (the evaluated ones)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {path} does not exist (train one with `vitkit train --out {path}`)")
    if not (path / ckpt.CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{path} has no {ckpt.CONFIG_FILE}: it is not a vitkit run folder")
    config = ckpt.read_config(path)
    train_cfg = TrainConfig.from_run_config(config)
    if "data_img_size" not in config:  # runs written before task builders: the model's own input size
        config = {**config, "data_img_size": config["input_size"][1:]}
    rebuild = train_cfg.replace(init=None)
    if train_cfg.task == "distill":  # the student alone: its teacher is not needed to use it
        rebuild = rebuild.replace(task="classify", task_args={})
    with torch.random.fork_rng():  # building draws initial weights; leave the caller's RNG alone
        model, _ = build_task(rebuild, DataInfo.from_meta(config))
    if weights is None:
        weights = "ema" if train_cfg.ema_decay else "model"
    ckpt.load_model_state(model, ckpt.load_run_weights(path, weights))
    return Run(path, config, train_cfg, model.to(device).eval(), weights)


@torch.no_grad()
def predict_batches(model: nn.Module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, K), labels (N,)) over a loader, in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    logits, labels = [], []
    for x, y in loader:
        logits.append(model(x.to(device)).float().cpu())
        labels.append(y)
    return torch.cat(logits), torch.cat(labels)
