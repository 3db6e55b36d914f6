"""HF transformers Swin (``SwinModel``, ``SwinForImageClassification``) <-> vitkit ``SwinTransformer``.

Two tables on the one mapping machinery: the names ``save_pretrained`` writes to disk
(``swin.encoder.layers.0.blocks.0.attention.self.query.weight``), which real checkpoints use, and
the names transformers 5 uses in memory (``...blocks.0.attention.q_proj.weight``, a
``torch.save(model.state_dict())``). HF keeps q, k, v as three Linears; vitkit fuses them.

One layout difference that is not a rename: HF's patch merging is the *last* module of stage i
(``encoder.layers.{i}.downsample``), vitkit's is the *first* of stage i + 1 (``stages.{i+1}.downsample``),
so each stage's output is one map. Those rules are spelled out per stage (up to 8 stages).

Same function, checked by the parity test: HF pads an input that is not a multiple of the patch
size, vitkit refuses it at the door (ValueError); every other padding (windows, odd maps before
merging) is the same. HF's embedding and merging LayerNorms always use eps 1e-5 and its block and
final norms ``layer_norm_eps``; vitkit has one ``norm_eps``, so a config with another eps is refused.
Not mapped: absolute position embeddings (``use_absolute_embeddings``) and SimMIM's decoder.

    load_weights(create_model("swin_tiny_patch4_window7_224"), "hf-swin-folder/")  # detected as "hf-swin"
"""
from __future__ import annotations

from typing import Any

from ..models.swin import SwinConfig
from .mapping import FUSE_QKV, KeyMap, Rule, StateDict, register_format

MAX_STAGES = 8


def _strip_swin(sd: StateDict) -> StateDict:
    """``SwinForImageClassification`` puts the backbone under ``swin.``; ``SwinModel`` has no prefix."""
    if any(k.startswith("embeddings.position_embeddings") or k.startswith("swin.embeddings.position_embeddings")
           for k in sd):
        raise ValueError("this HF Swin checkpoint has absolute position embeddings "
                         "(use_absolute_embeddings=True), which vitkit's Swin does not have")
    return {(k[5:] if k.startswith("swin.") else k): v for k, v in sd.items()}


def _rules(attn: dict[str, str], mlp: tuple[str, str]) -> tuple[Rule, ...]:
    blk = "encoder.layers.{i}.blocks.{j}."
    ours = "stages.{i}.blocks.{j}."
    return (
        Rule("patch_embed.proj.{p}", "embeddings.patch_embeddings.projection.{p}"),
        Rule("patch_norm.{p}", "embeddings.norm.{p}"),
        Rule(ours + "norm1.{p}", blk + "layernorm_before.{p}"),
        Rule(ours + "attn.qkv.{p}", tuple(blk + attn[n] + ".{p}" for n in "qkv"), FUSE_QKV),
        Rule(ours + "attn.rel_pos.table", blk + attn["table"]),
        Rule(ours + "attn.proj.{p}", blk + attn["proj"] + ".{p}"),
        Rule(ours + "norm2.{p}", blk + "layernorm_after.{p}"),
        Rule(ours + "mlp.fc1.{p}", blk + mlp[0] + ".{p}"),
        Rule(ours + "mlp.fc2.{p}", blk + mlp[1] + ".{p}"),
    ) + tuple(
        Rule(f"stages.{k + 1}.downsample.{m}.{{p}}", f"encoder.layers.{k}.downsample.{m}.{{p}}")
        for k in range(MAX_STAGES - 1) for m in ("norm", "reduction")
    ) + (
        Rule("norm.{p}", "layernorm.{p}"),
        Rule("head.{p}", "classifier.{p}"),
    )


