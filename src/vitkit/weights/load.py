"""Read any supported checkpoint and load it into a vitkit model.

    report = load_weights(model, "model.safetensors" | "folder/" | "vit.npz" | "x.pth" | "hf:org/name")

Steps: read the file(s) safely (``io``), recognise the layout from its keys and map it to vitkit's
names (``mapping`` + the per-format tables), resample learned position tables to the model's patch
grid (2D bicubic, the class token kept apart, as HF's ``interpolate_pos_encoding``), then load
strictly: a missing, unexpected or wrongly-shaped key is an error that names the first few.
"""
from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..layers.pos_embed import resample_pos_embed
from ..models.vit import ViTConfig
from . import hub
from .io import FOLDER_FILES, find_weights, load_weights_files, read_json, state_mismatch
from .mapping import KeyMap, StateDict, detect_format, strip_wrapper

_POS_TABLE = re.compile(r"^pos_embed(\.\d+)?\.weight$")


@dataclass
class Checkpoint:
    """A checkpoint as found on disk: its tensors (stored names), its config.json, its layout."""
    path: Path
    files: list[Path]
    state_dict: StateDict
    config: dict[str, Any] | None
    format: KeyMap

    def mapped(self) -> tuple[StateDict, list[str], list[str], dict[str, str]]:
        """(vitkit state dict, unmapped stored keys, knowingly dropped keys, vitkit key -> stored key)."""
        return self.format.to_vitkit(self.state_dict)

    def config_fields(self, keys: set[str] | None = None) -> dict[str, Any]:
        """ViTConfig fields the config.json states, over what the stored tensors reveal (empty when
        neither says anything, or the config is not a ViT's). A format with its own reader
        (``KeyMap.config_fields``: PVT, EfficientViT, ConViT) gives its family's config fields."""
        hints = self.format.hints(self.state_dict) if self.format.hints else {}
        c = self.config
        if not c:
            return hints
        if self.format.config_fields is not None:
            return {**hints, **self.format.config_fields(c)}
        if isinstance(c.get("model_config"), dict):  # vitkit: converted folder or training run
            fields = {f.name for f in dataclasses.fields(ViTConfig)}
            mc = c["model_config"]
            return {**hints, **{k: v for k, v in mc.items() if k in fields}} if set(mc) <= fields else hints
        if "model_type" in c:
            from .hf import vit_config_from_hf
            return {**hints, **vit_config_from_hf(c, keys)}
        if "architecture" in c:
            from .timm import vit_config_from_timm
            return {**hints, **vit_config_from_timm(c)}
        return hints


def read_checkpoint(src: str | Path | Checkpoint) -> Checkpoint:
    """A file, a checkpoint folder (HF / timm / vitkit run), or ``hf:org/name`` from the local cache."""
    if isinstance(src, Checkpoint):
        return src
    path = hub.resolve(src) if hub.is_hub_id(src) else Path(src)
    if path.is_dir():
        files = find_weights(path)
        cfg_path = path / "config.json"
    elif path.is_file():
        files = [path]
        # a config.json beside a file counts only for the folder's canonical weights file
        cfg_path = path.parent / "config.json" if path.name in FOLDER_FILES else None
    else:
        raise FileNotFoundError(f"no checkpoint at {path}")
    sd = strip_wrapper(load_weights_files(files))
    if not sd:
        raise ValueError(f"{path} holds no tensors")
    fmt = detect_format(sd)
    config = read_json(cfg_path) if cfg_path is not None and cfg_path.is_file() else None
    return Checkpoint(path, files, sd, config, fmt)


