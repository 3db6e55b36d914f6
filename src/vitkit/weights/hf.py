"""HF transformers ViT (``ViTModel``, ``ViTForImageClassification``) and the ViT-MAE encoder.

Key names are the ones ``save_pretrained`` writes to disk (``vit.encoder.layer.0.attention.attention.query.weight``);
transformers 5 renames them in memory (``vit.layers.0.attention.q_proj.weight``) and back on save,
so the on-disk table is the one that matters, and the in-memory one is accepted too (a
``torch.save(model.state_dict())``). HF keeps q, k, v as three Linears; vitkit fuses them.

``ViTModel``'s pooler (Linear + tanh on the class token) is vitkit's ``pre_logits``; the classifier
is ``head``. ``ViTForImageClassification`` pools the class token; HF has no mean-pooling head.
The MAE encoder (``ViTMAEModel`` / the ``vit.`` part of ``ViTMAEForPreTraining``) uses the same
names; its fixed sin-cos position table is stored, and loads as a (learned-layout) table, or is
checked against a vitkit sin-cos model's own table. The MAE decoder is dropped (reported).

DeiT (``DeiTForImageClassificationWithTeacher``, ``DeiTModel``) loads into a distilled ViT
(``distilled=True``): ``distillation_token`` is ``dist_token``, ``cls_classifier`` is ``head`` and
``distillation_classifier`` is ``head_dist``; both average in eval mode, as HF's ``logits``. DeiTModel's
pooler (on the class token only) is dropped and reported. ``DeiTForImageClassification`` (one head on
the class token, no distillation head) does not fit a distilled ViT strictly: load it with strict=False.
DINOv2 (``Dinov2Model``, ``Dinov2WithRegistersModel``) loads into a ViT with layer scale and register
tokens (``layer_scale``, ``reg_tokens``): ``layer_scale{1,2}.lambda1`` is ``ls{1,2}.gamma``,
``embeddings.register_tokens`` is ``reg_token``, and its block norms are ``norm1`` / ``norm2`` (the names
transformers' convert_dinov2_with_registers_to_hf.py ``create_rename_keys`` writes). The mask token (for
masked image modelling) is dropped and reported; the SwiGLU MLP of the giant model is not mapped.
Not yet: HF's hybrid ViT (a BiT backbone).
"""
from __future__ import annotations

from typing import Any

from ..models.vit import ViTConfig
from .mapping import FUSE_QKV, KeyMap, Rule, StateDict, register_format


def _strip_vit(sd: StateDict) -> StateDict:
    """``ViTForImageClassification`` / ``ViTMAEForPreTraining`` put the encoder under ``vit.``."""
    return {(k[4:] if k.startswith("vit.") else k): v for k, v in sd.items()}


_COMMON = (
    Rule("cls_token", "embeddings.cls_token"),
    Rule("dist_token", "embeddings.distillation_token"),  # DeiT only
    Rule("pos_embed.weight", "embeddings.position_embeddings"),
    Rule("patch_embed.proj.{p}", "embeddings.patch_embeddings.projection.{p}"),
)
_TOP = (
    Rule("norm.{p}", "layernorm.{p}"),
    Rule("pre_logits.0.{p}", "pooler.dense.{p}"),     # ViTModel's pooler: Linear + tanh
    Rule("head.{p}", "classifier.{p}"),
)

_BLOCKS = (  # save_pretrained names
    Rule("blocks.{i}.norm1.{p}", "encoder.layer.{i}.layernorm_before.{p}"),
    Rule("blocks.{i}.attn.qkv.{p}", tuple(f"encoder.layer.{{i}}.attention.attention.{n}.{{p}}"
                                          for n in ("query", "key", "value")), FUSE_QKV),
    Rule("blocks.{i}.attn.proj.{p}", "encoder.layer.{i}.attention.output.dense.{p}"),
    Rule("blocks.{i}.norm2.{p}", "encoder.layer.{i}.layernorm_after.{p}"),
    Rule("blocks.{i}.mlp.fc1.{p}", "encoder.layer.{i}.intermediate.dense.{p}"),
    Rule("blocks.{i}.mlp.fc2.{p}", "encoder.layer.{i}.output.dense.{p}"),
)
_BLOCKS_MEMORY = (  # transformers 5 in-memory names
    Rule("blocks.{i}.norm1.{p}", "layers.{i}.layernorm_before.{p}"),
    Rule("blocks.{i}.attn.qkv.{p}", tuple(f"layers.{{i}}.attention.{n}_proj.{{p}}" for n in "qkv"), FUSE_QKV),
    Rule("blocks.{i}.attn.proj.{p}", "layers.{i}.attention.o_proj.{p}"),
    Rule("blocks.{i}.norm2.{p}", "layers.{i}.layernorm_after.{p}"),
    Rule("blocks.{i}.mlp.fc1.{p}", "layers.{i}.mlp.fc1.{p}"),
    Rule("blocks.{i}.mlp.fc2.{p}", "layers.{i}.mlp.fc2.{p}"),
)

