"""CLIP checkpoints -> ``vitkit.tasks.clip.CLIP``: HF ``CLIPModel`` folders and vitkit run folders.

    model = load_clip("path/to/hf-clip-folder")       # save_pretrained layout: config.json + model.safetensors
    model = load_clip("hf:openai/clip-vit-base-patch32")   # downloaded into the HF cache (HF_HUB_OFFLINE=1: cache only)
    model = load_clip("runs/clip")                     # a vitkit run folder (config.json has a "clip" entry)

HF ``CLIPModel`` (the names ``save_pretrained`` writes, transformers 5.23 included; they are also its
in-memory names) maps one to one:

    vision_model.embeddings.patch_embedding.weight     backbone.patch_embed.proj.weight  (conv, no bias)
    vision_model.embeddings.class_embedding (D,)       backbone.cls_token (1, 1, D)
    vision_model.embeddings.position_embedding.weight  backbone.pos_embed.weight (1, 1 + N, D)
    vision_model.pre_layrnorm / post_layernorm         backbone.norm_pre / backbone.norm
    *.encoder.layers.{i}.self_attn.{q,k,v}_proj        *.blocks.{i}.attn.qkv (fused, rows q, k, v)
    *.encoder.layers.{i}.self_attn.out_proj            *.blocks.{i}.attn.proj
    *.encoder.layers.{i}.layer_norm{1,2}, mlp.fc{1,2}  *.blocks.{i}.norm{1,2}, mlp.fc{1,2}
    text_model.embeddings.token_embedding / position_embedding   text.token_embedding / positional_embedding
    text_model.final_layer_norm                        text.norm
    visual_projection, text_projection, logit_scale    the same names

The vision tower is a vitkit ``VisionTransformer`` with ``patch_bias=False, norm_pre=True, act=hidden_act``;
the text tower pools where HF does: at the first ``eos_token_id``, or at the highest token id when
``eos_token_id == 2`` (checkpoints older than transformers PR #24773). HF's BPE tokenizer, when the
folder has its files, is attached as ``model.text.tokenizer`` (padded to the context length).

A vitkit run folder's ``config.json`` holds ``"clip": CLIP.config_dict()`` (write it with
``clip_meta(model, task)`` into ``fit``'s ``meta``): the image tower's registered name and full
config, the text tower (TextConfig fields, or ``kind: locked``), ``embed_dim``, the logit-scale
clip and the zero-shot templates. The weights are ``model.safetensors`` (or the EMA copy).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..models.text import TextConfig, TextTransformer, causal_mask
from ..models.vit import ViTConfig, VisionTransformer
from ..tasks.clip import CLIP, build_clip
from . import hub
from .io import find_weights, load_model_state, load_weights_files, read_json
from .mapping import FUSE_QKV, KeyMap, Rule, StateDict, Transform

CLASS_EMBEDDING = Transform("(D,) -> (1, 1, D)", lambda ts, ctx: ts[0].reshape(1, 1, -1),
                            lambda t, ctx: (t.reshape(-1),))
ADD_BATCH_DIM = Transform("(N, D) -> (1, N, D)", lambda ts, ctx: ts[0][None], lambda t, ctx: (t[0],))


def _tower_rules(ours: str, theirs: str) -> tuple[Rule, ...]:
    """Pre-LN encoder layers of either tower."""
    b, layer = f"{ours}.blocks.{{i}}", f"{theirs}.encoder.layers.{{i}}"
    return (
        Rule(f"{b}.norm1.{{p}}", f"{layer}.layer_norm1.{{p}}"),
        Rule(f"{b}.attn.qkv.{{p}}", tuple(f"{layer}.self_attn.{n}_proj.{{p}}" for n in "qkv"), FUSE_QKV),
        Rule(f"{b}.attn.proj.{{p}}", f"{layer}.self_attn.out_proj.{{p}}"),
        Rule(f"{b}.norm2.{{p}}", f"{layer}.layer_norm2.{{p}}"),
        Rule(f"{b}.mlp.fc1.{{p}}", f"{layer}.mlp.fc1.{{p}}"),
        Rule(f"{b}.mlp.fc2.{{p}}", f"{layer}.mlp.fc2.{{p}}"),
    )


HF_CLIP = KeyMap(
    name="hf-clip",
    description="HF transformers CLIPModel (save_pretrained names)",
    rules=(
        Rule("backbone.patch_embed.proj.weight", "vision_model.embeddings.patch_embedding.weight"),
        Rule("backbone.cls_token", "vision_model.embeddings.class_embedding", CLASS_EMBEDDING),
        Rule("backbone.pos_embed.weight", "vision_model.embeddings.position_embedding.weight", ADD_BATCH_DIM),
        Rule("backbone.norm_pre.{p}", "vision_model.pre_layrnorm.{p}"),
        Rule("backbone.norm.{p}", "vision_model.post_layernorm.{p}"),
        *_tower_rules("backbone", "vision_model"),
        Rule("text.token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
        Rule("text.positional_embedding", "text_model.embeddings.position_embedding.weight"),
        Rule("text.norm.{p}", "text_model.final_layer_norm.{p}"),
        *_tower_rules("text", "text_model"),
        Rule("visual_projection.weight", "visual_projection.weight"),
        Rule("text_projection.weight", "text_projection.weight"),
        Rule("logit_scale", "logit_scale"),
    ),
    ignore=(r"position_ids$",),  # buffers some older checkpoints stored
)

# HF CLIPConfig defaults (transformers 5.23), for keys a config.json leaves out.
_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                        num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)
_TEXT_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                      num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                      layer_norm_eps=1e-5, eos_token_id=49407)


def _mlp_ratio(width: int, inter: int) -> float:
    ratio = inter / width
    if int(width * ratio) != inter:
        raise ValueError(f"intermediate_size {inter} is not hidden_size {width} x a ratio vitkit can represent")
    return ratio


def clip_configs_from_hf(hf: dict[str, Any]) -> tuple[ViTConfig, TextConfig, int]:
    """(vision ViTConfig, TextConfig, projection dim) from a HF CLIP ``config.json``."""
    if hf.get("model_type") != "clip":
        raise ValueError(f"config.json has model_type {hf.get('model_type')!r}; load_clip maps HF 'clip' "
                         "(CLIPModel) folders and vitkit CLIP run folders")
    v = {**_VISION_DEFAULTS, **(hf.get("vision_config") or {})}
    t = {**_TEXT_DEFAULTS, **(hf.get("text_config") or {})}
    for side, c in (("vision", v), ("text", t)):
        if c["hidden_act"] not in ("gelu", "quick_gelu"):
            raise ValueError(f"{side}_config.hidden_act is {c['hidden_act']!r}; vitkit has 'gelu' and 'quick_gelu'")
    D = int(v["hidden_size"])
    vision = ViTConfig(img_size=int(v["image_size"]), patch_size=int(v["patch_size"]), in_chans=int(v["num_channels"]),
                       num_classes=0, embed_dim=D, depth=int(v["num_hidden_layers"]),
                       num_heads=int(v["num_attention_heads"]), mlp_ratio=_mlp_ratio(D, int(v["intermediate_size"])),
                       qkv_bias=True, class_token=True, global_pool="token", pos_embed="learn",
                       norm_eps=float(v["layer_norm_eps"]), act=v["hidden_act"], norm_pre=True, patch_bias=False)
    W = int(t["hidden_size"])
    eos = t.get("eos_token_id")
    text = TextConfig(vocab_size=int(t["vocab_size"]), context_length=int(t["max_position_embeddings"]), width=W,
                      depth=int(t["num_hidden_layers"]), num_heads=int(t["num_attention_heads"]),
                      mlp_ratio=_mlp_ratio(W, int(t["intermediate_size"])), qkv_bias=True, act=t["hidden_act"],
                      norm_eps=float(t["layer_norm_eps"]), eot_id=None if eos == 2 or eos is None else int(eos),
                      tokenizer="none")
    return vision, text, int(hf.get("projection_dim", 512))


class HFTextTokenizer:
    """A HF tokenizer folder as a CLIP tokenizer: strings -> ids (B, context_length), padded and truncated."""

    def __init__(self, folder: str | Path, context_length: int):
        from transformers import AutoTokenizer
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.context_length = context_length

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.context_length,
                              return_tensors="pt")["input_ids"]


_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


def clip_from_hf(folder: str | Path) -> CLIP:
    """A vitkit CLIP holding the weights of a HF ``CLIPModel`` folder (strict: every key mapped and filled)."""
    folder = Path(folder)
    vision_cfg, text_cfg, embed_dim = clip_configs_from_hf(read_json(folder / "config.json"))
    sd = load_weights_files(find_weights(folder))
    mapped, unmapped, _, _ = HF_CLIP.to_vitkit(sd)
    if unmapped:
        raise ValueError(f"{folder}: {len(unmapped)} HF CLIP keys have no vitkit counterpart, e.g. {unmapped[:4]}")
    with torch.device("meta"):  # build without initialising: every tensor comes from the file
        model = CLIP(VisionTransformer(vision_cfg), TextTransformer(text_cfg), embed_dim)
    model = model.to_empty(device="cpu")
    load_model_state(model, mapped)
    model.text.attn_mask = causal_mask(text_cfg.context_length)  # a non-persistent buffer: not in the file
    if any((folder / f).is_file() for f in _TOKENIZER_FILES):
        model.text.tokenizer = HFTextTokenizer(folder, text_cfg.context_length)
    return model.eval()


def clip_meta(model: CLIP, task=None) -> dict[str, Any]:
    """What a CLIP run's config.json needs (merge into ``fit``'s ``meta``): ``{"clip": ..., "clip_task": ...}``."""
    meta = {"clip": model.config_dict()}
    if task is not None and hasattr(task, "meta"):
        meta["clip_task"] = task.meta()
    return meta


def load_clip(src: str | Path, weights: str | None = None, device: str | torch.device = "cpu") -> CLIP:
    """A vitkit ``CLIP`` in eval mode from a HF CLIPModel folder, ``hf:org/name`` (see ``weights.hub``), or a
    vitkit CLIP run folder (``weights``: "model", "ema", or None = the EMA copy when the run kept one)."""
    folder = hub.resolve(src) if hub.is_hub_id(src) else Path(src)
    if not folder.is_dir():
        raise FileNotFoundError(f"{src}: not a folder; load_clip reads a HF CLIPModel folder "
                                "(config.json + model.safetensors) or a vitkit CLIP run folder")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: it is neither a HF CLIP folder nor a vitkit run")
    config = read_json(folder / "config.json")
    if "clip" in config:
        from ..train.checkpoint import load_run_weights
        model = build_clip(config["clip"])
        load_model_state(model, load_run_weights(folder, weights or ("ema" if config.get("ema_decay") else "model")))
    elif config.get("model_type") == "clip":
        model = clip_from_hf(folder)
    else:
        raise ValueError(f"{folder}/config.json is not a CLIP config: a vitkit run needs a 'clip' entry "
                         f"(write clip_meta(model) into fit's meta), a HF folder model_type 'clip' "
                         f"(got {config.get('model_type')!r})")
    return model.to(device).eval()
