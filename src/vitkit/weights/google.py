"""Google's JAX/Flax ViT checkpoints (``.npz``): the paper's layout and big_vision's.

The paper's code (google-research/vision_transformer, ``vit_jax/models_vit.py``) names its params

    embedding/kernel (P, P, C, D)   embedding/bias        cls (1, 1, D)
    Transformer/posembed_input/pos_embedding (1, 1+N, D)
    Transformer/encoderblock_{i}/LayerNorm_0, MultiHeadDotProductAttention_1/{query,key,value}/kernel
        (D, heads, hd) and /bias (heads, hd), .../out/kernel (heads, hd, D), LayerNorm_2,
        MlpBlock_3/Dense_0, MlpBlock_3/Dense_1
    Transformer/encoder_norm        pre_logits (Dense + tanh, when trained with it)    head

(optionally under ``opt/target/``). big_vision (``params/`` or ``params/img/``) numbers the
block's modules 0/0/1/0 instead of 0/1/2/3, keeps the position table at the top (``pos_embedding``,
patches only: its class token is appended after the table is added, so its row is zero here), and
may stack all blocks along a leading axis (``Transformer/encoderblock/...``, from ``nn.scan``).
Flax Dense kernels are (in, out) and conv kernels HWIO; torch wants (out, in) and OIHW. Flax's
``nn.gelu`` is the tanh approximation; vitkit (like timm) uses the exact GELU, so outputs differ
slightly (~1e-3) from the JAX originals while the weights are the same. A MAP head is not mapped.
"""
from __future__ import annotations

import re

import torch

from .mapping import (CONV_HWIO, FLAX_OUT_KERNEL, FLAX_QKV_BIAS, FLAX_QKV_KERNEL, TRANSPOSE, KeyMap, Rule,
                      StateDict, register_format)

_PREFIX = re.compile(r"^(.*?)embedding/kernel$")
QKV = ("query", "key", "value")


def _ln(ours: str, theirs: str) -> tuple[Rule, ...]:
    return Rule(f"{ours}.weight", f"{theirs}/scale"), Rule(f"{ours}.bias", f"{theirs}/bias")


def _dense(ours: str, theirs: str) -> tuple[Rule, ...]:
    return Rule(f"{ours}.weight", f"{theirs}/kernel", TRANSPOSE), Rule(f"{ours}.bias", f"{theirs}/bias")


def _rules(mha: int, ln2: int, mlp: int, pos: str) -> tuple[Rule, ...]:
    b = "Transformer/encoderblock_{i}"
    att = f"{b}/MultiHeadDotProductAttention_{mha}"
    return (
        Rule("patch_embed.proj.weight", "embedding/kernel", CONV_HWIO),
        Rule("patch_embed.proj.bias", "embedding/bias"),
        Rule("cls_token", "cls"),
        Rule("pos_embed.weight", pos),
        *_ln("blocks.{i}.norm1", f"{b}/LayerNorm_0"),
        Rule("blocks.{i}.attn.qkv.weight", tuple(f"{att}/{n}/kernel" for n in QKV), FLAX_QKV_KERNEL),
        Rule("blocks.{i}.attn.qkv.bias", tuple(f"{att}/{n}/bias" for n in QKV), FLAX_QKV_BIAS),
        Rule("blocks.{i}.attn.proj.weight", f"{att}/out/kernel", FLAX_OUT_KERNEL),
        Rule("blocks.{i}.attn.proj.bias", f"{att}/out/bias"),
        *_ln("blocks.{i}.norm2", f"{b}/LayerNorm_{ln2}"),
        *_dense("blocks.{i}.mlp.fc1", f"{b}/MlpBlock_{mlp}/Dense_0"),
        *_dense("blocks.{i}.mlp.fc2", f"{b}/MlpBlock_{mlp}/Dense_1"),
        *_ln("norm", "Transformer/encoder_norm"),
        *_dense("pre_logits.0", "pre_logits"),
        *_dense("head", "head"),
    )


def _prepare(sd: StateDict) -> StateDict:
    """Strip the checkpoint's prefix (``opt/target/``, ``params/``...) and unstack scanned blocks."""
    prefix = next((m.group(1) for k in sd if (m := _PREFIX.match(k))), "")
    sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)} | \
         {k: v for k, v in sd.items() if not k.startswith(prefix)}
    stacked = "Transformer/encoderblock/"
    out = {}
    for k, v in sd.items():
        if k.startswith(stacked):  # (depth, ...) from nn.scan -> one entry per block
            for i, t in enumerate(v.unbind(0)):
                out[f"Transformer/encoderblock_{i}/{k[len(stacked):]}"] = t
        else:
            out[k] = v
    return out


def _prepare_big_vision(sd: StateDict) -> StateDict:
    sd = _prepare(sd)
    if "cls" in sd and "pos_embedding" in sd:  # the class token never had a position: a zero row
        pe = sd["pos_embedding"]
        sd["pos_embedding"] = torch.cat([pe.new_zeros(pe.shape[0], 1, pe.shape[2]), pe], dim=1)
    return sd


_QUERY = re.compile(r"MultiHeadDotProductAttention_\d+/query/kernel$")


def _hints(sd: StateDict) -> dict:
    """Flax kernels keep the heads apart, (D, heads, hd); Flax's LayerNorm eps is 1e-6."""
    q = next((v for k, v in sd.items() if _QUERY.search(k)), None)
    return {"norm_eps": 1e-6, **({"num_heads": int(q.shape[-2])} if q is not None else {})}


GOOGLE = register_format(KeyMap(
    name="google",
    description="Google ViT .npz (google-research/vision_transformer)",
    rules=_rules(mha=1, ln2=2, mlp=3, pos="Transformer/posembed_input/pos_embedding"),
    signature=(r"(^|/)Transformer/encoderblock(_\d+)?/MultiHeadDotProductAttention_1/",),
    ignore=(r"^opt/",),
    prepare=_prepare,
    hints=_hints,
    priority=10,
))

BIG_VISION = register_format(KeyMap(
    name="big_vision",
    description="big_vision ViT .npz",
    rules=_rules(mha=0, ln2=1, mlp=0, pos="pos_embedding"),
    signature=(r"(^|/)Transformer/encoderblock(_\d+)?/MultiHeadDotProductAttention_0/",),
    ignore=(r"^opt/",),
    prepare=_prepare_big_vision,
    hints=_hints,
    priority=11,
))
