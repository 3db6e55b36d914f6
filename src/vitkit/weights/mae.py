"""HF transformers ``ViTMAEForPreTraining`` -> vitkit ``tasks.mae.MAE``, encoder and decoder.

    mae = load_hf_mae("vit-mae-folder/")          # config.json + model.safetensors, or "hf:org/name"
    loss, pred, mask = mae(images, noise)           # = HF's loss, logits, mask for the same noise

The encoder (``vit.*``) goes through ``weights.hf``'s tables (the ``backbone.`` prefix added here); the
decoder is the same block table with HF's decoder prefixes, run by the same ``mapping`` engine. HF's
decoder blocks have three on-disk spellings, all accepted:

    decoder.decoder_layers.{i}.attention.attention.query.weight    hub checkpoints (facebook/vit-mae-*)
    decoder.decoder_encoder.layer.{i}.attention.attention.query... what transformers 5 save_pretrained writes
    decoder.decoder_layers.{i}.attention.q_proj.weight             transformers 5 in memory (state_dict())

MAE's two position tables are fixed 2D sin-cos; they are stored, and checked here against vitkit's
own tables (encoder ``pos_embed="sincos"``, decoder ``SinCosPosEmbed``), not loaded. A table that is
not sin-cos is an error: a model freshly built by transformers 5.23 saves zeros there (its initialiser
skips them), which no trained MAE has. HF keeps ``int(N * (1 - mask_ratio))`` patches, so the MAE
built here uses keep_rule="floor" (see ``tasks.mae.num_keep``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..models.vit import VisionTransformer, ViTConfig
from ..tasks.mae import MAE
from .hf import _BLOCKS, _BLOCKS_MEMORY, HF_VIT, HF_VIT_MEMORY, vit_config_from_hf
from .io import state_mismatch
from .load import Checkpoint, read_checkpoint
from .mapping import KeyMap, Rule, StateDict


def _decoder_rules() -> tuple[Rule, ...]:
    """HF's encoder-block rules, re-aimed at the decoder: ``blocks.{i}`` -> ``decoder_blocks.{i}``."""
    rules = []
    for r in _BLOCKS:  # theirs: encoder.layer.{i}.<...>
        for prefix in ("decoder.decoder_layers.", "decoder.decoder_encoder.layer."):
            theirs = tuple(t.replace("encoder.layer.", prefix, 1) for t in r.theirs)
            rules.append(Rule("decoder_" + r.ours, theirs, r.transform))
    for r in _BLOCKS_MEMORY:  # theirs: layers.{i}.<...>
        rules.append(Rule("decoder_" + r.ours, tuple("decoder.decoder_" + t for t in r.theirs), r.transform))
    return tuple(rules) + (
        Rule("decoder_embed.{p}", "decoder.decoder_embed.{p}"),
        Rule("mask_token", "decoder.mask_token"),
        Rule("decoder_pos_embed.weight", "decoder.decoder_pos_embed"),   # fixed: checked, not loaded
        Rule("decoder_norm.{p}", "decoder.decoder_norm.{p}"),
        Rule("decoder_pred.{p}", "decoder.decoder_pred.{p}"),
    )


HF_MAE_DECODER = KeyMap(  # not registered: detection of plain HF ViT/MAE folders stays with weights.hf
    name="hf-mae-decoder",
    description="HF transformers ViTMAEForPreTraining decoder",
    rules=_decoder_rules(),
    signature=(r"^decoder\.decoder_(layers|encoder)\.",),
)


def mae_state_dict_from_hf(sd: StateDict) -> tuple[StateDict, list[str]]:
    """An HF ``ViTMAEForPreTraining`` state dict (any of the spellings above) -> (MAE state dict
    with ``backbone.*`` and decoder keys, HF keys no rule maps). Fixed tables are included as
    ``backbone.pos_embed.weight`` and ``decoder_pos_embed.weight`` for the caller to check."""
    enc_fmt = HF_VIT_MEMORY if HF_VIT_MEMORY.matches(sd) else HF_VIT
    enc, enc_rest, _, _ = enc_fmt.to_vitkit({k: v for k, v in sd.items() if not k.startswith("decoder.")})
    dec, dec_rest, _, _ = HF_MAE_DECODER.to_vitkit({k: v for k, v in sd.items() if k.startswith("decoder.")})
    out = {f"backbone.{k}": v for k, v in enc.items()}
    out.update(dec)
    return out, enc_rest + dec_rest


