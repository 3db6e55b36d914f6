"""What `vitkit train` / `vitkit pretrain` fit: the module and the task object for ``cfg.task``.

    module, task = build_task(cfg, DataInfo.from_bundle(bundle))

Every task is one builder here: it reads ``cfg.model`` / ``cfg.model_args`` (the backbone) and
``cfg.task_args`` (the task's own options) and returns the nn.Module the trainer optimises and
saves, and the task object with ``loss`` / ``eval_metrics``. A finished run folder is rebuilt by
the same builder from its config.json (`vitkit.train.run.load_run`), so what is trained is what
is loaded. Pretraining wrappers keep the pretrained backbone under ``backbone``; ``cfg.init``
starts a classifier from such a backbone (`load_backbone`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import create_model
from ..tasks import Classify
from ..tasks.pretrained import LinearProbe, backbone_state_dict
from . import checkpoint as ckpt


@dataclass(frozen=True)
class DataInfo:
    """What a builder needs to know of the data: from a DataBundle, or from a run's config.json."""
    num_classes: int
    in_chans: int
    img_size: tuple[int, int]
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_count: int | None = None  # training images (a run's config.json keeps it)

    @classmethod
    def from_bundle(cls, bundle, img_size: int | tuple[int, int] | None = None) -> DataInfo:
        size = tuple(bundle.img_size) if not img_size else (img_size, img_size) if isinstance(img_size, int) \
            else tuple(img_size)
        return cls(bundle.num_classes, bundle.in_chans, size, tuple(bundle.classes),
                   tuple(bundle.mean), tuple(bundle.std), len(bundle.train))

    @classmethod
    def from_meta(cls, meta: dict) -> DataInfo:
        return cls(len(meta["classes"]), meta["in_chans"], tuple(meta["data_img_size"]), tuple(meta["classes"]),
                   tuple(meta["mean"]), tuple(meta["std"]), meta.get("train_count"))


# ---------------------------------------------------------------------------- backbones
def build_backbone(cfg, info: DataInfo, num_classes: int | None = None) -> nn.Module:
    """``cfg.model`` sized for the data; ``num_classes=0`` gives a headless backbone (pooled features)."""
    kwargs: dict[str, Any] = dict(num_classes=info.num_classes if num_classes is None else num_classes,
                                  in_chans=info.in_chans)
    if "img_size" in _config_fields(cfg.model):
        kwargs["img_size"] = info.img_size[0] if info.img_size[0] == info.img_size[1] else info.img_size
    return create_model(cfg.model, **{**kwargs, **cfg.model_args})


def _config_fields(name: str) -> set[str]:
    m = create_model(name, device="meta")
    mcfg = getattr(m, "cfg", None)
    return {f.name for f in dataclasses.fields(mcfg)} if dataclasses.is_dataclass(mcfg) else set()


def load_backbone(model: nn.Module, source: str | Path, keep_head: bool = False) -> dict[str, list[str]]:
    """Start ``model`` from the backbone in ``source``: a run folder (its evaluated weights), or any
    checkpoint `vitkit.load_weights` reads (a weights file, a folder written by ``vitkit convert`` or
    saved by HF / timm, ``hf:org/name``), mapped to vitkit's names.

    Everything but the classifier head must match by name and shape (a pooling norm ``fc_norm.*`` and a
    learned sin-cos table, which MAE's fine-tuning adds to a backbone that has neither, start as built
    when the checkpoint lacks them): the head (``head.*``, ``head_dist.*``) is left as the model built it (``reset_classifier`` gives the paper's zero
    head), unless ``keep_head``: then a head of the same shape in ``source`` is loaded too (the same
    classifier, adapted rather than fine-tuned to new classes). Returns {"loaded": [...],
    "skipped": [...]}; raises ValueError naming what does not fit.
    """
    state, pretrained_cfg = init_state_dict(source, with_cfg=True)
    if pretrained_cfg is not None:  # a hub / timm / HF checkpoint: its preprocessing and labels travel along
        model.pretrained_cfg = pretrained_cfg
    if any(k.startswith("backbone.") for k in state):  # a pretraining run or a probe; else a classifier's weights
        state = backbone_state_dict(state)
    own = model.state_dict()
    is_head = lambda k: k.startswith(("head.", "head_dist."))  # noqa: E731
    # not asked of a checkpoint, loaded when it has them: a new pooling norm (MAE's fc_norm) and a table
    # that starts from a formula (a learned sin-cos table: the pretraining run's sin-cos is not stored)
    fresh = {f"{n}.{k}" for n, m in model.named_modules() if getattr(m, "starts_from_formula", False)
             for k in m.state_dict()}
    optional = lambda k: is_head(k) or k.startswith("fc_norm.") or k in fresh  # noqa: E731
    missing = [k for k in own if k not in state and not optional(k)]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape and not is_head(k)]
    if missing or wrong:
        raise ValueError(f"the weights in {source} do not fit {type(model).__name__}: "
                         f"missing {missing[:6]}{'...' if len(missing) > 6 else ''}, wrong shapes {wrong[:6]}; "
                         "init needs the same backbone (same --model and model_args) as the pretraining run")
    take = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape and (keep_head or not is_head(k))}
    model.load_state_dict(take, strict=False)
    return {"loaded": sorted(take), "skipped": sorted(set(state) - set(take))}