HF_VIT = register_format(KeyMap(
    name="hf",
    description="HF transformers ViT / ViT-MAE (save_pretrained names)",
    rules=_COMMON + _BLOCKS + _TOP,
    signature=(r"^(vit\.)?encoder\.layer\.\d+\.attention\.attention\.",),
    ignore=(r"^decoder\.", r"^embeddings\.mask_token$"),  # MAE / SimMIM decoders, SimMIM's mask token
    prepare=_strip_vit,
    priority=30,
))

HF_VIT_MEMORY = register_format(KeyMap(
    name="hf-memory",
    description="HF transformers 5 ViT / ViT-MAE (in-memory state_dict names)",
    rules=_COMMON + _BLOCKS_MEMORY + _TOP,
    signature=(r"^(vit\.)?layers\.\d+\.attention\.q_proj\.",),
    ignore=(r"^decoder\.", r"^embeddings\.mask_token$"),
    prepare=_strip_vit,
    priority=31,
))

_DINOV2_BLOCKS = (  # save_pretrained names (Dinov2Model, Dinov2WithRegistersModel)
    Rule("blocks.{i}.norm1.{p}", "encoder.layer.{i}.norm1.{p}"),
    Rule("blocks.{i}.attn.qkv.{p}", tuple(f"encoder.layer.{{i}}.attention.attention.{n}.{{p}}"
                                          for n in ("query", "key", "value")), FUSE_QKV),
    Rule("blocks.{i}.attn.proj.{p}", "encoder.layer.{i}.attention.output.dense.{p}"),
    Rule("blocks.{i}.ls1.gamma", "encoder.layer.{i}.layer_scale1.lambda1"),
    Rule("blocks.{i}.norm2.{p}", "encoder.layer.{i}.norm2.{p}"),
    Rule("blocks.{i}.mlp.fc1.{p}", "encoder.layer.{i}.mlp.fc1.{p}"),
    Rule("blocks.{i}.mlp.fc2.{p}", "encoder.layer.{i}.mlp.fc2.{p}"),
    Rule("blocks.{i}.ls2.gamma", "encoder.layer.{i}.layer_scale2.lambda1"),
)
_DINOV2_BLOCKS_MEMORY = (  # transformers 5 in-memory names
    Rule("blocks.{i}.attn.qkv.{p}", tuple(f"encoder.layer.{{i}}.attention.{n}_proj.{{p}}" for n in "qkv"), FUSE_QKV),
    Rule("blocks.{i}.attn.proj.{p}", "encoder.layer.{i}.attention.o_proj.{p}"),
)

HF_DINOV2 = register_format(KeyMap(
    name="hf-dinov2",
    description="HF transformers DINOv2 / DINOv2 with registers (save_pretrained or in-memory names)",
    rules=_COMMON + (Rule("reg_token", "embeddings.register_tokens"),) + _DINOV2_BLOCKS + _DINOV2_BLOCKS_MEMORY
    + (Rule("norm.{p}", "layernorm.{p}"),),
    signature=(r"^encoder\.layer\.\d+\.layer_scale1\.lambda1$",),
    ignore=(r"^embeddings\.mask_token$",),
    priority=25,  # before HF ViT, whose attention names DINOv2 shares
))


def _strip_deit(sd: StateDict) -> StateDict:
    """``DeiTForImageClassification*`` put the encoder under ``deit.``."""
    return {(k[5:] if k.startswith("deit.") else k): v for k, v in sd.items()}