# ---- a ViTConfig from weights (+ what a config.json says) -----------------------------------------
def infer_vit_config(sd: StateDict, known: dict[str, Any] | None = None, base: ViTConfig | None = None) -> ViTConfig:
    """The ViTConfig of a vitkit-named ViT state dict: shapes decide width, depth, patch, channels,
    classes, tokens, pre-logits and the grid; ``known`` (a config.json) and ``base`` (a registered
    model) supply what shapes cannot tell (heads, norm eps, pooling)."""
    fields = {f.name for f in dataclasses.fields(ViTConfig)}
    arch = (known or {}).get("_architecture")  # timm's config.json names its model; vitkit reuses timm's names
    if base is None and arch:
        from ..models.registry import create_model, is_model
        cfg = getattr(create_model(arch, device="meta"), "cfg", None) if is_model(arch) else None
        base = cfg if isinstance(cfg, ViTConfig) else None
    f: dict[str, Any] = {k: v for k, v in dataclasses.asdict(base).items()} if base is not None else {}
    f.update({k: v for k, v in (known or {}).items() if k in fields})
    w = sd.get("patch_embed.proj.weight")
    blocks = [int(m.group(1)) for k in sd if (m := re.match(r"^blocks\.(\d+)\.", k))]
    if w is None or w.ndim != 4 or not blocks:
        raise ValueError("not a ViT checkpoint: it has no patch embedding or no blocks")
    hybrid = any(k.startswith("patch_embed.backbone.") for k in sd)
    if hybrid and base is None and not known:
        raise ValueError("a hybrid ViT's stem cannot be read from its weights; name the model (--model)")
    if not hybrid:
        if w.shape[-1] != w.shape[-2]:
            raise ValueError(f"non-square patches {tuple(w.shape[-2:])} are not supported")
        f.update(in_chans=w.shape[1], patch_size=w.shape[-1])
    D = w.shape[0]
    f.update(embed_dim=D, depth=max(blocks) + 1, qkv_bias="blocks.0.attn.qkv.bias" in sd,
             class_token="cls_token" in sd, distilled="dist_token" in sd)
    hidden = sd["blocks.0.mlp.fc1.weight"].shape[0]
    if int(D * f.get("mlp_ratio", 4.0)) != hidden:
        f["mlp_ratio"] = hidden / D
    f["reg_tokens"] = sd["reg_token"].shape[1] if "reg_token" in sd else 0
    if "blocks.0.ls1.gamma" in sd:  # layer scale: the init value is not in the weights (the config may say it)
        f["layer_scale"] = f.get("layer_scale") or 1.0
    else:
        f["layer_scale"] = None
    f["pre_logits"] = "pre_logits.0.weight" in sd
    f["pre_logits_dim"] = sd["pre_logits.0.weight"].shape[0] if f["pre_logits"] else None
    f["num_classes"] = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    if not f["class_token"]:
        f["global_pool"] = "avg"
    f.setdefault("global_pool", "token")
    table = sd.get("pos_embed.weight")
    if table is not None:
        f["pos_embed"], f["pos_embed_where"] = "learn", None
        n = table.shape[1] - int(f["class_token"]) - int(f["distilled"])
        grid = _grid_of(f, n)
        if grid is None:
            raise ValueError(f"cannot tell the patch grid of a {n}-position table; give the image size")
        if not hybrid:  # the image size the table was trained at
            p = f["patch_size"]
            f["img_size"] = grid[0] * p if grid[0] == grid[1] else (grid[0] * p, grid[1] * p)
    elif not any(k.startswith("pos_embed.") for k in sd) and f.get("pos_embed", "learn") == "learn":
        f["pos_embed"] = "none"  # no table stored, none said (a fixed sin-cos one is stated in a config)
    if not f.get("num_heads"):
        raise ValueError("the number of attention heads cannot be read from these weights; "
                         "give a config.json or name the model (--model)")
    if D % f["num_heads"]:
        raise ValueError(f"width {D} is not divisible by {f['num_heads']} heads")
    return ViTConfig(**f)


def _grid_of(f: dict[str, Any], n: int) -> tuple[int, int] | None:
    """The (gh, gw) grid of n positions: from img_size / patch_size when they agree, else square."""
    img, p = f.get("img_size"), f.get("patch_size")
    if img is not None and p:
        h, w = (img, img) if isinstance(img, int) else tuple(img)
        if (h // p) * (w // p) == n:
            return h // p, w // p
    side = int(round(n ** 0.5))
    return (side, side) if side * side == n else None


# ---- load_weights --------------------------------------------------------------------------------
@dataclass
class LoadReport:
    """What ``load_weights`` did: the layout it read, what it resampled, dropped or could not place."""
    path: Path
    format: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"loaded {self.loaded} tensors from {self.path} ({self.format})"]
        for label, items in (("resampled", self.resampled), ("missing", self.missing),
                             ("unexpected", self.unexpected), ("shape mismatch", self.mismatched),
                             ("ignored", self.ignored)):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                parts.append(f"{label}: {', '.join(items[:3])}{more}")
        return "; ".join(parts + self.notes)