def init_state_dict(source: str | Path, with_cfg: bool = False):
    """The weights ``--init`` starts from, in vitkit's names: a run folder's evaluated weights (a run of
    another kind is refused, naming it), else whatever checkpoint `vitkit.weights.read_checkpoint` reads.
    ``with_cfg``: -> (state dict, the checkpoint's `PretrainedCfg` or None for a run folder)."""
    from ..weights import hub
    from ..weights.load import read_checkpoint
    from ..weights.sources import SOURCES
    if str(source) in SOURCES and not Path(source).exists():  # a registered name: its default hub source
        source = SOURCES[str(source)].hub_id
    path = None if hub.is_hub_id(str(source)) else Path(source)
    if path is not None and path.is_dir() and _is_run_folder(path):
        from .run import run_kind
        cfg = ckpt.read_config(path)
        kind = run_kind(cfg.get("task", "classify"))
        if kind not in ("classifier", "pretraining", "clip"):
            raise ValueError(f"--init {source}: a {cfg.get('task')!r} run holds no image backbone; init takes a "
                             "classifier or a pretraining run (mae, simclr, mocov3, clip), or a weights file/folder")
        state = ckpt.load_run_weights(path, "ema" if cfg.get("ema_decay") else "model")
        return (state, None) if with_cfg else state
    if path is not None and not path.exists():
        raise FileNotFoundError(f"--init {source}: no such run folder, weights file, hub id (hf:org/name) or "
                                "model with a default source (`vitkit models --pretrained`)")
    ck = read_checkpoint(source)
    state = ck.mapped()[0]
    if not with_cfg:
        return state
    import types

    from ..weights.load import attach_pretrained_cfg
    holder = types.SimpleNamespace(cfg=None, num_classes=None, input_size=None)
    attach_pretrained_cfg(holder, ck, str(source))
    return state, holder.pretrained_cfg


def _is_run_folder(path: Path) -> bool:
    """A folder written by `fit` (its config.json records the TrainConfig and the vitkit version)."""
    try:
        cfg = ckpt.read_config(path)
    except (FileNotFoundError, ValueError):
        return False
    return isinstance(cfg, dict) and "vitkit_version" in cfg and "task" in cfg


# ---------------------------------------------------------------------------- builders
def classify_task(cfg, info: DataInfo) -> Classify:
    """Cross-entropy with the config's label smoothing, mixup and cutmix."""
    return Classify(label_smoothing=cfg.label_smoothing, mixup=cfg.mixup, cutmix=cfg.cutmix,
                    num_classes=info.num_classes)


def build_classify(cfg, info: DataInfo) -> tuple[nn.Module, Any]:
    model = build_backbone(cfg, info)
    if cfg.init:  # fine-tuning (or probing) a pretrained backbone; without init a probe reads random features
        load_backbone(model, cfg.init)
        model.reset_classifier(info.num_classes)  # fine-tuning head: zero-initialised (ViT paper)
    if getattr(model, "head_dist", None) is not None:
        # A distilled (DeiT) model trained by Classify has no teacher: it trains on the average of
        # its two heads, as it is evaluated (timm's fine-tuning mode). Distillation uses tasks.Distill.
        model.set_distilled_training(False)
    if cfg.probe:
        model = LinearProbe(model, info.num_classes)
    return model, classify_task(cfg, info)


