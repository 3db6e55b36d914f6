"""TrainConfig: every knob of one training run, in one frozen dataclass.

Built from the CLI, from a YAML/JSON file (`TrainConfig.from_file`), or in code; saved with every
run (config.json) so the run can be rebuilt and resumed. Values are checked once, here, so the
trainer can trust them.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AMP_MODES = (None, "none", "auto", "bf16", "fp16")  # see vitkit.train.precision
OPTIMIZERS = ("adamw", "lars")  # vitkit.train.optim.OPTIMIZERS

# Field kinds used to coerce and check values (YAML reads "1e-3" as a string, so floats accept numeric strings).
_FLOATS = {"lr", "min_lr", "warmup_epochs", "weight_decay", "label_smoothing", "mixup", "cutmix",
           "clip_grad", "ema_decay", "layer_decay"}
_INTS = {"epochs", "batch_size", "accum_steps", "repeated_aug", "seed", "eval_every", "log_every", "img_size", "num_threads", "num_workers",
         "labels_per_class"}
_OPTIONAL = {"img_size", "clip_grad", "amp", "ema_decay", "num_threads", "num_workers", "init", "labels_per_class",
             "layer_decay"}
_STRS = {"model", "data", "device", "out", "amp", "task", "init", "optimizer"}
_DICTS = {"model_args", "augment", "task_args"}
_BOOLS = {"resume", "probe"}


@dataclass(frozen=True)
class TrainConfig:
    """One training run. `batch_size` is the GLOBAL batch of one optimizer step.

    Each of `world_size` ranks loads `batch_size // world_size` images a step and, when
    `accum_steps > 1`, splits them into `accum_steps` micro-batches whose gradients are summed
    before the step (a memory knob: the effective batch stays `batch_size`).
    """

    # what to train
    model: str = "vit_mnist_patch4_28"
    model_args: dict = field(default_factory=dict)  # overrides passed to create_model
    task: str = "classify"                          # see vitkit.train.tasks.TASKS (classify, mae, clip, ...)
    task_args: dict = field(default_factory=dict)   # the task's own options (e.g. mask_ratio for mae)
    init: str | None = None                         # run folder / weights file whose backbone starts the model
    probe: bool = False                             # linear probe: freeze all but a new (BN + linear) head
    data: str = "mnist5k"
    labels_per_class: int | None = None             # train on this many labelled images per class (seeded)
    img_size: int | None = None                     # None: the dataset's native size
    augment: dict = field(default_factory=dict)     # passed through to the data package
    # optimisation
    optimizer: str = "adamw"                        # "adamw" | "lars" (MAE's linear probe; vitkit.train.optim.LARS)
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3                                # peak lr, reached at the end of warmup
    min_lr: float = 1e-5                            # cosine floor
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)       # AdamW's; MAE pretrains with (0.9, 0.95)
    layer_decay: float | None = None                # layer-wise lr decay: lr x decay^(L+1-layer) (MAE fine-tunes: 0.75)
    label_smoothing: float = 0.1
    mixup: float = 0.0                              # Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0                             # Beta(alpha, alpha); 0 = off
    repeated_aug: int = 1                           # DeiT's repeated augmentation: an epoch shows n/r images r times each
    clip_grad: float | None = 1.0                   # max global grad norm; None = no clipping
    accum_steps: int = 1
    amp: str | None = "auto"                        # "auto": bf16 where native, else fp32 | None / "none" | "bf16" | "fp16"
    ema_decay: float | None = None                  # e.g. 0.999; None = no EMA
    # run
    seed: int = 0
    device: str = "auto"                            # "auto" | "cpu" | "cuda" | "cuda:N"
    out: str = "runs/default"
    resume: bool = False
    eval_every: int = 1                             # epochs; the last epoch is always evaluated
    log_every: int = 50                             # optimizer steps
    num_threads: int | None = None                  # torch.set_num_threads; None = torch's default
    num_workers: int | None = None                  # image-folder decoding processes; None = half the CPUs

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        for f in dataclasses.fields(self):
            set_(f.name, _coerce(f.name, getattr(self, f.name)))
        errors = []

        def need(ok: bool, msg: str) -> None:
            if not ok:
                errors.append(msg)

        need(bool(self.model), "model must be a non-empty name")
        need(bool(self.data), "data must be a non-empty name")
        need(self.img_size is None or self.img_size > 0, f"img_size must be > 0 or None, got {self.img_size}")
        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(0 <= self.min_lr <= self.lr, f"min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        need(self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(all(0 <= b < 1 for b in self.betas), f"betas must be in [0, 1), got {self.betas}")
        need(self.optimizer in OPTIMIZERS, f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        need(self.layer_decay is None or 0 < self.layer_decay <= 1,
             f"layer_decay must be in (0, 1] or None, got {self.layer_decay}")
        need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        need(self.mixup >= 0, f"mixup alpha must be >= 0 (0 = off), got {self.mixup}")
        need(self.cutmix >= 0, f"cutmix alpha must be >= 0 (0 = off), got {self.cutmix}")
        need(self.repeated_aug >= 1, f"repeated_aug must be >= 1 (1 = off), got {self.repeated_aug}")
        need(self.clip_grad is None or self.clip_grad > 0, f"clip_grad must be > 0 or None, got {self.clip_grad}")
        need(self.accum_steps >= 1, f"accum_steps must be >= 1, got {self.accum_steps}")
        need(self.accum_steps <= self.batch_size,
             f"accum_steps ({self.accum_steps}) cannot exceed batch_size ({self.batch_size})")
        need(self.amp in AMP_MODES, f"amp must be one of {list(AMP_MODES)}, got {self.amp!r}")
        need(self.ema_decay is None or 0 < self.ema_decay < 1,
             f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        need(self.device in ("auto", "cpu", "cuda") or (self.device.startswith("cuda:") and self.device[5:].isdigit()),
             f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        need(bool(self.out), "out must be a non-empty directory path")
        need(self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}")
        need(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")
        need(bool(self.task), "task must be a non-empty name")
        need(self.labels_per_class is None or self.labels_per_class >= 1,
             f"labels_per_class must be >= 1 or None, got {self.labels_per_class}")
        need(not self.probe or self.task == "classify", "probe applies to task 'classify' only")
        need(self.num_workers is None or self.num_workers >= 0,
             f"num_workers must be >= 0 or None, got {self.num_workers}")
        need(self.num_threads is None or self.num_threads >= 1,
             f"num_threads must be >= 1 or None, got {self.num_threads}")
        if errors:
            raise ValueError("invalid TrainConfig: " + "; ".join(errors))

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict; unknown keys raise ValueError naming them and the valid ones."""
        if not isinstance(d, dict):
            raise ValueError(f"a TrainConfig needs a mapping of keys to values, got {type(d).__name__}")
        _check_keys(d)
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Read a YAML (.yaml/.yml) or JSON (.json) file of TrainConfig keys, or a run folder's config.json
        (it also records what the run was built with: those keys are set aside), to repeat or vary a run."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".yaml", ".yml", ".json"):
            raise ValueError(f"{path}: config files must end in .yaml, .yml or .json")
        text = path.read_text()
        if suffix == ".json":
            d = json.loads(text)
        else:
            import yaml
            d = yaml.safe_load(text) or {}
        try:
            if isinstance(d, dict) and "vitkit_version" in d:  # written by `fit` into a run folder
                return cls.from_run_config(d)
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    @classmethod
    def from_run_config(cls, d: dict[str, Any]) -> TrainConfig:
        """The config of a run folder's config.json, which ``fit`` writes with what the run saw besides
        (data sizes, the model's input size, the vitkit version): those keys are left out."""
        return cls.from_dict({k: v for k, v in d.items() if k in field_names()})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (betas as a list) that `from_dict` turns back into an equal config."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        _check_keys(changes)
        return dataclasses.replace(self, **changes)


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def _check_keys(d: dict) -> None:
    valid = field_names()
    unknown = sorted(str(k) for k in d if k not in valid)
    if unknown:
        raise ValueError(f"unknown TrainConfig key(s) {unknown}; valid keys are {valid}")


def _coerce(name: str, value: Any) -> Any:
    """Check one field's type, turning YAML/JSON spellings into the declared type."""
    if value is None and name in _OPTIONAL:
        return None
    bad = ValueError(f"invalid TrainConfig: {name} got {value!r} ({type(value).__name__})")
    if name in _FLOATS:
        if isinstance(value, bool):
            raise bad
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise bad from None
        if not math.isfinite(v):
            raise bad
        return v
    if name in _INTS:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad
        return int(value)
    if name in _STRS:
        if not isinstance(value, str):
            raise bad
        return value
    if name in _DICTS:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if name in _BOOLS:
        if not isinstance(value, bool):
            raise bad
        return value
    if name == "betas":
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
            raise ValueError(f"invalid TrainConfig: betas must be two floats, got {value!r}")
        return (float(value[0]), float(value[1]))
    return value
