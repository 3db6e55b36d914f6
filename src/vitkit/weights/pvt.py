"""HF transformers PVT (``PvtModel``, ``PvtForImageClassification``) <-> vitkit ``PyramidVisionTransformer``.

The names are the ones ``save_pretrained`` writes (transformers ``models/pvt/modeling_pvt.py``; its
conversion script ``convert_pvt_to_pytorch.py`` ``create_rename_keys`` / ``read_in_k_v`` lists them
next to whai362/PVT's originals): stage i's patch embedding and position table are
``pvt.encoder.patch_embeddings.{i}.*`` (the class token on the last one), its blocks
``pvt.encoder.block.{i}.{j}.*``, the final norm ``pvt.encoder.layer_norm``, the head ``classifier``.
transformers splits PVT's fused ``kv`` Linear into ``key`` and ``value`` (rows k then v); vitkit keeps
PVT's ``kv``. ``PvtModel`` has no ``pvt.`` prefix and no classifier.

Same function, checked by tests/weights/test_pvt_hf.py against transformers to 1e-5, with one config
field to say so: transformers' ``PvtPatchEmbeddings.layer_norm`` and the spatial reduction's
``layer_norm`` use ``config.layer_norm_eps`` (1e-6 in the published configs), where whai362/PVT's code
(and vitkit's default ``conv_norm_eps``) has PyTorch's 1e-5. A model built with another eps than the
config states is warned about (``function_fields``); ``create_model(name, pretrained=True)`` builds
with transformers' (``sources.py``). Everything else is the same: pre-LN blocks, exact GELU, the
class token joining the last stage with its own position, logits from the normed class token.
transformers reshapes each stage's position table to the current grid and interpolates it
(bilinear): at the trained size that is the table itself, as in vitkit; at other sizes
transformers' reshape only works when the grid has the trained number of positions.
"""
from __future__ import annotations

from typing import Any

from .mapping import FUSE_KV, KeyMap, Rule, StateDict, register_format


def _strip_pvt(sd: StateDict) -> StateDict:
    """``PvtForImageClassification`` puts the encoder under ``pvt.``; ``PvtModel`` has no prefix."""
    return {(k[4:] if k.startswith("pvt.") else k): v for k, v in sd.items()}


_EMB = "encoder.patch_embeddings.{i}."
_BLK = "encoder.block.{i}.{j}."
_OURS = "stages.{i}.blocks.{j}."

RULES = (
    Rule("stages.{i}.pos_embed", _EMB + "position_embeddings"),
    Rule("stages.{i}.cls_token", _EMB + "cls_token"),
    Rule("stages.{i}.patch_embed.proj.{p}", _EMB + "projection.{p}"),
    Rule("stages.{i}.norm.{p}", _EMB + "layer_norm.{p}"),
    Rule(_OURS + "norm1.{p}", _BLK + "layer_norm_1.{p}"),
    Rule(_OURS + "attn.q.{p}", _BLK + "attention.self.query.{p}"),
    Rule(_OURS + "attn.kv.{p}", (_BLK + "attention.self.key.{p}", _BLK + "attention.self.value.{p}"), FUSE_KV),
    Rule(_OURS + "attn.sr.{p}", _BLK + "attention.self.sequence_reduction.{p}"),
    Rule(_OURS + "attn.norm.{p}", _BLK + "attention.self.layer_norm.{p}"),
    Rule(_OURS + "attn.proj.{p}", _BLK + "attention.output.dense.{p}"),
    Rule(_OURS + "norm2.{p}", _BLK + "layer_norm_2.{p}"),
    Rule(_OURS + "mlp.fc1.{p}", _BLK + "mlp.dense1.{p}"),
    Rule(_OURS + "mlp.fc2.{p}", _BLK + "mlp.dense2.{p}"),
    Rule("norm.{p}", "encoder.layer_norm.{p}"),
    Rule("head.{p}", "classifier.{p}"),
)


def pvt_config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """PVTConfig fields a HF PVT ``config.json`` states (the ones that change the function or a shape).

    Refused (ValueError): another activation than the exact GELU, a first patch other than 4 or later
    ones other than 2 (transformers sizes stage i's table as ``image_size // 2 ** (i + 1)``), and
    kernels that differ from strides (transformers' conv has kernel ``strides[i]``, stride
    ``patch_sizes[i]``; PVT's and vitkit's have kernel = stride = patch)."""
    if hf.get("model_type") != "pvt":
        raise ValueError(f"config.json has model_type {hf.get('model_type')!r}; this maps HF 'pvt'")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"config.json uses hidden_act {hf['hidden_act']!r}; vitkit's PVT uses the exact GELU")
    patches = list(hf.get("patch_sizes", [4, 2, 2, 2]))
    if list(hf.get("strides", patches)) != patches:
        raise ValueError(f"strides {hf.get('strides')} differ from patch_sizes {patches}: transformers' "
                         f"patch conv then overlaps, PVT's (and vitkit's) does not")
    if patches[0] != 4 or any(p != 2 for p in patches[1:]):
        raise ValueError(f"patch_sizes {patches}: vitkit's PVT merges 2x2 after the first stage, as PVT")
    eps = float(hf.get("layer_norm_eps", 1e-6))
    archs = hf.get("architectures") or []
    classifier = any(a.endswith("ForImageClassification") for a in archs)
    img = hf.get("image_size", 224)
    out: dict[str, Any] = dict(
        img_size=tuple(img) if isinstance(img, (list, tuple)) else int(img), patch_size=patches[0],
        in_chans=int(hf.get("num_channels", 3)), embed_dims=tuple(hf["hidden_sizes"]), depths=tuple(hf["depths"]),
        num_heads=tuple(hf["num_attention_heads"]), sr_ratios=tuple(hf["sequence_reduction_ratios"]),
        mlp_ratios=tuple(hf["mlp_ratios"]), qkv_bias=bool(hf.get("qkv_bias", True)),
        norm_eps=eps, conv_norm_eps=eps)
    if classifier:
        out["num_classes"] = len(hf.get("id2label") or {}) or int(hf.get("num_labels", 1000))
    return out


HF_PVT = register_format(KeyMap(
    name="hf-pvt",
    description="HF transformers PVT (save_pretrained names)",
    rules=RULES,
    signature=(r"^(pvt\.)?encoder\.patch_embeddings\.\d+\.position_embeddings$",),
    prepare=_strip_pvt,
    priority=34,
    config_fields=pvt_config_from_hf,
    function_fields=(("conv_norm_eps", "patch-embedding and spatial-reduction LayerNorm eps", "layer_norm_eps"),
                     ("num_heads", "attention heads per stage", "num_attention_heads")),
))


def to_hf_names(hf_sd: StateDict, num_classes: int) -> StateDict:
    """Put the encoder under ``pvt.`` for PvtForImageClassification (PvtModel has no prefix)."""
    if num_classes <= 0:
        return hf_sd
    return {(k if k.startswith("classifier.") else "pvt." + k): v for k, v in hf_sd.items()}
