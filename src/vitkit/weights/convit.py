"""timm ``convit_*`` (``timm/models/convit.py`` ``ConVit``) <-> vitkit ``ConViT``.

timm's hub files hold ``ConVit``'s own ``state_dict`` (``build_model_with_cfg``, no filter), whose names
are vitkit's but for two: the position table is a bare parameter (``pos_embed``; vitkit's
``pos_embed.weight``, patch tokens only in both), and a GPSA block keeps q and k in one Linear
(``attn.qk``, rows q then k) and v in another (``attn.v``), where vitkit's GPSA has one ``attn.qkv``
(rows q, k, v; the plain MHSA blocks are ``attn.qkv`` in both). ``attn.gating_param`` (lambda_h) and
``attn.pos_proj`` (v_pos, 3 -> heads) have the same names and meaning; ``rel_indices`` is not stored.

The same function (tests/weights/test_convit_timm.py runs a port of timm's modules on the same file):
timm's r_ij channels are (dx, dy, dx^2 + dy^2) with dx = x_key - x_query on a raster-ordered square
grid, vitkit's ``relative_offsets`` too; content softmax, positional softmax, the sigmoid gate and the
renormalisation as ``layers/gpsa.py``; LayerNorm eps 1e-6 (timm's ``LayerNorm``); the class token joins
after the GPSA blocks; logits from the normed class token. (timm's ``local_init`` puts a head's
offsets on other axes than vitkit's: initialisation only, loaded weights overwrite it.)
"""
from __future__ import annotations

from typing import Any

from .mapping import FUSE_QK_V, KeyMap, Rule, register_format

_GPSA = "blocks.{i}.attn.gating_param"  # the same key in both: marks a GPSA block

RULES = (
    Rule("cls_token", "cls_token"),
    Rule("pos_embed.weight", "pos_embed"),
    Rule("patch_embed.proj.{p}", "patch_embed.proj.{p}"),
    Rule("blocks.{i}.norm1.{p}", "blocks.{i}.norm1.{p}"),
    Rule("blocks.{i}.attn.qkv.{p}", ("blocks.{i}.attn.qk.{p}", "blocks.{i}.attn.v.{p}"), FUSE_QK_V, when=_GPSA),
    Rule("blocks.{i}.attn.qkv.{p}", "blocks.{i}.attn.qkv.{p}"),                 # MHSA blocks
    Rule("blocks.{i}.attn.gating_param", "blocks.{i}.attn.gating_param"),
    Rule("blocks.{i}.attn.pos_proj.{p}", "blocks.{i}.attn.pos_proj.{p}"),
    Rule("blocks.{i}.attn.proj.{p}", "blocks.{i}.attn.proj.{p}"),
    Rule("blocks.{i}.norm2.{p}", "blocks.{i}.norm2.{p}"),
    Rule("blocks.{i}.mlp.fc1.{p}", "blocks.{i}.mlp.fc1.{p}"),
    Rule("blocks.{i}.mlp.fc2.{p}", "blocks.{i}.mlp.fc2.{p}"),
    Rule("norm.{p}", "norm.{p}"),
    Rule("head.{p}", "head.{p}"),
)

# ConVit(...) arguments vitkit's ConViTConfig holds, by timm's name (embed_dim: timm's is per head)
_ARGS = {"img_size": "img_size", "patch_size": "patch_size", "in_chans": "in_chans", "depth": "depth",
         "num_heads": "num_heads", "mlp_ratio": "mlp_ratio", "qkv_bias": "qkv_bias",
         "local_up_to_layer": "local_up_to_layer", "locality_strength": "locality_strength",
         "use_pos_embed": "pos_embed"}


def convit_config_from_timm(cfg: dict[str, Any]) -> dict[str, Any]:
    """ConViTConfig fields a timm hub ``config.json`` states: timm's LayerNorm eps (1e-6), the number of
    classes, and any ``model_args`` (``embed_dim`` there is per head: timm multiplies it by the heads).
    Average pooling and a hybrid backbone are refused (vitkit's ConViT pools the class token)."""
    args = dict(cfg.get("model_args") or {})
    pool = cfg.get("global_pool", args.get("global_pool", "token"))
    if pool not in ("token", None):
        raise ValueError(f"timm ConVit global_pool={pool!r}: vitkit's ConViT classifies the class token")
    bad = sorted(set(args) - set(_ARGS) - {"embed_dim", "num_classes", "global_pool", "drop_rate", "hybrid_backbone"})
    if bad or args.get("hybrid_backbone") is not None:
        raise ValueError(f"timm ConVit options vitkit's ConViT cannot express: {bad or ['hybrid_backbone']}")
    out: dict[str, Any] = {"norm_eps": 1e-6}  # timm.layers.LayerNorm's default eps
    for theirs, ours in _ARGS.items():
        if theirs in args:
            v = args[theirs]
            out[ours] = tuple(v) if isinstance(v, list) else v
    if "embed_dim" in args:
        heads = int(args.get("num_heads", 0)) or None
        if heads is None:
            raise ValueError("timm ConVit model_args give embed_dim (per head) without num_heads")
        out["embed_dim"] = int(args["embed_dim"]) * heads
    if "num_classes" in cfg:
        out["num_classes"] = int(cfg["num_classes"])
    return out


TIMM_CONVIT = register_format(KeyMap(
    name="timm-convit",
    description="timm convit_* (ConVit)",
    rules=RULES,
    signature=(r"^blocks\.\d+\.attn\.qk\.weight$",),  # vitkit's GPSA has qkv; timm's ViT has no qk
    priority=35,  # before timm's ViT, whose bare pos_embed it shares
    config_fields=convit_config_from_timm,
))
