"""timm ``efficientvit_b*`` (``timm/models/efficientvit_mit.py`` ``EfficientVit``) <-> vitkit ``EfficientViT``.

timm's names (``build_model_with_cfg`` with no filter: the hub files hold the module's own
``state_dict``) against vitkit's:

    stem.in_conv.*                              stem.0.*                 3x3 stride-2 ConvNormAct
    stem.res{j}.main.{depth,point}_conv.*       stem.{j+1}.fn.{0,1}.*     residual DSConvs
    stages.{i}.blocks.0.main.*                  stages.{i}.0.*           the downsampling MBConv
    stages.{i}.blocks.{j}.main.*                stages.{i}.{j}.fn.*      residual MBConvs (stages 0-1)
    stages.{i}.blocks.{j}.context_module.main.  stages.{i}.{j}.context.  LiteMLA (stages 2-3):
        qkv.conv.weight / aggreg.* /                qkv.weight / aggreg.* /
        proj.conv.weight / proj.norm.*              proj.0.weight / proj.1.*
    stages.{i}.blocks.{j}.local_module.main.*   stages.{i}.{j}.local.*   the MBConv FFN
    head.in_conv.*                              head_conv.*              1x1 ConvNormAct
    head.classifier.{0,1}.*                     head_fc.{0,1}.*          Linear (no bias), LayerNorm
    head.classifier.4.*                         head.*                   the classifier

The same function (tests/weights/test_efficientvit_timm.py runs a port of timm's modules on the same
file) with one config field: timm's ``LiteMLA`` divides by ``den + 1e-5`` where mit-han-lab's code (and
vitkit's default ``attn_eps``) adds 1e-15; the default sources load with ``attn_eps=1e-5``. Convs are
zero-padded by k // 2 in both, BatchNorm eps 1e-5, the head's LayerNorm 1e-5, Hardswish throughout,
q/k/v laid out head by head as [q | k | v]. timm's EfficientViT-L (``efficientvit_l*``,
``EfficientVitLarge``: GELU, fused MBConvs, 1e-7 norms) is another architecture: not mapped.
"""
from __future__ import annotations

from typing import Any

from .mapping import KeyMap, Rule, register_format

MAX_STEM = 8  # residual DSConvs in the stem (B0-B3: 1); timm's res{j} is vitkit's stem.{j + 1}

_BLK = "stages.{i}.blocks.{j}."
_OURS = "stages.{i}.{j}."

RULES = (
    Rule("stem.0.{rest}", "stem.in_conv.{rest}"),
    *[Rule(f"stem.{j + 1}.fn.{k}.{{rest}}", f"stem.res{j}.main.{conv}.{{rest}}")
      for j in range(MAX_STEM) for k, conv in enumerate(("depth_conv", "point_conv"))],
    Rule("stages.{i}.0.{m}.{rest}", "stages.{i}.blocks.0.main.{m}.{rest}"),     # first block: no residual
    Rule(_OURS + "fn.{m}.{rest}", _BLK + "main.{m}.{rest}"),                      # residual MBConvs
    Rule(_OURS + "context.qkv.weight", _BLK + "context_module.main.qkv.conv.weight"),
    Rule(_OURS + "context.aggreg.{rest}", _BLK + "context_module.main.aggreg.{rest}"),
    Rule(_OURS + "context.proj.0.weight", _BLK + "context_module.main.proj.conv.weight"),
    Rule(_OURS + "context.proj.1.{p}", _BLK + "context_module.main.proj.norm.{p}"),
    Rule(_OURS + "local.{rest}", _BLK + "local_module.main.{rest}"),
    Rule("head_conv.{rest}", "head.in_conv.{rest}"),
    Rule("head_fc.0.weight", "head.classifier.0.weight"),
    Rule("head_fc.1.{p}", "head.classifier.1.{p}"),
    Rule("head.{p}", "head.classifier.4.{p}"),
)


def efficientvit_config_from_timm(cfg: dict[str, Any]) -> dict[str, Any]:
    """EfficientViTConfig fields a timm hub ``config.json`` states: the number of classes, and any
    ``model_args``. timm's files name their architecture (``efficientvit_b1``), whose widths and depths
    are vitkit's registered ones; EfficientViT-L and ``model_args`` vitkit cannot express are refused."""
    arch = str(cfg.get("architecture", ""))
    if arch.startswith("efficientvit_l"):
        raise ValueError(f"timm's {arch} (EfficientVitLarge: GELU, fused MBConvs) is not vitkit's EfficientViT")
    args = dict(cfg.get("model_args") or {})
    bad = sorted(set(args) - {"widths", "depths", "head_dim", "head_widths", "in_chans", "num_classes",
                              "drop_rate", "global_pool"})
    if bad or args.get("global_pool", "avg") != "avg":
        raise ValueError(f"timm EfficientVit options vitkit's EfficientViT cannot express: "
                         f"{bad or {'global_pool': args.get('global_pool')}}")
    out: dict[str, Any] = {}
    for k in ("widths", "depths", "head_widths"):
        if k in args:
            out[k] = tuple(args[k])
    for k in ("head_dim", "in_chans"):
        if k in args:
            out[k] = int(args[k])
    if "num_classes" in cfg:
        out["num_classes"] = int(cfg["num_classes"])
    return out


TIMM_EFFICIENTVIT = register_format(KeyMap(
    name="timm-efficientvit",
    description="timm efficientvit_b* (EfficientVit, MIT)",
    rules=RULES,
    signature=(r"^stem\.in_conv\.conv\.weight$",),
    priority=45,
    config_fields=efficientvit_config_from_timm,
))
