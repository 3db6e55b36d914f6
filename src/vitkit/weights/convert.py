"""Write a ViT's weights in another library's layout: safetensors + the config.json it reads.

    export(model, "out/", to="hf")                       # a vitkit model -> HF ViT folder
    convert("hf-folder/", "out/", to="timm")             # any supported checkpoint -> timm / hf / vitkit

``to="hf"``: ``model.safetensors`` with ``save_pretrained``'s names + a ``config.json`` for
``transformers.ViTConfig`` (``ViTForImageClassification`` with a head, else ``ViTModel``).
``to="timm"``: timm's names + timm's hub ``config.json`` (``architecture`` + ``model_args``).
``to="vitkit"``: vitkit's names + ``{"model_config": ...}`` (what a vitkit run folder holds).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..models.vit import ViTConfig, VisionTransformer
from . import hf, timm
from .io import save_weights, state_mismatch, write_json
from .load import infer_vit_config, read_checkpoint
from .mapping import StateDict

TARGETS = ("vitkit", "hf", "timm")


def write_checkpoint(dst: str | Path, sd: StateDict, cfg: ViTConfig, to: str, id2label: dict | None = None) -> Path:
    """Write a vitkit-named ViT state dict ``sd`` of config ``cfg`` as a ``to`` folder; returns the weights file."""
    if to not in TARGETS:
        raise ValueError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"{dst} exists and is not a folder; the output is a folder (model.safetensors + config.json)")
    if to == "vitkit":
        out, config = sd, {"format": "vitkit", "model": cfg.name, "model_config": _json_cfg(cfg)}
    else:
        table = {"hf": hf.HF_VIT, "timm": timm.TIMM}[to]
        config = hf.hf_config_from_vit(cfg, id2label) if to == "hf" else timm.timm_config_from_vit(cfg)
        out, rest = table.from_vitkit(sd, {"num_heads": cfg.num_heads})
        if rest:
            raise ValueError(f"cannot write as {to}: no {to} name for {rest[:5]}")
        if to == "hf":
            out = hf.to_hf_names(out, cfg)
    dst.mkdir(parents=True, exist_ok=True)
    save_weights(dst / "model.safetensors", out)
    write_json(dst / "config.json", config)
    return dst / "model.safetensors"


def _json_cfg(cfg: ViTConfig) -> dict:
    d = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def export(model: VisionTransformer, dst: str | Path, to: str = "hf", id2label: dict | None = None) -> Path:
    """Write a vitkit ViT as a ``to`` checkpoint folder (see ``convert``)."""
    cfg = getattr(model, "cfg", None)
    if not isinstance(cfg, ViTConfig):
        raise ValueError(f"export writes ViTs; got a {type(model).__name__}")
    return write_checkpoint(dst, model.state_dict(), cfg, to, id2label)


def convert(src: str | Path, dst: str | Path, to: str, model: str | None = None) -> str:
    """Read any supported ViT checkpoint ``src`` and write it to the folder ``dst`` as ``to``.

    The ViT's config comes from ``src``'s config.json and the weights' shapes; ``model`` (a
    registered name) supplies what neither says (the number of heads of a bare state dict).
    Returns a one-line summary.
    """
    if to not in TARGETS:
        raise ValueError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    ck = read_checkpoint(src)
    sd, unmapped, ignored, _ = ck.mapped()
    if unmapped:
        raise ValueError(f"{ck.path} ({ck.format.description}): {len(unmapped)} keys no rule maps: {unmapped[:5]}")
    base = None
    if model is not None:
        from ..models import create_model
        base = getattr(create_model(model, device="meta"), "cfg", None)
        if not isinstance(base, ViTConfig):
            raise ValueError(f"{model} is not a ViT; convert maps ViT checkpoints")
    cfg = infer_vit_config(sd, ck.config_fields(set(sd)), base)
    with torch.device("meta"):  # check every key and shape against the model, no memory
        problem = state_mismatch(VisionTransformer(cfg).state_dict(), sd)
    if problem:
        raise ValueError(f"{ck.path}: the weights do not form a vitkit ViT of the inferred config: {problem}")
    id2label = (ck.config or {}).get("id2label")  # HF class names travel to an HF config
    out = write_checkpoint(dst, sd, cfg, to, id2label)
    dropped = f", dropped {len(ignored)} keys ({ignored[0]}...)" if ignored else ""
    if to == "timm" and cfg.norm_eps != 1e-6:
        dropped += (f"; note: timm's ViT LayerNorm eps is 1e-6, this checkpoint's {cfg.norm_eps:g}: "
                    "same weights, slightly different outputs")
    return (f"{ck.path} ({ck.format.description}) -> {out} ({to}): {len(sd)} tensors, D={cfg.embed_dim} "
            f"depth={cfg.depth} heads={cfg.num_heads} patch={cfg.patch_size} img={cfg.img_size}{dropped}")