def build_distill(cfg, info: DataInfo) -> tuple[nn.Module, Any]:
    """DeiT distillation from a trained run: task_args teacher=RUN (required), kind, tau, alpha."""
    from ..tasks import Distill
    args = dict(cfg.task_args)
    teacher_dir = args.pop("teacher", None)
    if not teacher_dir:
        raise ValueError("task 'distill' needs a teacher run folder: --teacher RUN (task_args.teacher)")
    allowed = {"kind", "tau", "alpha"}
    if set(args) - allowed:
        raise ValueError(f"task 'distill' takes task_args teacher, {sorted(allowed)}; got {sorted(args)}")
    teacher = load_teacher(teacher_dir)
    if teacher.num_classes != info.num_classes:
        raise ValueError(f"the teacher {teacher_dir} predicts {teacher.num_classes} classes, the data has "
                         f"{info.num_classes}")
    model = build_backbone(cfg, info)
    if cfg.init:
        load_backbone(model, cfg.init)
        model.reset_classifier(info.num_classes)
    task = Distill(teacher, label_smoothing=cfg.label_smoothing, mixup=cfg.mixup, cutmix=cfg.cutmix,
                   num_classes=info.num_classes, **args)
    return model, task


def load_teacher(source: str) -> nn.Module:
    """A distillation teacher: a classifier run folder (its evaluated weights), or a classifier from the
    hub (``hf:org/name``, or a model name with a default source), in eval mode."""
    from ..weights import hub
    from ..weights.sources import SOURCES
    if hub.is_hub_id(str(source)) or (str(source) in SOURCES and not Path(source).exists()):
        from ..weights.load import from_checkpoint
        from ..weights.sources import load_pretrained
        return (from_checkpoint(source) if hub.is_hub_id(str(source)) else load_pretrained(source)).eval()
    from .run import load_run
    run = load_run(source)
    run.needs(("classifier",), "train --teacher")
    return run.model


def build_sparsevit_adapt(cfg, info: DataInfo) -> tuple[nn.Module, Any]:
    """Sparsity-aware adaptation (SparseViT, Chen et al. 2023, Sec. 3.2): classification in which every
    training step runs the model at a fresh random per-stage window sparsity, so that one set of
    weights serves every sparsity the later search may pick.

    ``cfg.model`` must be a SparseViT; ``cfg.init`` (usually a dense run of the same Swin or SparseViT:
    they share one state dict) starts it, classifier head included when it has the data's classes.
    task_args: ``choices`` (the sparsities a stage draws from, each in [0, 1); default the paper's
    0, 0.1, ..., 0.8) and ``eval_sparsity`` (one float for every stage or one per stage; default 0,
    dense), at which the run is evaluated and at which its saved model is rebuilt (`load_run`).
    """
    from ..models.sparsevit import SPARSITY_CHOICES, SparseViT, SparsityAwareAdaptation
    args = _task_args(cfg, "sparsevit_adapt", {"choices": SPARSITY_CHOICES, "eval_sparsity": 0.0},
                      {"choices", "eval_sparsity"})
    model = build_backbone(cfg, info)
    if not isinstance(model, SparseViT):
        raise ValueError(f"task 'sparsevit_adapt' needs a SparseViT model (e.g. sparsevit_swin_nano_patch2_window4_28),"
                         f" got {cfg.model!r} ({type(model).__name__}); a Swin run of the same size starts it "
                         "with --init")
    choices = tuple(float(c) for c in (args["choices"] if isinstance(args["choices"], (list, tuple))
                                       else [args["choices"]]))
    if not choices or not all(0 <= c < 1 for c in choices):
        raise ValueError(f"task_args.choices must be sparsities in [0, 1), got {args['choices']!r}")
    s = args["eval_sparsity"]
    model.set_sparsity([float(s)] * model.num_stages if isinstance(s, (int, float)) else s)  # checks it
    if cfg.init:
        loaded = load_backbone(model, cfg.init, keep_head=True)["loaded"]
        if not any(k.startswith("head.") for k in loaded):  # another label set: the fine-tuning head
            model.reset_classifier(info.num_classes)
    return model, SparsityAwareAdaptation(classify_task(cfg, info), choices, eval_sparsity=model.sparsity,
                                          seed=cfg.seed)


