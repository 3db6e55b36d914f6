"""Feed-forward layers: the transformer MLP (ViT eq. 3) and its activations (GELU, CLIP's QuickGELU);
MBConv, the inverted residual's body (MobileNetV2, Sandler et al. 2018), used as the FFN of EfficientViT."""
from __future__ import annotations

import torch
from torch import nn

from .linear import Linear


class QuickGELU(nn.Module):
    """CLIP's GELU approximation (Radford et al. 2021; Hendrycks & Gimpel 2016, Sec. 2): ``x * sigmoid(1.702 x)``.

    OpenAI's CLIP weights were trained with it, so loading them needs it (HF ``hidden_act="quick_gelu"``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACT_LAYERS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "quick_gelu": QuickGELU}


def get_act_layer(name: str) -> type[nn.Module]:
    """``"gelu"`` (exact, erf) or ``"quick_gelu"`` -> the module class, for config fields ``act=...``."""
    if name not in ACT_LAYERS:
        raise ValueError(f"unknown activation {name!r}; use one of {sorted(ACT_LAYERS)}")
    return ACT_LAYERS[name]


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
        self.fc1 = Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.fc2 = Linear(hidden_features, out_features, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``residual`` (the output's shape): return ``residual + mlp(x)``, the add fused into ``fc2``'s GEMM
        where oneDNN runs it (vitkit's Block passes its residual stream)."""
        if type(self.act) is nn.GELU and type(self.fc1) is Linear:  # fused fc1 + GELU where oneDNN runs it
            h = self.fc1.forward_gelu(x, self.act.approximate)
        else:
            h = self.act(self.fc1(x))
        h = self.drop(h)
        if residual is None:
            return self.drop(self.fc2(h))
        if type(self.fc2) is Linear and not (self.training and self.drop.p):
            return self.fc2(h, residual=residual)                       # residual + fc2(h), one GEMM
        return residual + self.drop(self.fc2(h))


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


class LeFF(nn.Module):
    """Locally-enhanced feed-forward (CeiT, Yuan et al. 2021, Sec. 3.3): the MLP with a depthwise conv
    between its two Linears, run on the patch tokens put back on their grid.

    x: (B, P + h*w, dim) -> same shape; the first ``num_prefix_tokens`` (the class token) never enter the
    conv or the Linears and come out unchanged:

        x_c, x_p = split(x);  x_p = GELU(BN(Linear(x_p)))          (B, N, e*dim)
        x_p = GELU(BN(DWConv_k(restructure(x_p, grid))))          (B, e*dim, h, w), depthwise k x k
        x_p = GELU(BN(Linear(flatten(x_p))));  return concat(x_c, x_p)
    """

    def __init__(self, dim: int, hidden_features: int, grid_size: tuple[int, int], kernel_size: int = 3,
                 num_prefix_tokens: int = 1, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.grid_size, self.num_prefix_tokens = tuple(grid_size), num_prefix_tokens
        self.fc1 = Linear(dim, hidden_features)
        self.bn1 = nn.BatchNorm1d(hidden_features)
        self.dwconv = ConvNormAct(hidden_features, hidden_features, kernel_size, groups=hidden_features, bias=True,
                                  act_layer=act_layer)
        self.fc2 = Linear(hidden_features, dim)
        self.bn2 = nn.BatchNorm1d(dim)
        self.act = act_layer()

    def _linear_bn_act(self, x: torch.Tensor, fc: nn.Linear, bn: nn.BatchNorm1d) -> torch.Tensor:
        return self.act(bn(fc(x).transpose(1, 2)).transpose(1, 2))      # BN over channels of (B, N, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.num_prefix_tokens
        prefix, x = x[:, :p], x[:, p:]
        B, N, _ = x.shape
        gh, gw = self.grid_size
        if N != gh * gw:
            raise ValueError(f"LeFF was built for a {gh}x{gw} grid ({gh * gw} patch tokens), got {N}")
        x = self._linear_bn_act(x, self.fc1, self.bn1)                   # (B, N, hidden)
        x = x.transpose(1, 2).reshape(B, -1, gh, gw)                     # (B, hidden, gh, gw)
        x = self.dwconv(x).flatten(2).transpose(1, 2)                    # (B, N, hidden)
        x = self._linear_bn_act(x, self.fc2, self.bn2)                   # (B, N, dim)
        return torch.cat([prefix, x], dim=1)
