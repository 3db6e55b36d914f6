"""A decorator registry and one factory (as timm's): ``register_model``, ``create_model``, ``list_models``.

A registered function takes keyword overrides of its family's config and returns the model.
Behaviour comes from config fields, never from the name.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fnmatch
import types
import typing
from typing import Callable

import torch
from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, name: str | None = None):
    """Register ``fn`` under ``name`` (default: its ``__name__``); a duplicate name is an error."""

    def add(f: Callable[..., nn.Module]):
        key = name or f.__name__
        if key in _MODELS:
            raise ValueError(f"model name {key!r} is already registered")
        _MODELS[key] = f
        return f

    return add(fn) if fn is not None else add


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` (``"vit_*_patch16_*"``), sorted."""
    _import_families()
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def is_model(name: str) -> bool:
    _import_families()
    return name in _MODELS


def create_model(name: str, *, device: str | torch.device | None = None, pretrained=None,
                 **overrides) -> nn.Module:
    """Build a registered model; ``overrides`` replace fields of its config (``num_classes=10``).

    ``device="meta"`` builds without allocating memory (parameter counts, shapes).
    ``pretrained``: ``True`` (the name's default source, see ``vitkit.weights.sources``), ``"hf:org/name[@rev]"``
    (downloaded into the HF cache unless HF_HUB_OFFLINE=1), a checkpoint folder or file. It is loaded
    strictly after building, position tables resampled to ``img_size`` (see ``vitkit.load_weights``); the
    checkpoint's LayerNorm eps and activation are used unless ``norm_eps`` / ``act`` are given. A
    ``num_classes`` other than the checkpoint's loads its head first, then installs a new zero head
    (``reset_classifier``): fine-tuning. The result carries ``model.pretrained_cfg`` (preprocessing, labels,
    source commit; ``weights.pretrained_cfg.PretrainedCfg``).
    """
    _import_families()
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `vitkit models`"
        raise ValueError(f"unknown model {name!r}{hint}")
    new_classes = None
    source = None
    if pretrained is not None and pretrained is not False:
        if device is not None and torch.device(device).type == "meta":
            raise ValueError("pretrained weights cannot be loaded on the meta device")
        from ..weights import load_weights, read_checkpoint  # weights sits beside models: imported late
        from ..weights.sources import SOURCES, resolve_pretrained
        if pretrained is True:
            source = SOURCES.get(name)
            overrides = {**(source.overrides if source else {}), **overrides}
        pretrained = resolve_pretrained(name, pretrained)
        ckpt = read_checkpoint(pretrained)
        try:  # a foreign config.json's LayerNorm eps (HF: 1e-12; timm: 1e-6) and activation change the numbers
            known = ckpt.config_fields() if ckpt.format.name != "vitkit" else {}
        except (ValueError, KeyError, TypeError):
            known = {}
        for key in ("norm_eps", "act"):
            if known.get(key) is not None and key not in overrides:
                overrides = {**overrides, key: known[key]}
        theirs = known.get("num_classes")
        if "num_classes" in overrides and theirs is not None and overrides["num_classes"] != theirs:
            new_classes = overrides["num_classes"]  # load the checkpoint's head, then a new one
            overrides = {**overrides, "num_classes": theirs}
    elif pretrained is False:
        pretrained = None
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = _MODELS[name](**overrides)
    if pretrained is not None:
        load_weights(model, ckpt)
        if source is not None and getattr(model, "pretrained_cfg", None) is not None:
            model.pretrained_cfg = model.pretrained_cfg.replace(citation=source.citation)
        if new_classes is not None:
            if not hasattr(model, "reset_classifier"):
                raise ValueError(f"{name} cannot change its number of classes after loading")
            model.reset_classifier(new_classes)
            if getattr(model, "pretrained_cfg", None) is not None:
                model.pretrained_cfg = model.pretrained_cfg.replace(num_classes=new_classes, label_names=None)
    return model


def build_from_config(config_cls, base, overrides: dict):
    """``dataclasses.replace`` with errors that name the option: an unknown field (listing the valid
    ones), a value of the wrong type (checked against the field's annotation), a rate outside [0, 1)."""
    valid = {f.name for f in dataclasses.fields(config_cls)}
    bad = sorted(set(overrides) - valid)
    if bad:
        raise TypeError(f"unknown option(s) {bad} for {config_cls.__name__}; valid: {sorted(valid)}")
    check_overrides(config_cls, overrides)
    return dataclasses.replace(base, **overrides)


RATE_FIELDS = ("drop_rate", "attn_drop_rate", "proj_drop_rate", "pos_drop_rate", "drop_path_rate")
"""Probabilities of a config: each must lie in [0, 1)."""


def check_overrides(config_cls, overrides: dict) -> None:
    """Raise ValueError naming the first override whose value does not fit its field's annotation."""
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:  # an annotation this Python cannot evaluate: leave the checks to the model
        return
    for key, value in overrides.items():
        hint = hints.get(key)
        if hint is not None and not _fits(value, hint):
            raise ValueError(f"model option {key} must be {_describe(hint)}, got {value!r}")
        if key in RATE_FIELDS and not 0 <= value < 1:
            raise ValueError(f"model option {key} must be in [0, 1), got {value!r}")


def _fits(value, hint) -> bool:
    """Whether ``value`` can stand for a field annotated ``hint`` (containers checked one level deep)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        return not args or all(_fits(v, args[0]) for v in value)
    if origin is typing.Literal:
        return value in args
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (hint, dict))
    return True  # a type this check does not know: the model's own checks apply


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if hint is type(None):
        return "null"
    if origin in (tuple, list):
        return f"a list of {len(args)} values" if origin is tuple and args and args[-1] is not Ellipsis else "a list"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


PLUGINS_ENV = "VITKIT_PLUGINS"
"""Comma-separated modules imported with the built-in families: out-of-tree families and tasks
(their ``@register_model`` / ``@register_task``), known to every process that names them."""


def _import_families() -> None:
    """Import every model family so its names are registered, then the modules $VITKIT_PLUGINS names."""
    from . import resnet, swin, vit  # noqa: F401
    from . import sparsevit  # noqa: F401
    from . import efficientvit  # noqa: F401
    from . import pvt  # noqa: F401
    from . import convit  # noqa: F401
    from . import t2t  # noqa: F401
    from . import ceit  # noqa: F401
    from . import visual_tokens  # noqa: F401
    from . import local_vit  # noqa: F401
    _import_plugins()


def _import_plugins() -> None:
    import importlib
    import os
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ImportError(f"{PLUGINS_ENV} names {module!r}, which does not import: {e}") from None