_DEIT_HEADS = (
    Rule("norm.{p}", "layernorm.{p}"),
    Rule("head.{p}", "cls_classifier.{p}"),                  # WithTeacher: the class-token head
    Rule("head_dist.{p}", "distillation_classifier.{p}"),    # and the distillation-token head
    Rule("head.{p}", "classifier.{p}"),                      # DeiTForImageClassification: one head
)

HF_DEIT = register_format(KeyMap(
    name="hf-deit",
    description="HF transformers DeiT (save_pretrained or in-memory names)",
    rules=_COMMON + _BLOCKS + _BLOCKS_MEMORY + _DEIT_HEADS,
    signature=(r"^(deit\.)?embeddings\.distillation_token$",),
    ignore=(r"^pooler\.", r"^embeddings\.mask_token$"),  # DeiTModel's class-token pooler; MIM's mask token
    prepare=_strip_deit,
    priority=20,
))


# ---- config.json <-> ViTConfig -----------------------------------------------------------------
VIT_MODEL_TYPES = ("vit", "vit_mae", "deit", "dinov2", "dinov2_with_registers")
HF_ACTS = {"gelu": "gelu", "quick_gelu": "quick_gelu"}  # HF hidden_act -> vitkit act (the ones vitkit has)


def vit_config_from_hf(hf: dict[str, Any], keys: set[str] | None = None) -> dict[str, Any]:
    """ViTConfig fields from a HF ``config.json`` (``keys``: the checkpoint's vitkit keys, which tell
    whether a pooler / a head is present)."""
    mt = hf.get("model_type")
    if mt not in VIT_MODEL_TYPES:
        raise ValueError(f"config.json has model_type {mt!r}; vitkit maps HF {' / '.join(VIT_MODEL_TYPES)}")
    act = HF_ACTS.get(hf.get("hidden_act", "gelu"))
    if act is None:
        raise ValueError(f"config.json uses hidden_act {hf['hidden_act']!r}; vitkit's ViT has {sorted(HF_ACTS)}")
    dino = mt in ("dinov2", "dinov2_with_registers")
    if dino and hf.get("use_swiglu_ffn"):
        raise ValueError("config.json has use_swiglu_ffn=True (DINOv2 giant): vitkit's ViT has no SwiGLU MLP")
    D = int(hf["hidden_size"])
    inter = int(D * float(hf.get("mlp_ratio", 4))) if dino else int(hf.get("intermediate_size", 4 * D))
    img = hf.get("image_size", 224)
    patch = hf.get("patch_size", 16)
    if isinstance(patch, (list, tuple)):
        if patch[0] != patch[1]:
            raise ValueError(f"config.json has a non-square patch {patch}; vitkit's patches are square")
        patch = patch[0]
    archs = hf.get("architectures") or []
    classifier = any(a.endswith(("ForImageClassification", "ForImageClassificationWithTeacher")) for a in archs)
    if keys is not None:
        classifier = "head.weight" in keys
    num_classes = (len(hf.get("id2label") or {}) or int(hf.get("num_labels", 2))) if classifier else 0
    pooler = ("pre_logits.0.weight" in keys) if keys is not None else archs == ["ViTModel"]
    distilled = ("dist_token" in keys) if keys is not None else mt == "deit"
    out = dict(img_size=tuple(img) if isinstance(img, (list, tuple)) else int(img), patch_size=int(patch),
               in_chans=int(hf.get("num_channels", 3)), embed_dim=D, depth=int(hf["num_hidden_layers"]),
               num_heads=int(hf["num_attention_heads"]), mlp_ratio=inter / D,
               qkv_bias=bool(hf.get("qkv_bias", True)), class_token=True, global_pool="token",
               pos_embed="learn", norm_eps=float(hf.get("layer_norm_eps", 1e-12)), num_classes=num_classes,
               pre_logits=pooler, pre_logits_dim=int(hf.get("pooler_output_size") or D) if pooler else None,
               distilled=distilled, act=act)
    if dino:  # Dinov2Model: no pooler weights (its pooler output is the normed class token), layer scale
        out.update(pre_logits=False, pre_logits_dim=None, distilled=False,
                   layer_scale=float(hf.get("layerscale_value", 1.0)),
                   reg_tokens=int(hf.get("num_register_tokens", 4)) if mt == "dinov2_with_registers" else 0,
                   pos_embed_antialias=mt == "dinov2_with_registers")  # its interpolate_pos_encoding: antialias
    if int(D * out["mlp_ratio"]) != inter:  # float round-off: keep the MLP width exact
        raise ValueError(f"intermediate_size {inter} is not hidden_size {D} x a ratio vitkit can represent")
    return out