Builder = Callable[[Any, DataInfo], "tuple[nn.Module, Any]"]
TASKS: dict[str, Builder] = {"classify": build_classify, "distill": build_distill,
                             "sparsevit_adapt": build_sparsevit_adapt}


def register_task(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        TASKS[name] = fn
        return fn
    return deco


def _task_args(cfg, name: str, defaults: dict, allowed: set[str]) -> dict:
    """``cfg.task_args`` over the task's defaults; unknown keys raise ValueError naming the valid ones."""
    unknown = sorted(set(cfg.task_args) - allowed)
    if unknown:
        raise ValueError(f"task {name!r} does not take task_args {unknown}; it takes {sorted(allowed)}")
    return {**defaults, **cfg.task_args}


@register_task("diverse_patch")
def build_diverse_patch(cfg, info: DataInfo) -> tuple[nn.Module, Any]:
    """Classification + patch diversity losses (Gong et al. 2021); task_args: cos_weight,
    contrastive_weight, mixing_weight, first_layer, mix_alpha, mix_prob."""
    from ..tasks.diverse_patch import DiversePatch
    args = _task_args(cfg, "diverse_patch", {}, {"cos_weight", "contrastive_weight", "mixing_weight",
                                                  "first_layer", "mix_alpha", "mix_prob"})
    task = DiversePatch(label_smoothing=cfg.label_smoothing, mixup=cfg.mixup, cutmix=cfg.cutmix,
                        num_classes=info.num_classes, **args)
    backbone = build_backbone(cfg, info)
    if cfg.init:
        load_backbone(backbone, cfg.init)
        backbone.reset_classifier(info.num_classes)
    return task.wrap(backbone), task


@register_task("mae")
def build_mae(cfg, info: DataInfo) -> tuple[nn.Module, Any]:
    """MAE on a headless ``cfg.model`` (an unused head would get no gradient, which DDP rejects).

    Defaults sized for the 0.8M mnist ViT: a 64-wide, 2-block decoder (half the encoder's width, as MAE).
    """
    from ..tasks.mae import MAE, MAEPretrain
    args = _task_args(cfg, "mae", {"decoder_dim": 64, "decoder_depth": 2, "decoder_heads": 4},
                      {"decoder_dim", "decoder_depth", "decoder_heads", "mlp_ratio", "mask_ratio", "norm_pix_loss",
                       "keep_rule", "eval_seed"})
    eval_seed = args.pop("eval_seed", 0)
    return MAE(build_backbone(cfg, info, num_classes=0), **args), MAEPretrain(eval_seed)


@register_task("simclr")
def build_simclr(cfg, info: DataInfo) -> tuple[nn.Module, Any]:
    """SimCLR on a headless ``cfg.model``; task_args: tau, proj_dim, proj_hidden_dim, views (TwoViews kwargs)."""
    from ..tasks.contrastive import Contrastive, SimCLR, TwoViews
    args = _task_args(cfg, "simclr", {"tau": 0.2}, {"tau", "proj_dim", "proj_hidden_dim", "views", "eval_seed"})
    views = TwoViews(mean=info.mean, std=info.std, **args.pop("views", {}))  # augments in pixel units
    eval_seed = args.pop("eval_seed", 0)
    return SimCLR(build_backbone(cfg, info, num_classes=0), views=views, **args), Contrastive(eval_seed)


@register_task("mocov3")
def build_mocov3(cfg, info: DataInfo) -> tuple[nn.Module, Any]:
    """MoCo v3 on a headless ``cfg.model``; task_args: tau, dim, hidden_dim, m0, stop_grad_conv1, views
    (TwoViews kwargs).

    Defaults for small ViTs: projector hidden 512, output 128 (the paper's 4096 / 256 are for ViT-S/B).
    stop_grad_conv1 (default true, moco-v3's ViT recipe): the random patch projection stays frozen.

    The momentum schedule spans the whole run: total_steps = epochs x optimizer steps per epoch.
    """
    from ..tasks.contrastive import Contrastive, MoCoV3, TwoViews
    args = _task_args(cfg, "mocov3", {"tau": 0.2, "hidden_dim": 512, "dim": 128},
                      {"tau", "dim", "hidden_dim", "m0", "stop_grad_conv1", "views", "eval_seed"})
    views = TwoViews(mean=info.mean, std=info.std, **args.pop("views", {}))  # augments in pixel units
    eval_seed = args.pop("eval_seed", 0)
    steps = cfg.epochs * max(info.train_count // cfg.batch_size, 1) * cfg.accum_steps if info.train_count else 1
    return (MoCoV3(build_backbone(cfg, info, num_classes=0), total_steps=steps, views=views, **args),
            Contrastive(eval_seed))


@register_task("clip")
def build_clip_task(cfg, info: DataInfo) -> tuple[nn.Module, Any]:
    """CLIP: image tower ``cfg.model`` (headless) + a text tower; labels become captions from templates.

    task_args: text ("scratch" = vitkit's byte-level causal transformer, default; "locked" = the frozen
    pretrained MiniLM, LiT), text_args (TextConfig fields for the scratch tower), embed_dim.
    """
    from ..tasks.clip import CLIP, CLIPTask, TextConfig, build_text_tower
    args = _task_args(cfg, "clip", {"text": "scratch", "text_args": {}, "embed_dim": 128},
                      {"text", "text_args", "embed_dim"})
    if args["text"] not in ("scratch", "locked"):
        raise ValueError(f"task_args.text must be 'scratch' or 'locked', got {args['text']!r}")
    text = TextConfig(**args["text_args"]) if args["text"] == "scratch" else "locked"
    task = CLIPTask.for_classes(info.classes)
    model = CLIP(build_backbone(cfg, info, num_classes=0), build_text_tower(text), args["embed_dim"],
                 templates=task.eval_templates, backbone_name=cfg.model)
    return model, task


# ---------------------------------------------------------------------------- generation
TOKENIZERS = ("vq", "multiscale", "hybrid")


@register_task("vq")
def build_tokenizer(cfg, info: DataInfo) -> tuple[nn.Module, Any]:
    """A visual tokenizer (``cfg.model`` is not used): task_args kind = vq | multiscale | hybrid, and
    the tokenizer's own options (channels, embed_dim, codebook_size, scales, beta, ema, ...).

    A hybrid tokenizer follows HART's recipe when ``cfg.init`` (``--init``) names a multiscale tokenizer
    run: it starts from that run's weights, and its encoder, quant_conv and quantizer stay frozen
    (``HybridTokenizer.start_from``; task_args.freeze_discrete=false trains them too; it applies with
    ``--init`` only, and `load_run`, which rebuilds without init, ignores it). Its options must be the
    multiscale run's (kind aside). Without ``--init`` it trains jointly from scratch.
    """
    from ..gen import HybridTokenizer, MultiScaleVQTokenizer, TokenizerTask, VQTokenizer
    args = dict(cfg.task_args)
    kind = args.pop("kind", "vq")
    freeze = args.pop("freeze_discrete", None)
    classes = {"vq": VQTokenizer, "multiscale": MultiScaleVQTokenizer, "hybrid": HybridTokenizer}
    if kind not in classes:
        raise ValueError(f"task_args.kind must be one of {TOKENIZERS}, got {kind!r}")
    if (cfg.init or freeze is not None) and kind != "hybrid":
        raise ValueError(f"--init / task_args.freeze_discrete start a hybrid tokenizer from a multiscale run "
                         f"(HART's recipe); a {kind} tokenizer trains from scratch")
    options = {k: tuple(v) if k in ("channels", "scales") else v for k, v in args.items()}
    size = info.img_size[0] if info.img_size[0] == info.img_size[1] else info.img_size
    try:
        tok = classes[kind](in_chans=info.in_chans, img_size=size, **options)
    except TypeError as e:
        raise ValueError(f"task 'vq' ({kind}): {e}") from None
    if cfg.init:
        source = _load_tokenizer(cfg.init, "multiscale")
        own = ("kind", "freeze_discrete", "p_discrete")  # the hybrid's own; the rest must be the run's
        plain = lambda d: {k: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
                           for k, v in d.items() if k not in own}
        if plain(cfg.task_args) != plain(source.train_cfg.task_args):
            raise ValueError(f"the hybrid tokenizer's options {plain(cfg.task_args)} differ from those of the "
                             f"multiscale run {cfg.init} ({plain(source.train_cfg.task_args)}): give the same "
                             "task_args (kind aside)")
        tok.start_from(source.model, freeze=True if freeze is None else bool(freeze))
    return tok, TokenizerTask(info.mean, info.std)


GENERATORS = {"ar": "vq", "var": "multiscale", "hart": "hybrid"}


def _load_tokenizer(path: str, want: str):
    """The tokenizer run (`vitkit.train.run.Run`) in ``path``; ValueError unless its kind is ``want``."""
    from .run import load_run
    run = load_run(path)
    kind = run.train_cfg.task_args.get("kind", "vq") if run.train_cfg.task == "vq" else None
    if kind != want:
        raise ValueError(f"{path} is not a {want} tokenizer run (task {run.train_cfg.task!r}, kind {kind!r}); "
                         f"train one with `vitkit pretrain --task vq --set task_args.kind={want}`")
    return run


def _build_generator(name: str, cfg, info: DataInfo) -> tuple[nn.Module, Any]:
    from ..gen import GenerativeModel, GenerativeTask
    from ..gen.ar import ARTransformer
    from ..gen.hart import HART, estimate_residual_scale
    from ..gen.var import VAR
    args = dict(cfg.task_args)
    path = args.pop("tokenizer", None)
    if not path:
        raise ValueError(f"task {name!r} needs a trained tokenizer run: --set task_args.tokenizer=RUN "
                         f"(a `vitkit pretrain --task vq --set task_args.kind={GENERATORS[name]}` run)")
    tok = _load_tokenizer(path, GENERATORS[name]).model
    size = {"num_classes": info.num_classes, "dim": 192, "depth": 6, "num_heads": 6}
    size.update({k: args.pop(k) for k in list(args) if k in ("dim", "depth", "num_heads", "mlp_ratio",
                                                               "class_dropout", "drop_path")})
    if name == "ar":
        gen = ARTransformer(vocab_size=tok.codebook_size, grid=tok.grid, order=args.pop("order", "raster"), **size)
    elif name == "var":
        gen = VAR(vocab_size=tok.codebook_size, scales=tok.scales, embed_dim=tok.embed_dim, **size)
    else:
        scale = args.pop("residual_scale", None)
        if scale is None:  # a pure function of the tokenizer and the data, so a rebuilt run gets the same
            scale = float(estimate_residual_scale(tok, _first_images(cfg)))
        gen = HART(var=dict(vocab_size=tok.codebook_size, scales=tok.scales, embed_dim=tok.embed_dim, **size),
                   head_width=args.pop("head_width", size["dim"] // 2), residual_scale=scale,
                   **{k: args.pop(k) for k in list(args) if k in ("head_depth", "sampling_steps", "diffusion_weight",
                                                                  "residual_target")})
    if args:
        raise ValueError(f"task {name!r} does not take task_args {sorted(args)}")
    return GenerativeModel(tok, gen), GenerativeTask()


def _first_images(cfg, n: int = 512) -> torch.Tensor:
    from .. import data as vdata
    bundle = vdata.build(cfg.data)
    loader = vdata.make_loader(bundle.train, batch_size=n, transform=vdata.eval_transform(bundle, cfg.img_size))
    return next(iter(loader))[0]


for _name in GENERATORS:
    TASKS[_name] = (lambda n: (lambda cfg, info: _build_generator(n, cfg, info)))(_name)


def build_task(cfg, info: DataInfo) -> tuple[nn.Module, Any]:
    """(module to train, task object) for ``cfg.task``; unknown names raise ValueError listing the known ones."""
    from ..models.registry import _import_families
    _import_families()  # $VITKIT_PLUGINS modules register their tasks too
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; known tasks: {', '.join(sorted(TASKS))}")
    unknown_args = cfg.task_args and cfg.task == "classify"
    if unknown_args:
        raise ValueError(f"task 'classify' takes no task_args, got {sorted(cfg.task_args)}")
    return TASKS[cfg.task](cfg, info)
