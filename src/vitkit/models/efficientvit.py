"""EfficientViT (Cai et al. 2023, "EfficientViT: Lightweight Multi-Scale Attention for High-Resolution
Dense Prediction"), the B0-B3 classification models.

    stem:        3x3 conv (stride 2) + BN + Hardswish, then depths[0] residual DSConvs
                 (depthwise 3x3 -> pointwise, BN after each)
    stages 1-2:  depths[i] MBConvs (expand 4); the first one downsamples (stride 2, no residual),
                 the rest are residual
    stages 3-4:  an MBConv that downsamples (stride 2, fewer norms, no residual), then depths[i]
                 EfficientViT blocks:  x + LiteMLA(x)  (multi-scale ReLU linear attention, Sec. 3.1)
                                       x + MBConv(x)   (the FFN with a depthwise conv, fewer norms)
    head:        1x1 conv to head_widths[0] + BN + Hardswish -> global average pool ->
                 Linear (no bias) to head_widths[1] + LayerNorm + Hardswish -> dropout -> Linear

Widths, depths and head dims of B0-B3 are those of mit-han-lab/efficientvit
(``efficientvit/models/efficientvit/backbone.py`` and ``cls.py``). Maps stay channels-first
(B, C, H, W). Linear attention is O(N) in the number of tokens, so the model takes any resolution.

Training from scratch follows the official recipe (``applications/efficientvit_cls``):
    zero_last_gamma   the last BatchNorm of every residual branch starts at gamma = 0, so every
                      x + f(x) starts as the identity (``--last_gamma 0``, ``apps/utils/init.py``).
    drop_path_rate    stochastic depth on the residual blocks of the four stages, linear in depth:
                      the i-th of n drops its branch with p = rate (i + 1) / n (``models/nn/drop.py``
                      ``apply_droppath``); 0.05 (``configs/imagenet/default.yaml``), 0.1 for B3.
Both change training only: loaded weights overwrite the zero gammas, and drop path has no weights.
The official drop path also ramps p with training progress (``scheduled=True``: p x the fraction
of the post-warmup steps done, so its mean over a run is half the final p); vitkit's trainer tells
a model nothing of its progress, so here p is constant from the first step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..layers import DropPath, Linear, MultiScaleLinearAttention, check_image, to_2tuple
from ..layers.init import init_transformer_
from ..layers.mlp import ConvNormAct, MBConv
from .heads import linear_head
from .registry import build_from_config, register_model


@dataclass(frozen=True)
class EfficientViTConfig:
    img_size: int | tuple[int, int] = 224
    in_chans: int = 3
    num_classes: int = 1000
    widths: tuple[int, ...] = (8, 16, 32, 64, 128)     # stem, stages 1-4
    depths: tuple[int, ...] = (1, 2, 2, 2, 2)          # stem DSConvs, blocks per stage
    strides: tuple[int, ...] = (2, 2, 2, 2, 2)         # stem conv, first block of each stage
    head_dim: int = 16                                 # per-head q/k/v dim of the linear attention
    expand_ratio: float = 4.0                          # MBConv hidden = expand_ratio * in
    scales: tuple[int, ...] = (5,)                     # multi-scale aggregation kernels
    head_widths: tuple[int, int] = (1024, 1280)        # classifier: 1x1 conv width, hidden Linear width
    drop_rate: float = 0.0                             # dropout before the last Linear
    drop_path_rate: float = 0.05                       # stochastic depth of the stages' residual blocks (official)
    zero_last_gamma: bool = True                       # residual branches start at zero (official init)
    norm_eps: float = 1e-5                             # BatchNorm / LayerNorm eps (PyTorch default)
    dynamic_img_size: bool = False                     # accept any H, W
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        for f in ("widths", "depths", "strides", "scales", "head_widths", "img_size"):
            if isinstance(getattr(self, f), list):  # from config.json
                object.__setattr__(self, f, tuple(getattr(self, f)))
        if not len(self.widths) == len(self.depths) == len(self.strides) == 5:
            raise ValueError(f"widths {self.widths}, depths {self.depths} and strides {self.strides} need 5 "
                             f"entries each (stem + 4 stages)")
        for w in self.widths[3:]:
            if w < self.head_dim:
                raise ValueError(f"attention stage width {w} is below head_dim {self.head_dim}")
        if len(self.head_widths) != 2:
            raise ValueError(f"head_widths needs 2 entries, got {self.head_widths}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    @property
    def num_features(self) -> int:
        return self.widths[-1]


class Residual(nn.Module):
    """x + DropPath(fn(x)) (the official ``ResidualBlock`` with an identity shortcut)."""

    def __init__(self, fn: nn.Module, drop_path: float = 0.0):
        super().__init__()
        self.fn = fn
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.fn(x))


class DSConv(nn.Sequential):
    """Depthwise 3x3 (BN, Hardswish) -> pointwise 1x1 (BN). (B, C, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_chans: int, out_chans: int, norm_eps: float):
        super().__init__(ConvNormAct(in_chans, in_chans, 3, groups=in_chans, act_layer=nn.Hardswish,
                                     norm_eps=norm_eps),
                         ConvNormAct(in_chans, out_chans, 1, norm_eps=norm_eps))