def mae_config_from_hf(hf: dict[str, Any], backbone_keys: set[str] | None = None) -> tuple[ViTConfig, dict[str, Any]]:
    """(the encoder's ViTConfig, ``MAE`` keyword arguments) from a ``ViTMAEForPreTraining`` config.json."""
    if hf.get("model_type") != "vit_mae" or "decoder_hidden_size" not in hf:
        kind = hf.get("model_type"), hf.get("architectures")
        raise ValueError(f"config.json describes {kind[0]!r} {kind[1] or ''}, not HF ViTMAEForPreTraining "
                         f"(model_type 'vit_mae' with a decoder); load a ViT checkpoint with "
                         f"vitkit.load_weights / vitkit.weights.from_checkpoint instead")
    fields = vit_config_from_hf(hf, backbone_keys)
    fields.update(pos_embed="sincos", num_classes=0, pre_logits=False, pre_logits_dim=None)
    cfg = ViTConfig(**fields)
    dim = int(hf["decoder_hidden_size"])
    inter = int(hf.get("decoder_intermediate_size", 4 * dim))
    if int(dim * (inter / dim)) != inter:
        raise ValueError(f"decoder_intermediate_size {inter} is not decoder_hidden_size {dim} x a ratio "
                         f"vitkit can represent")
    kwargs = dict(decoder_dim=dim, decoder_depth=int(hf["decoder_num_hidden_layers"]),
                  decoder_heads=int(hf["decoder_num_attention_heads"]), mlp_ratio=inter / dim,
                  mask_ratio=float(hf.get("mask_ratio", 0.75)), norm_pix_loss=bool(hf.get("norm_pix_loss", False)),
                  keep_rule="floor", qkv_bias=bool(hf.get("qkv_bias", True)),
                  norm_eps=float(hf.get("layer_norm_eps", 1e-12)))
    return cfg, kwargs


def _check_fixed(name: str, stored: torch.Tensor, own: torch.Tensor, path: Path) -> None:
    if tuple(stored.shape) != tuple(own.shape):
        raise ValueError(f"{path}: the stored {name} has shape {tuple(stored.shape)}, the model's fixed "
                         f"sin-cos table {tuple(own.shape)} (another image or patch size?)")
    diff = (stored.float() - own.float()).abs().max().item()
    if diff > 1e-5:
        hint = " (it is all zeros: transformers 5 saves zeros for a model it built but never trained or " \
               "loaded; run HF's initialize_weights first)" if stored.abs().max() == 0 else ""
        raise ValueError(f"{path}: the stored {name} is not MAE's fixed 2D sin-cos table (max diff {diff:.3g})"
                         f"{hint}; vitkit's MAE keeps that table fixed")


def load_hf_mae(src: str | Path | Checkpoint, **overrides) -> MAE:
    """A vitkit ``MAE`` (encoder + decoder) equal to an HF ``ViTMAEForPreTraining`` checkpoint.

    src: a ``save_pretrained`` folder (config.json + model.safetensors), or ``hf:org/name`` (downloaded
    into the HF cache unless HF_HUB_OFFLINE=1). ``overrides`` change ``MAE`` arguments (e.g. ``mask_ratio=0.5``,
    ``keep_rule="round"``). Raises ValueError for a checkpoint of another kind (a ViT classifier, an
    encoder-only ``ViTMAEModel``, timm), for position tables that are not sin-cos, and for any key
    that does not fit.
    """
    ck = read_checkpoint(src)
    if ck.format not in (HF_VIT, HF_VIT_MEMORY):
        raise ValueError(f"{ck.path} is a {ck.format.description} checkpoint; load_hf_mae reads HF "
                         f"ViTMAEForPreTraining folders")
    if ck.config is None:
        raise ValueError(f"{ck.path} has no config.json: the decoder's heads and the mask ratio cannot be "
                         f"read from weights; give the save_pretrained folder")
    if not HF_MAE_DECODER.matches(ck.state_dict):
        raise ValueError(f"{ck.path} has no MAE decoder (an encoder-only ViTMAEModel or a ViT?); load it into a "
                         f"ViT with vitkit.load_weights / vitkit.weights.from_checkpoint")
    sd, unmapped = mae_state_dict_from_hf(ck.state_dict)
    backbone_keys = {k[len("backbone."):] for k in sd if k.startswith("backbone.")}
    cfg, kwargs = mae_config_from_hf(ck.config, backbone_keys)
    mae = MAE(VisionTransformer(cfg), **{**kwargs, **overrides})
    for key, own in (("backbone.pos_embed.weight", mae.backbone.pos_embed.weight),
                     ("decoder_pos_embed.weight", mae.decoder_pos_embed.weight)):
        if key not in sd:
            raise ValueError(f"{ck.path} stores no {key.split('.')[0]} position table; an HF MAE checkpoint has one")
        _check_fixed(key, sd.pop(key), own, ck.path)
    problem = state_mismatch(mae.state_dict(), sd)
    if unmapped:
        extra = f"{len(unmapped)} keys no rule maps: {unmapped[:5]}"
        problem = f"{problem}; {extra}" if problem else extra
    if problem:
        raise ValueError(f"{ck.path} does not fit vitkit's MAE built from its config.json: {problem}")
    mae.load_state_dict(sd, strict=True)
    return mae
