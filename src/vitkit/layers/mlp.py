"""Feed-forward layers: the transformer MLP (ViT eq. 3); MBConv, the inverted residual's body
(MobileNetV2, Sandler et al. 2018), used as the FFN of EfficientViT."""
from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    """Two Linear layers with a GELU between: ``fc2(drop(act(fc1(x))))``, applied per token.

    x: (..., in_features) -> (..., out_features).
    """

    def __init__(self, in_features: int, hidden_features: int | None = None,
                 out_features: int | None = None, act_layer: type[nn.Module] = nn.GELU,
                 drop: float = 0.0, bias: bool = True):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ConvNormAct(nn.Module):
    """Conv2d (padding k // 2) -> [BatchNorm2d] -> [activation]. (B, C_in, H, W) -> (B, C_out, H', W')."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 bias: bool = False, norm: bool = True, act_layer: type[nn.Module] | None = None,
                 norm_eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(out_chans, eps=norm_eps) if norm else nn.Identity()
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class MBConv(nn.Module):
    """Pointwise expand -> depthwise k x k (stride) -> pointwise project, on maps.

    x: (B, in_chans, H, W) -> (B, out_chans, H / stride, W / stride). ``hidden = round(in_chans *
    expand_ratio)``. Expand and depthwise convs end in ``act_layer``, the projection is linear (no
    activation). Every conv is followed by BatchNorm and has no bias, unless ``fewer_norm``: then
    only the projection has a norm and the other two convs have a bias (EfficientViT's FFN).
    The residual, when there is one, belongs to the caller.
    """

    def __init__(self, in_chans: int, out_chans: int | None = None, expand_ratio: float = 4.0,
                 kernel_size: int = 3, stride: int = 1, act_layer: type[nn.Module] = nn.Hardswish,
                 fewer_norm: bool = False, norm_eps: float = 1e-5):
        super().__init__()
        out_chans = out_chans or in_chans
        hidden = round(in_chans * expand_ratio)
        norm = not fewer_norm
        self.inverted_conv = ConvNormAct(in_chans, hidden, 1, bias=fewer_norm, norm=norm, act_layer=act_layer,
                                         norm_eps=norm_eps)
        self.depth_conv = ConvNormAct(hidden, hidden, kernel_size, stride, groups=hidden, bias=fewer_norm,
                                      norm=norm, act_layer=act_layer, norm_eps=norm_eps)
        self.point_conv = ConvNormAct(hidden, out_chans, 1, norm_eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))
