"""Tokens-to-Token (T2T-ViT, Yuan et al. 2021, Sec. 3.1): soft split and re-structurization.

One T2T step turns tokens T (B, L, C) on an (h, w) grid into fewer, wider tokens:

    I  = Reshape(T)                 re-structurization: (B, L, C) -> (B, C, h, w)
    T' = SS(I)                      soft split: overlapping k x k patches, stride s < k, padding p,
                                    each flattened channel-major -> (B, L', C k^2)
    T  = T2T-layer(T')              a transformer layer that also narrows C k^2 -> token_dim

Overlap lets every new token see its neighbours' pixels, the local structure a plain ViT's
non-overlapping split loses. The T2T layer is the paper's token transformer: single-head attention
whose value projection doubles as the residual (``x = v + proj(attn(q, k, v))``, since the width
changes; scores scaled by 1/sqrt(C k^2), the input width, as the official code), then a residual MLP.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attend
from .linear import Linear
from .mlp import Mlp


class SoftSplit(nn.Module):
    """(B, C, H, W) -> (B, L, C * k * k): overlapping k x k patches, stride s, zero padding p.

    Patch features are ordered channel-major (c, ky, kx) and patches in raster order, as ``F.unfold``;
    L = h' * w' with h' = (H + 2p - k) // s + 1 (``out_size``).
    """

    def __init__(self, kernel_size: int, stride: int, padding: int = 0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        k, s, p = self.kernel_size, self.stride, self.padding
        return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cols = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)  # (B, C*k*k, L)
        return cols.transpose(1, 2)                                                      # (B, L, C*k*k)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def restructure(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Re-structurization: tokens (B, h*w, C) in raster order -> map (B, C, h, w)."""
    B, L, C = tokens.shape
    if L != grid[0] * grid[1]:
        raise ValueError(f"{L} tokens do not fill a {grid[0]}x{grid[1]} grid")
    return tokens.transpose(1, 2).reshape(B, C, grid[0], grid[1])


class TokenAttention(nn.Module):
    """Single-head attention that changes the width: (B, N, dim) -> (B, N, out_dim), residual through v.

    q, k, v = one fused Linear(dim, 3 * out_dim); out = v + proj(softmax(q k^T / sqrt(dim)) v).
    The scores are scaled by the INPUT width dim = C k^2, not by q's width out_dim: the official
    token transformer's ``head_dim = dim // num_heads`` (one head) is its input width, so its weights
    only give the same function with this scale.
    """

    def __init__(self, dim: int, out_dim: int, qkv_bias: bool = False, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.dim, self.out_dim = dim, out_dim
        self.qkv = Linear(dim, 3 * out_dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = Linear(out_dim, out_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        q, k, v = self.qkv(x).chunk(3, dim=-1)                          # each (B, N, out_dim), one head
        q = q * (self.out_dim / self.dim) ** 0.5                        # attend's 1/sqrt(out_dim) -> 1/sqrt(dim)
        out = attend(q, k, v, None, self.attn_drop if self.training else 0.0, return_attention)
        if return_attention:
            out, attn = out
        out = v + self.proj_drop(self.proj(out))
        return (out, attn) if return_attention else out


class T2TLayer(nn.Module):
    """The token transformer: x = attn(LN(x)) (residual inside, through v); x = x + mlp(LN(x)).

    (B, N, dim) -> (B, N, out_dim).
    """

    def __init__(self, dim: int, out_dim: int, mlp_ratio: float = 1.0, qkv_bias: bool = False,
                 drop: float = 0.0, attn_drop: float = 0.0, norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = TokenAttention(dim, out_dim, qkv_bias, attn_drop, drop)
        self.norm2 = nn.LayerNorm(out_dim, eps=norm_eps)
        self.mlp = Mlp(out_dim, int(out_dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class T2TModule(nn.Module):
    """Image (B, C, H, W) -> tokens (B, L, embed_dim): soft split, then (T2T layer, re-structure,
    soft split) for each further split, then a Linear to the backbone width.

    ``splits``: (kernel, stride, padding) per soft split; the paper's 224px module is
    ((7, 4, 2), (3, 2, 1), (3, 2, 1)) (total stride 16, 14x14 tokens).
    """

    def __init__(self, img_size: tuple[int, int], in_chans: int, embed_dim: int, token_dim: int = 64,
                 splits: tuple[tuple[int, int, int], ...] = ((7, 4, 2), (3, 2, 1), (3, 2, 1)),
                 qkv_bias: bool = False, norm_eps: float = 1e-6):
        super().__init__()
        if not splits:
            raise ValueError("T2T needs at least one soft split")
        self.img_size = tuple(img_size)
        self.splits = nn.ModuleList([SoftSplit(*s) for s in splits])
        self.layers = nn.ModuleList()
        grid, chans = self.img_size, in_chans
        self.grids = []
        for i, ss in enumerate(self.splits):
            grid = ss.out_size(*grid)
            if grid[0] < 1 or grid[1] < 1:
                raise ValueError(f"soft split {i} {splits[i]} leaves no tokens for a {self.img_size} image")
            self.grids.append(grid)
            width = chans * ss.kernel_size ** 2
            if i < len(splits) - 1:
                self.layers.append(T2TLayer(width, token_dim, qkv_bias=qkv_bias, norm_eps=norm_eps))
                chans = token_dim
        self.grid_size = self.grids[-1]
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.project = Linear(width, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.splits[0](x)                                           # (B, L0, C*k0*k0)
        for layer, ss, grid in zip(self.layers, self.splits[1:], self.grids):
            x = layer(x)                                                # (B, L_i, token_dim)
            x = ss(restructure(x, grid))                                # (B, L_{i+1}, token_dim*k*k)
        return self.project(x)                                          # (B, L, embed_dim)