def load_weights(model: nn.Module, src: str | Path | Checkpoint, strict: bool = True) -> LoadReport:
    """Load a vitkit / HF / timm / Google checkpoint into ``model``; returns a ``LoadReport``.

    ``src``: a weights file, a checkpoint folder, or ``hf:org/name[@rev]`` (downloaded into the HF
    cache unless HF_HUB_OFFLINE=1; see ``weights.hub``). Learned position tables are resampled to
    the model's grid. ``strict`` (default): any missing, unexpected or wrongly-shaped key raises
    ValueError naming the first few (a checkpoint of another architecture); otherwise the keys that
    fit are loaded and the rest reported. A model whose LayerNorm eps or activation differs from
    what the checkpoint's config.json states computes another function: that warns (``UserWarning``)
    naming the field and the fix. ``model.pretrained_cfg`` is set (see ``weights.pretrained_cfg``).
    """
    ck = read_checkpoint(src)
    if ck.format.config_fields is not None and ck.config:
        try:  # a family's own config reader refuses what the model cannot compute (another activation)
            ck.format.config_fields(ck.config)
        except ValueError as e:
            raise ValueError(f"{ck.path}: {e}") from None
    sd, unmapped, ignored, source = ck.mapped()
    report = LoadReport(ck.path, ck.format.description, ignored=ignored)
    own = model.state_dict()
    known = _safe_fields(ck, set(sd))
    _fit_position_tables(model, sd, own, known, report)
    names = {k: f"{k} (stored as {v})" for k, v in source.items() if v != k}
    problem = state_mismatch(own, sd, names=names)
    if unmapped:
        more = f" (+{len(unmapped) - 5} more)" if len(unmapped) > 5 else ""
        extra = f"{len(unmapped)} keys no {ck.format.name} rule maps: {unmapped[:5]}{more}"
        problem = f"{problem}; {extra}" if problem else extra
    if problem and strict:
        raise ValueError(f"{ck.path} ({ck.format.description}) does not fit this "
                         f"{type(model).__name__} (another architecture or size?): {problem}")
    for note in config_differences(model, known, ck.path, ck.format.function_fields):  # another function
        report.notes.append("note: " + note)
        warnings.warn(note, UserWarning, stacklevel=2)
    fits = {k: v for k, v in sd.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    report.missing = [k for k in own if k not in sd]
    report.unexpected = [names.get(k, k) for k in sd if k not in own] + unmapped
    report.mismatched = [f"{names.get(k, k)}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                         for k in sd if k in own and k not in fits]
    with torch.no_grad():
        model.load_state_dict(fits, strict=not problem)
    report.loaded = len(fits)
    attach_pretrained_cfg(model, ck, src)
    return report


# fields of a checkpoint's config that change the function without changing any weight's shape
_FUNCTION_FIELDS = (("norm_eps", "LayerNorm eps", "layer_norm_eps"), ("act", "MLP activation", "hidden_act"))


def config_differences(model: nn.Module, known: dict[str, Any], path: Path | str,
                       extra: tuple[tuple[str, str, str], ...] = ()) -> list[str]:
    """One sentence per field where the model differs from the checkpoint's config (eps, activation,
    and the format's ``function_fields``)."""
    cfg = getattr(model, "cfg", None)
    out = []
    for name, what, theirs in _FUNCTION_FIELDS + tuple(extra):
        want = known.get(name)
        have = getattr(cfg, name, None)
        if want is None or have is None or have == want:
            continue
        fmt = (lambda v: f"{v:g}") if isinstance(want, float) else repr
        by_itself = (" (create_model(name, pretrained=...) does this by itself)"
                     if name in ("norm_eps", "act") else "")
        out.append(f"{path}: the checkpoint's {what} is {fmt(want)} (its config's {theirs}) but the model's "
                   f"{name} is {fmt(have)}, so its outputs will differ; build the model with {name}={fmt(want)}"
                   + by_itself)
    return out


def attach_pretrained_cfg(model: nn.Module, ck: Checkpoint, src: Any, **extra) -> None:
    """``model.pretrained_cfg``: the preprocessing and labels the checkpoint's files state."""
    from . import hub
    from .pretrained_cfg import from_checkpoint_files
    folder = ck.path if ck.path.is_dir() else ck.path.parent
    commit = hub.snapshot_commit(folder)
    repo = None
    if hub.is_hub_id(src):
        repo = hub.parse(src)[0]
    elif commit is not None and folder.parent.parent.name.startswith("models--"):
        repo = folder.parent.parent.name[len("models--"):].replace("--", "/")
    source = f"hf:{repo}@{commit}" if repo and commit else str(src if not isinstance(src, Checkpoint) else ck.path)
    in_chans = getattr(getattr(model, "cfg", None), "in_chans", 3)
    try:
        pc = from_checkpoint_files(folder if ck.path.is_dir() or ck.path.name in FOLDER_FILES else None,
                                   ck.config, source, ck.format.name, in_chans, repo=repo, revision=commit,
                                   architecture=getattr(getattr(model, "cfg", None), "name", None), **extra)
    except (ValueError, TypeError, KeyError) as e:  # a malformed preprocessor file: say so, keep the weights
        warnings.warn(f"{ck.path}: its preprocessing files could not be read ({e}); model.pretrained_cfg has "
                      f"no preprocessing numbers", UserWarning, stacklevel=3)
        from .pretrained_cfg import PretrainedCfg
        pc = PretrainedCfg(source=source, format=ck.format.name, repo=repo, revision=commit)
    n = getattr(model, "num_classes", None)
    if pc.label_names is not None and n != len(pc.label_names):  # e.g. LABEL_0/1 of a headless model
        pc = pc.replace(label_names=None)
    if isinstance(n, int):
        pc = pc.replace(num_classes=n)
    if pc.input_size is None and getattr(model, "input_size", None) is not None:
        pc = pc.replace(input_size=tuple(model.input_size))
    model.pretrained_cfg = pc


def _safe_fields(ck: Checkpoint, keys: set[str]) -> dict[str, Any]:
    """config.json's ViTConfig fields, or {} when it cannot be read as a ViT config (not an error here)."""
    try:
        return ck.config_fields(keys)
    except (ValueError, KeyError, TypeError):
        return {}


def _fit_position_tables(model: nn.Module, sd: StateDict, own: StateDict, known: dict[str, Any],
                         report: LoadReport) -> None:
    """Resample learned tables to the model's grid; drop a stored table that equals a fixed one."""
    grid = getattr(model, "grid_size", None)
    # the table's own prefix (class, distillation); register tokens have no position
    prefix = getattr(getattr(model, "pos_embed", None), "num_prefix_tokens", getattr(model, "num_prefix_tokens", 0))
    buffers = dict(model.named_buffers())
    for k in [k for k in sd if _POS_TABLE.match(k)]:
        t = sd[k]
        if k not in own:
            fixed = buffers.get(k)  # a sin-cos model keeps its table as a non-persistent buffer
            if fixed is not None and fixed.shape == t.shape and torch.allclose(fixed.float(), t.float(), atol=1e-5):
                del sd[k]
                report.notes.append(f"the stored {k} equals the model's fixed sin-cos table (checked, not loaded)")
            continue
        want = own[k]
        if grid is None or t.ndim != 3 or want.ndim != 3 or t.shape == want.shape or t.shape[2] != want.shape[2]:
            continue
        old = _grid_of(known, t.shape[1] - prefix)
        if old is None or want.shape[1] - prefix != grid[0] * grid[1]:
            continue  # leave it: the shape mismatch is reported
        antialias = bool(getattr(getattr(model, "cfg", None), "pos_embed_antialias", False))
        sd[k] = resample_pos_embed(t, tuple(grid), old, prefix, antialias=antialias)
        report.resampled.append(f"{k} {old[0]}x{old[1]} -> {grid[0]}x{grid[1]}")


def from_checkpoint(src: str | Path | Checkpoint, **overrides) -> nn.Module:
    """A vitkit ViT built to fit a checkpoint (its config.json + the weights' shapes), weights loaded.

    ``overrides`` change config fields first (``img_size=384`` resamples the position table,
    ``global_pool="avg"``); the number of heads must come from a config.json (or ``num_heads=``).
    """
    from ..models.vit import VisionTransformer
    ck = read_checkpoint(src)
    sd = ck.mapped()[0]
    known = {**ck.config_fields(set(sd)), **overrides}
    cfg = dataclasses.replace(infer_vit_config(sd, known), **overrides)
    model = VisionTransformer(cfg)
    load_weights(model, ck)
    return model