HF_SWIN = register_format(KeyMap(
    name="hf-swin",
    description="HF transformers Swin (save_pretrained names)",
    rules=_rules({"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                  "table": "attention.self.relative_position_bias_table", "proj": "attention.output.dense"},
                 ("intermediate.dense", "output.dense")),
    signature=(r"^(swin\.)?encoder\.layers\.\d+\.blocks\.\d+\.attention\.self\.",),
    ignore=(r"^decoder\.", r"^embeddings\.mask_token$", r"relative_position_index$"),
    prepare=_strip_swin,
    priority=32,
))

HF_SWIN_MEMORY = register_format(KeyMap(
    name="hf-swin-memory",
    description="HF transformers 5 Swin (in-memory state_dict names)",
    rules=_rules({"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj",
                  "table": "attention.relative_position_bias.relative_position_bias_table",
                  "proj": "attention.o_proj"},
                 ("mlp.fc1", "mlp.fc2")),
    signature=(r"^(swin\.)?encoder\.layers\.\d+\.blocks\.\d+\.attention\.q_proj\.",),
    ignore=(r"^decoder\.", r"^embeddings\.mask_token$", r"relative_position_index$"),
    prepare=_strip_swin,
    priority=33,
))


def to_hf_names(hf_sd: StateDict, num_classes: int) -> StateDict:
    """Put the backbone under ``swin.`` for SwinForImageClassification (SwinModel has no prefix)."""
    if num_classes <= 0:
        return hf_sd
    return {(k if k.startswith("classifier.") else "swin." + k): v for k, v in hf_sd.items()}


def swin_config_from_hf(hf: dict[str, Any], has_head: bool | None = None) -> dict[str, Any]:
    """SwinConfig fields from a HF Swin ``config.json`` (``has_head``: whether the weights hold a
    classifier; by default read from ``architectures``)."""
    if hf.get("model_type") != "swin":
        raise ValueError(f"config.json has model_type {hf.get('model_type')!r}; this maps HF 'swin'")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"config.json uses hidden_act {hf['hidden_act']!r}; vitkit's Swin uses the exact GELU")
    if hf.get("use_absolute_embeddings"):
        raise ValueError("use_absolute_embeddings=True: vitkit's Swin has no absolute position embeddings")
    eps = float(hf.get("layer_norm_eps", 1e-5))
    if eps != 1e-5:
        raise ValueError(f"layer_norm_eps {eps:g}: HF's embedding and merging norms stay at 1e-5, and vitkit's "
                         f"Swin has one norm_eps for all, so it cannot be the same function")
    img, patch = hf.get("image_size", 224), hf.get("patch_size", 4)
    if isinstance(patch, (list, tuple)):
        if patch[0] != patch[1]:
            raise ValueError(f"non-square patch {patch}: vitkit's patches are square")
        patch = patch[0]
    if has_head is None:
        has_head = any(a.endswith("ForImageClassification") for a in hf.get("architectures") or [])
    num_classes = (len(hf.get("id2label") or {}) or int(hf.get("num_labels", 2))) if has_head else 0
    return dict(img_size=tuple(img) if isinstance(img, (list, tuple)) else int(img), patch_size=int(patch),
                in_chans=int(hf.get("num_channels", 3)), num_classes=num_classes,
                embed_dim=int(hf["embed_dim"]), depths=tuple(hf["depths"]), num_heads=tuple(hf["num_heads"]),
                window_size=int(hf.get("window_size", 7)), mlp_ratio=float(hf.get("mlp_ratio", 4.0)),
                qkv_bias=bool(hf.get("qkv_bias", True)), drop_path_rate=float(hf.get("drop_path_rate", 0.1)),
                norm_eps=eps)


def hf_config_from_swin(cfg: SwinConfig) -> dict[str, Any]:
    """A ``config.json`` that ``transformers.SwinConfig`` reads for this model."""
    if cfg.norm_eps != 1e-5:
        raise ValueError(f"norm_eps {cfg.norm_eps:g}: HF's Swin keeps its embedding/merging norms at 1e-5")
    img = cfg.img_size if isinstance(cfg.img_size, int) else list(cfg.img_size)
    out = {"architectures": ["SwinForImageClassification" if cfg.num_classes > 0 else "SwinModel"],
           "model_type": "swin", "image_size": img, "patch_size": cfg.patch_size, "num_channels": cfg.in_chans,
           "embed_dim": cfg.embed_dim, "depths": list(cfg.depths), "num_heads": list(cfg.num_heads),
           "window_size": cfg.window_size, "mlp_ratio": cfg.mlp_ratio, "qkv_bias": cfg.qkv_bias,
           "hidden_dropout_prob": cfg.drop_rate, "attention_probs_dropout_prob": cfg.attn_drop_rate,
           "drop_path_rate": cfg.drop_path_rate, "hidden_act": "gelu", "use_absolute_embeddings": False,
           "layer_norm_eps": cfg.norm_eps, "dtype": "float32"}
    if cfg.num_classes > 0:
        out["id2label"] = {str(i): f"LABEL_{i}" for i in range(cfg.num_classes)}
        out["label2id"] = {f"LABEL_{i}": i for i in range(cfg.num_classes)}
    return out
