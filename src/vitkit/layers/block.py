"""The pre-LN transformer block (ViT eqs. 2-3): x + DropPath(attn(LN(x))); x + DropPath(mlp(LN(x))).

With layer scale (CaiT, Touvron et al. 2021, Sec. 2; used by DINOv2) each branch is multiplied by a
learned per-channel vector before the residual: x + DropPath(gamma_1 * attn(LN(x))), likewise gamma_2.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import Attention
from .drop import DropPath
from .linear import bf16_fast_path
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
        if not return_attention and type(self.attn) is Attention and type(self.mlp) is Mlp and bf16_fast_path(x):
            return self._forward_bf16(x, attn_bias)
        y = self.attn(self.norm1(x), attn_bias=attn_bias, return_attention=return_attention)
        if return_attention:
            y, attn = y
        x = x + self.drop_path1(self.ls1(y))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return (x, attn) if return_attention else x

    def _forward_bf16(self, x: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        """The block under vitkit's bf16 fast path (CPU bf16 autocast, ``vitkit.layers.linear.bf16_fast_path``):
        the residual stream stays bf16 (autocast would promote each residual add to fp32, and the next
        LayerNorm and GEMM would read fp32 again), and each residual add is a post-op of the GEMM before
        it (proj, fc2) unless a layer scale or an active drop path sits between them."""
        x = x.to(torch.bfloat16)
        if (isinstance(self.ls1, nn.Identity) and isinstance(self.ls2, nn.Identity)
                and not (self.training and (self.drop_path1.p or self.drop_path2.p))):
            x = self.attn(self.norm1(x), attn_bias=attn_bias, residual=x)
            return self.mlp(self.norm2(x), residual=x)
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_bias=attn_bias))).to(x.dtype)
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x)))).to(x.dtype)

    def forward_first(self, x: torch.Tensor, n: int, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """The block's output for the first ``n`` tokens only, (B, N, D) -> (B, n, D); every token still
        attends as a key and a value. What a class-token head needs of the last block: the other tokens'
        queries, attention rows and MLP are skipped (``VisionTransformer.forward``). Same numbers as
        ``forward(x)[:, :n]``."""
        if type(self.attn) is not Attention:
            return self.forward(x, attn_bias)[:, :n]
        if bf16_fast_path(x):
            x = x.to(torch.bfloat16)
        y = self.attn.forward_first(self.norm1(x), n, attn_bias)
        x = x[:, :n]
        x = x + self.drop_path1(self.ls1(y)).to(x.dtype)
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x)))).to(x.dtype)
