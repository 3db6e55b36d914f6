"""What a checkpoint says about its inputs and outputs: ``PretrainedCfg``, attached as ``model.pretrained_cfg``.

    model = vitkit.create_model("vit_base_patch16_224", pretrained=True)
    model.pretrained_cfg.mean, .std, .input_size, .crop_pct, .crop_mode, .interpolation, .label_names
    model.pretrained_cfg.resize_size()      # the size to resize to before the center crop
    json.dumps(model.pretrained_cfg.to_dict()); PretrainedCfg.from_dict(d)

Evaluation preprocesses as the source did: resize (``crop_mode`` "center": the shorter side to
``resize_size()``, keeping the aspect ratio; "squash": both sides to ``resize_size()``), then a
center crop to ``input_size[1:]``, then ``(x / 255 - mean) / std``. ``crop_pct`` = crop / resize,
timm's convention (timm: resize = floor(crop / crop_pct)).

The numbers come from the checkpoint's own files, never from vitkit's guesses:
- HF repositories: ``preprocessor_config.json`` (``image_mean``, ``image_std``, ``size``, ``crop_size``,
  ``do_center_crop``, ``resample``) and ``config.json``'s ``id2label``;
- timm repositories: ``config.json``'s ``pretrained_cfg`` (``input_size``, ``interpolation``,
  ``crop_pct``, ``crop_mode``, ``mean``, ``std``) and ``label_names`` where it has them.
A field the files do not state stays None (the user's transform decides).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# PIL resampling codes as HF's preprocessor_config.json writes them (PILImageResampling).
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
CROP_MODES = ("center", "squash")


@dataclass(frozen=True)
class PretrainedCfg:
    source: str                                   # "hf:org/name@<commit>", or the path it was read from
    format: str | None = None                     # checkpoint layout (mapping.FORMATS name): "hf", "timm", ...
    repo: str | None = None                       # hub repository, when it came from one
    revision: str | None = None                   # the commit the files came from (pinned)
    architecture: str | None = None               # the registered vitkit model it was loaded into
    input_size: tuple[int, int, int] | None = None  # (C, H, W) after the crop
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_pct: float | None = None                 # crop / resize (1.0: no margin)
    crop_mode: str | None = None                  # "center" (shorter side, keep aspect) | "squash"
    interpolation: str | None = None              # "bicubic" | "bilinear" | "nearest" | ...
    resize: tuple[int, int] | int | None = None   # exact resize size when the files state it (HF)
    num_classes: int | None = None
    label_names: tuple[str, ...] | None = None    # class index -> name (HF id2label, timm label_names)
    citation: str | None = None                   # where the default source is documented

    def __post_init__(self):
        for f in ("input_size", "mean", "std", "label_names"):
            v = getattr(self, f)
            if isinstance(v, list):
                object.__setattr__(self, f, tuple(v))
        if isinstance(self.resize, list):
            object.__setattr__(self, "resize", tuple(self.resize))
        if self.crop_mode is not None and self.crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {self.crop_mode!r}")

    def resize_size(self) -> tuple[int, int] | int | None:
        """The resize before the center crop: an int (the shorter side, crop_mode "center") or (H, W)
        ("squash"); None when the input size is unknown."""
        if self.resize is not None:
            return self.resize
        if self.input_size is None:
            return None
        h, w = self.input_size[1:]
        pct = self.crop_pct or 1.0
        if self.crop_mode == "squash":
            return math.floor(h / pct), math.floor(w / pct)
        return math.floor(min(h, w) / pct)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainedCfg:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **changes) -> PretrainedCfg:
        return dataclasses.replace(self, **changes)


def _hw(v: Any) -> tuple[int, int] | int | None:
    """HF size fields: an int, {"height", "width"}, {"shortest_edge"}."""
    if v is None:
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, dict):
        if "height" in v and "width" in v:
            return int(v["height"]), int(v["width"])
        if "shortest_edge" in v:
            return int(v["shortest_edge"])
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return int(v[0]), int(v[1])
    return None


def from_hf_preprocessor(pp: dict[str, Any], in_chans: int = 3) -> dict[str, Any]:
    """PretrainedCfg fields from a HF ``preprocessor_config.json``.

    ``size`` {"height", "width"} resizes both sides (squash); {"shortest_edge"} the shorter side (center).
    An int ``size`` is the shorter side when the processor center-crops (CLIP-style feature extractors)
    and both sides otherwise (ViTFeatureExtractor)."""
    out: dict[str, Any] = {}
    if pp.get("image_mean") is not None:
        out["mean"] = tuple(float(x) for x in pp["image_mean"])
    if pp.get("image_std") is not None:
        out["std"] = tuple(float(x) for x in pp["image_std"])
    out["interpolation"] = PIL_RESAMPLE.get(pp.get("resample", 2), "bilinear")  # HF's default: bilinear
    crop = _hw(pp.get("crop_size"))
    do_crop = bool(pp.get("do_center_crop", crop is not None))
    size = _hw(pp.get("size"))
    if isinstance(size, int) and not do_crop:
        size = (size, size)
    if size is None or pp.get("do_resize") is False:
        return out
    if isinstance(size, int):  # shorter side, then the crop
        ch, cw = (crop, crop) if isinstance(crop, int) else (crop or (size, size))
        out.update(crop_mode="center", resize=size, input_size=(in_chans, ch, cw), crop_pct=min(ch, cw) / size)
    else:
        ch, cw = (crop, crop) if isinstance(crop, int) else (crop or size)
        if not do_crop:
            ch, cw = size
        out.update(crop_mode="squash", resize=size, input_size=(in_chans, ch, cw), crop_pct=ch / size[0])
    return out


def from_timm_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """PretrainedCfg fields from a timm hub ``config.json`` (its ``pretrained_cfg``)."""
    pc = cfg.get("pretrained_cfg") or {}
    out: dict[str, Any] = {}
    if pc.get("input_size"):
        out["input_size"] = tuple(int(x) for x in pc["input_size"])
    for k in ("mean", "std"):
        if pc.get(k) is not None:
            out[k] = tuple(float(x) for x in pc[k])
    if pc.get("crop_pct") is not None:
        out["crop_pct"] = float(pc["crop_pct"])
    if pc.get("crop_mode") in CROP_MODES:
        out["crop_mode"] = pc["crop_mode"]
    elif pc:
        out["crop_mode"] = "center"  # timm's default
    if pc.get("interpolation"):
        out["interpolation"] = str(pc["interpolation"])
    n = cfg.get("num_classes", pc.get("num_classes"))
    if n is not None:
        out["num_classes"] = int(n)
    names = cfg.get("label_names") or pc.get("label_names")
    if names:
        out["label_names"] = tuple(str(x) for x in names)
    return out


def labels_from_hf(config: dict[str, Any]) -> tuple[str, ...] | None:
    id2label = config.get("id2label")
    if not id2label:
        return None
    return tuple(str(id2label[k]) for k in sorted(id2label, key=int))


def from_checkpoint_files(folder: Path | None, config: dict[str, Any] | None, source: str, fmt: str | None,
                          in_chans: int = 3, **extra) -> PretrainedCfg:
    """Read what a checkpoint folder states (config.json and preprocessor_config.json)."""
    from .io import read_json
    fields: dict[str, Any] = {}
    config = config or {}
    if "pretrained_cfg" in config or "architecture" in config:  # timm
        fields.update(from_timm_config(config))
    elif "model_type" in config:  # HF transformers
        labels = labels_from_hf(config)
        if labels is not None:
            fields.update(label_names=labels, num_classes=len(labels))
    pp = folder / "preprocessor_config.json" if folder is not None and folder.is_dir() else None
    if pp is not None and pp.is_file():
        fields.update(from_hf_preprocessor(read_json(pp), in_chans))
    fields.update({k: v for k, v in extra.items() if v is not None})
    return PretrainedCfg(source=source, format=fmt, **fields)