def clip_only_options(cfg: ViTConfig) -> list[str]:
    """The ViT options only CLIP's vision tower uses, which HF ViT and timm vit_* configs cannot say."""
    problems = []
    if cfg.act != "gelu":
        problems.append(f"act={cfg.act!r} (the exported config has the exact GELU)")
    if cfg.norm_pre:
        problems.append("norm_pre (a LayerNorm before the encoder, as CLIP's vision tower)")
    if not cfg.patch_bias:
        problems.append("patch_bias=False (the patch conv has a bias there)")
    return problems


def check_exportable(cfg: ViTConfig) -> None:
    """Raise a ValueError naming the first vitkit option HF's ViT cannot express."""
    problems = []
    if cfg.distilled:
        problems.append("a distillation token (writing HF DeiT is not supported yet)")
    if cfg.hybrid is not None:
        problems.append("a hybrid CNN stem (HF's ViTHybrid uses a BiT backbone with other names)")
    if cfg.pos_embed != "learn" or cfg.where != "input":
        problems.append(f"pos_embed={cfg.pos_embed!r} where={cfg.where!r} (HF ViT has one learned table at the input)")
    if not cfg.class_token:
        problems.append("no class token (HF ViT always has one)")
    if cfg.num_classes > 0 and cfg.global_pool != "token":
        problems.append("average pooling with a head (ViTForImageClassification pools the class token)")
    if cfg.num_classes > 0 and cfg.pre_logits:
        problems.append("pre-logits with a head (ViTForImageClassification has no pooler)")
    problems += clip_only_options(cfg)
    if problems:
        raise ValueError("cannot write this model as HF ViT: " + "; ".join(problems))


def hf_config_from_vit(cfg: ViTConfig, id2label: dict | None = None) -> dict[str, Any]:
    """A ``config.json`` that ``transformers.ViTConfig.from_pretrained`` reads."""
    check_exportable(cfg)
    D = cfg.embed_dim
    img = cfg.img_size if isinstance(cfg.img_size, int) else list(cfg.img_size)
    if isinstance(img, list) and img[0] == img[1]:
        img = img[0]
    out = {
        "architectures": ["ViTForImageClassification" if cfg.num_classes > 0 else "ViTModel"],
        "model_type": "vit",
        "hidden_size": D, "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.num_heads,
        "intermediate_size": int(D * cfg.mlp_ratio), "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.drop_rate, "attention_probs_dropout_prob": cfg.attn_drop_rate,
        "initializer_range": 0.02, "layer_norm_eps": cfg.norm_eps,
        "image_size": img, "patch_size": cfg.patch_size, "num_channels": cfg.in_chans,
        "qkv_bias": cfg.qkv_bias, "encoder_stride": cfg.patch_size,
        "pooler_output_size": (cfg.pre_logits_dim or D) if cfg.pre_logits else D, "pooler_act": "tanh",
        "dtype": "float32",
    }
    if cfg.num_classes > 0:
        labels = id2label if id2label and len(id2label) == cfg.num_classes else None
        labels = labels or {i: f"LABEL_{i}" for i in range(cfg.num_classes)}
        out["id2label"] = {str(k): v for k, v in labels.items()}
        out["label2id"] = {v: int(k) for k, v in labels.items()}
    return out


def to_hf_names(hf_sd: StateDict, cfg: ViTConfig) -> StateDict:
    """Put the encoder under ``vit.`` for ViTForImageClassification (ViTModel has no prefix)."""
    if cfg.num_classes <= 0:
        return hf_sd
    return {(k if k.startswith("classifier.") else "vit." + k): v for k, v in hf_sd.items()}
