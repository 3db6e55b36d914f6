"""timm ``vit_*`` (``timm.models.vision_transformer.VisionTransformer``) state dicts.

vitkit's ViT keeps timm's module names, so the table is nearly the identity: the position table is
a bare parameter in timm (``pos_embed``) and a module in vitkit (``pos_embed.weight``), and the
pre-logits layer of older timm versions is ``pre_logits.fc``. A hybrid stem's keys
(``patch_embed.backbone.*``) pass through by name, which fits vitkit's own stem; timm's ResNetV2
stems have other names and are reported as unmapped.

Not the same function, so refused: timm's ``fc_norm`` (global average pooling models normalise
*after* pooling; vitkit pools after the final norm, like HF and big_vision), layer scale
(``ls1.gamma``), register tokens and pre-norm (CLIP-style) models.
"""
from __future__ import annotations

from typing import Any

from ..models.vit import ViTConfig
from .hf import clip_only_options
from .mapping import KeyMap, Rule, StateDict, register_format

# vitkit's paper variants that timm registers under the same name (vit_{size}_patch{P}_{res}).
TIMM_NAMES = frozenset(
    ["vit_tiny_patch16_224", "vit_tiny_patch16_384", "vit_small_patch8_224", "vit_small_patch16_224",
     "vit_small_patch16_384", "vit_small_patch32_224", "vit_small_patch32_384", "vit_base_patch8_224",
     "vit_base_patch16_224", "vit_base_patch16_384", "vit_base_patch32_224", "vit_base_patch32_384",
     "vit_large_patch14_224", "vit_large_patch16_224", "vit_large_patch16_384", "vit_large_patch32_224",
     "vit_large_patch32_384", "vit_huge_patch14_224"])


def _refuse_other_functions(sd: StateDict) -> StateDict:
    if "fc_norm.weight" in sd:
        raise ValueError("this timm checkpoint normalises after average pooling (fc_norm); vitkit pools "
                         "after the final norm (timm's fc_norm=False), which is another function")
    return sd


TIMM = register_format(KeyMap(
    name="timm",
    description="timm vit_* (VisionTransformer)",
    rules=(
        Rule("cls_token", "cls_token"),
        Rule("dist_token", "dist_token"),            # timm deit_*_distilled_*
        Rule("pos_embed.weight", "pos_embed"),
        Rule("patch_embed.proj.{p}", "patch_embed.proj.{p}"),
        Rule("patch_embed.backbone.{rest}", "patch_embed.backbone.{rest}"),
        Rule("blocks.{i}.norm1.{p}", "blocks.{i}.norm1.{p}"),
        Rule("blocks.{i}.attn.qkv.{p}", "blocks.{i}.attn.qkv.{p}"),
        Rule("blocks.{i}.attn.proj.{p}", "blocks.{i}.attn.proj.{p}"),
        Rule("blocks.{i}.norm2.{p}", "blocks.{i}.norm2.{p}"),
        Rule("blocks.{i}.mlp.fc1.{p}", "blocks.{i}.mlp.fc1.{p}"),
        Rule("blocks.{i}.mlp.fc2.{p}", "blocks.{i}.mlp.fc2.{p}"),
        Rule("norm.{p}", "norm.{p}"),
        Rule("pre_logits.0.{p}", "pre_logits.fc.{p}"),
        Rule("head.{p}", "head.{p}"),
        Rule("head_dist.{p}", "head_dist.{p}"),
    ),
    signature=(r"^pos_embed$", r"^fc_norm\.", r"^pre_logits\.fc\.", r"^blocks\.\d+\.ls\d\.", r"^reg_token$"),
    prepare=_refuse_other_functions,
    priority=40,
))

# timm VisionTransformer options that vitkit's ViT does not have: they must be at these values.
_MUST_BE = {"no_embed_class": False, "reg_tokens": 0, "init_values": None, "pre_norm": False,
            "final_norm": True, "qk_norm": False, "dynamic_img_pad": False}


def vit_config_from_timm(cfg: dict[str, Any]) -> dict[str, Any]:
    """ViTConfig fields from a timm ``config.json`` (``architecture`` + ``model_args``)."""
    args = dict(cfg.get("model_args") or {})
    bad = {k: v for k, v in args.items() if k in _MUST_BE and v != _MUST_BE[k]}
    if bad:
        raise ValueError(f"timm options vitkit's ViT cannot express: {bad}")
    if args.get("fc_norm") is True or (args.get("global_pool") == "avg" and args.get("fc_norm") is None):
        raise ValueError("this timm model normalises after average pooling (fc_norm); "
                         "vitkit pools after the final norm")
    out: dict[str, Any] = {"norm_eps": 1e-6}  # timm's ViT LayerNorm eps
    for k in ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio",
              "qkv_bias", "class_token", "global_pool", "pos_embed"):
        if k in args:
            out[k] = tuple(args[k]) if isinstance(args[k], list) else args[k]
    if "num_classes" in cfg:
        out["num_classes"] = int(cfg["num_classes"])
    if cfg.get("global_pool") and "global_pool" not in out:
        out["global_pool"] = cfg["global_pool"]
    out["_architecture"] = cfg.get("architecture")
    return out


def check_exportable(cfg: ViTConfig) -> None:
    problems = []
    if cfg.pos_embed not in ("learn", "none") or cfg.where != "input":
        problems.append(f"pos_embed={cfg.pos_embed!r} where={cfg.where!r} "
                        "(timm's ViT has one learned table at the input)")
    if cfg.hybrid is not None:
        problems.append("a hybrid stem (vitkit's ResNet stem is not timm's ResNetV2)")
    problems += clip_only_options(cfg)
    if problems:
        raise ValueError("cannot write this model as timm vit_*: " + "; ".join(problems))


def timm_config_from_vit(cfg: ViTConfig) -> dict[str, Any]:
    """A timm hub-style ``config.json``: ``architecture`` + ``model_args`` rebuild the model in timm."""
    check_exportable(cfg)
    img = cfg.img_size if isinstance(cfg.img_size, int) else list(cfg.img_size)
    h, w = (img, img) if isinstance(img, int) else img
    args = dict(img_size=img, patch_size=cfg.patch_size, in_chans=cfg.in_chans, num_classes=cfg.num_classes,
                embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
                qkv_bias=cfg.qkv_bias, class_token=cfg.class_token, global_pool=cfg.global_pool,
                fc_norm=False, pos_embed=cfg.pos_embed)
    if cfg.pre_logits:  # older timm only (<= 0.6): a representation layer before the head
        args["representation_size"] = cfg.pre_logits_dim or cfg.embed_dim
    arch = cfg.name if cfg.name in TIMM_NAMES else "vit_base_patch16_224"  # model_args override the rest
    return {"architecture": arch, "num_classes": cfg.num_classes, "num_features": cfg.embed_dim,
            "global_pool": cfg.global_pool, "model_args": args,
            "pretrained_cfg": {"input_size": [cfg.in_chans, h, w], "num_classes": cfg.num_classes,
                               "first_conv": "patch_embed.proj", "classifier": "head",
                               "fixed_input_size": not cfg.dynamic_img_size}}