class EfficientViTBlock(nn.Module):
    """Context (multi-scale linear attention) then local (MBConv) module, each residual (two residual
    blocks, as the official ``context_module`` and ``local_module``). (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim: int, head_dim: int, expand_ratio: float, scales: tuple[int, ...], norm_eps: float):
        super().__init__()
        self.context = MultiScaleLinearAttention(dim, dim, head_dim=head_dim, scales=scales)
        self.local = MBConv(dim, dim, expand_ratio, fewer_norm=True, norm_eps=norm_eps)
        self.drop_path_context, self.drop_path_local = DropPath(), DropPath()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path_context(self.context(x))
        return x + self.drop_path_local(self.local(x))


def _last_batchnorm(branch: nn.Module) -> nn.BatchNorm2d:
    """The last BatchNorm of a residual branch: DSConv's and MBConv's ``point_conv`` norm, LiteMLA's
    ``proj`` norm (the modules the official ``zero_last_gamma`` zeroes)."""
    return [m for m in branch.modules() if isinstance(m, nn.BatchNorm2d)][-1]


class EfficientViT(nn.Module):
    """EfficientViT classifier. (B, C, H, W) -> logits (B, num_classes).

    ``forward_features`` -> the last stage's map (B, num_features, H/32, W/32) (strides 2 everywhere);
    ``forward_head(pre_logits=True)`` -> the head's hidden features (B, head_widths[1]).
    """

    def __init__(self, cfg: EfficientViTConfig):
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.num_features = cfg.num_features
        self.img_size = to_2tuple(cfg.img_size)
        self.input_size = (cfg.in_chans, *self.img_size)  # (C, H, W)
        w, d, s, eps = cfg.widths, cfg.depths, cfg.strides, cfg.norm_eps

        self.stem = nn.Sequential(
            ConvNormAct(cfg.in_chans, w[0], 3, s[0], act_layer=nn.Hardswish, norm_eps=eps),
            *[Residual(DSConv(w[0], w[0], eps)) for _ in range(d[0])])
        self.stages = nn.ModuleList()
        for i in (1, 2):  # local stages: MBConvs only
            blocks = []
            for j in range(d[i]):
                cin, stride = (w[i - 1], s[i]) if j == 0 else (w[i], 1)
                mb = MBConv(cin, w[i], cfg.expand_ratio, stride=stride, norm_eps=eps)
                blocks.append(Residual(mb) if stride == 1 and cin == w[i] else mb)
            self.stages.append(nn.Sequential(*blocks))
        for i in (3, 4):  # attention stages: a downsampling MBConv, then EfficientViT blocks
            self.stages.append(nn.Sequential(
                MBConv(w[i - 1], w[i], cfg.expand_ratio, stride=s[i], fewer_norm=True, norm_eps=eps),
                *[EfficientViTBlock(w[i], cfg.head_dim, cfg.expand_ratio, cfg.scales, eps) for _ in range(d[i])]))

        h0, h1 = cfg.head_widths
        self.head_conv = ConvNormAct(w[-1], h0, 1, act_layer=nn.Hardswish, norm_eps=eps)
        self.head_fc = nn.Sequential(Linear(h0, h1, bias=False), nn.LayerNorm(h1, eps=eps), nn.Hardswish())
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = linear_head(self.cfg.head_widths[1], cfg.num_classes)
        drops = self.stage_drop_paths()
        for drop, p in zip(drops, drop_path_rates(cfg.drop_path_rate, len(drops))):
            drop.p = p
        self.init_weights()

    def residual_branches(self) -> list[nn.Module]:
        """The f of every x + f(x), input to output: the stem's DSConvs, the residual MBConvs of
        stages 1-2, and the context and local modules of every EfficientViT block."""
        out = []
        for m in self.modules():
            if isinstance(m, Residual):
                out.append(m.fn)
            elif isinstance(m, EfficientViTBlock):
                out += [m.context, m.local]
        return out

    def stage_drop_paths(self) -> list[DropPath]:
        """The DropPath of every residual block of the four stages, input to output (the official code
        applies drop path to ``backbone.stages``: the stem's residual DSConvs never drop)."""
        return [m for m in self.stages.modules() if isinstance(m, DropPath)]

    # ---------------------------------------------------------------- init and parameter groups
    def init_weights(self) -> None:
        """Linear (the head): truncated normal 0.02; norms: 1, 0; with ``zero_last_gamma`` (the official
        ``--last_gamma 0``) the last BatchNorm of every residual branch gets gamma = 0."""
        # Convs keep PyTorch's default (Kaiming-uniform) init: at std 0.02 an Adam step moves a conv
        # weight by ~10%, the BatchNorm running statistics lag behind, and eval-mode outputs collapse.
        init_transformer_(self)  # Linear (the head): truncated normal 0.02; LayerNorm: 1, 0
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.cfg.zero_last_gamma:
            for branch in self.residual_branches():
                nn.init.zeros_(_last_batchnorm(branch).weight)

    def reset_classifier(self, num_classes: int) -> None:
        """Install a new zero-initialised linear head (``num_classes=0``: no head, pre-logits)."""
        self.num_classes = num_classes
        self.head = linear_head(self.cfg.head_widths[1], num_classes, zero=True, like=next(self.parameters()))

    def no_weight_decay(self) -> set[str]:
        """Nothing beyond the rule's norms and biases (ndim < 2): there are no tokens or tables."""
        return set()

    # ---------------------------------------------------------------- forward
    def _check(self, x: torch.Tensor) -> None:
        check_image(x, self.cfg.in_chans, None if self.cfg.dynamic_img_size else self.img_size,
                    what=self.cfg.name or "EfficientViT")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the last stage's map (B, num_features, h, w)."""
        self._check(x)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_intermediates(self, x: torch.Tensor) -> dict:
        """``features`` (as forward_features) and ``stages``: the stem's and each stage's map (B, C_i, H_i, W_i)."""
        self._check(x)
        maps = [self.stem(x)]
        for stage in self.stages:
            maps.append(stage(maps[-1]))
        return {"features": maps[-1], "stages": maps}

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, num_features, h, w) -> 1x1 conv, pool, hidden Linear (B, head_widths[1]) -> logits."""
        x = self.head_fc(self.head_conv(x).mean(dim=(2, 3)))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def drop_path_rates(rate: float, n: int) -> list[float]:
    """The official linear decay (``apply_droppath``, ``linear_decay=True``): block i of n drops with
    probability rate (i + 1) / n, so the last block drops with ``rate`` and none is skipped."""
    return [rate * (i + 1) / n for i in range(n)]


# -------------------------------------------------------------------- registered variants
# mit-han-lab/efficientvit: backbone.py (widths, depths, dim) and cls.py (head widths); drop path
# from applications/efficientvit_cls/configs/imagenet (default.yaml 0.05; efficientvit_b3.yaml 0.1).
DROP_PATH = {"b0": 0.05, "b1": 0.05, "b2": 0.05, "b3": 0.1}
SIZES = {"b0": ((8, 16, 32, 64, 128), (1, 2, 2, 2, 2), 16, (1024, 1280)),
         "b1": ((16, 32, 64, 128, 256), (1, 2, 3, 3, 4), 16, (1536, 1600)),
         "b2": ((24, 48, 96, 192, 384), (1, 3, 4, 4, 6), 32, (2304, 2560)),
         "b3": ((32, 64, 128, 256, 512), (1, 4, 6, 6, 9), 32, (2304, 2560))}


def _efficientvit(base: EfficientViTConfig, **overrides) -> EfficientViT:
    return EfficientViT(build_from_config(EfficientViTConfig, base, overrides))


def _register_paper_variants() -> None:
    """``efficientvit_b0`` .. ``efficientvit_b3`` at 224 (timm's names without the pretrained tag)."""
    for size, (widths, depths, head_dim, head_widths) in SIZES.items():
        name = f"efficientvit_{size}"
        base = EfficientViTConfig(widths=widths, depths=depths, head_dim=head_dim, head_widths=head_widths,
                                  drop_path_rate=DROP_PATH[size], name=name)

        def make(_base=base, **kw):
            return _efficientvit(_base, **kw)

        make.__doc__ = (f"EfficientViT-{size.upper()} at 224 (widths {widths}, depths {depths}, head dim "
                        f"{head_dim}, drop path {DROP_PATH[size]}).")
        register_model(make, name=name)


_register_paper_variants()


@register_model
def efficientvit_nano_28(**kw) -> EfficientViT:
    """A small EfficientViT for 28x28 digits: maps 14 (stem) -> 14 -> 7 -> 7 (attention, 49 tokens)
    -> 4 (attention, 16 tokens); widths (16, 24, 32, 64, 96), head (256, 256); the official training
    defaults (drop path 0.05, zero last gamma)."""
    return _efficientvit(EfficientViTConfig(img_size=28, in_chans=1, num_classes=10, widths=(16, 24, 32, 64, 96),
                                            depths=(1, 1, 2, 2, 2), strides=(2, 1, 2, 1, 2), head_dim=16,
                                            head_widths=(256, 256), name="efficientvit_nano_28"), **kw)
