"""The pre-LN transformer block (ViT eqs. 2-3): x + DropPath(attn(LN(x))); x + DropPath(mlp(LN(x))).

With layer scale (CaiT, Touvron et al. 2021, Sec. 2; used by DINOv2) each branch is multiplied by a
learned per-channel vector before the residual: x + DropPath(gamma_1 * attn(LN(x))), likewise gamma_2.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import Attention
from .drop import DropPath
from .mlp import Mlp


class LayerScale(nn.Module):
    """x * gamma, gamma a learned (dim,) vector initialised to ``init_values`` (CaiT's diag(lambda)).
    Named as timm and DINOv2's code (``ls1.gamma``); HF DINOv2 stores it as ``layer_scale1.lambda1``."""

    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.init_values = init_values
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.gamma.fill_(self.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """x: (B, N, D) -> (B, N, D). ``attn`` / ``mlp`` may be replaced by any module with the same call
    signature (window, linear or gated attention; LeFF), so every family reuses this one block.
    Norms, MLP and residuals act on the last dim, so x may be a map (B, H, W, D) when ``attn`` takes one."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 norm_eps: float = 1e-6, act_layer: type[nn.Module] = nn.GELU,
                 attn: nn.Module | None = None, mlp: nn.Module | None = None,
                 layer_scale: float | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = attn or Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                      proj_drop=drop)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = mlp or Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None,
                return_attention: bool = False):
        y = self.attn(self.norm1(x), attn_bias=attn_bias, return_attention=return_attention)
        if return_attention:
            y, attn = y
        x = x + self.drop_path1(self.ls1(y))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return (x, attn) if return_attention else x
