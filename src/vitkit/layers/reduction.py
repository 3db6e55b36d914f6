"""Spatial-reduction attention (PVT, Wang et al. 2021, "Pyramid Vision Transformer", eqs. 2-3).

Queries come from every token; keys and values from the map reduced by R in each direction:

    SR(x) = LayerNorm(Conv_{R x R, stride R}(x))          (B, H/R * W/R, C)
    SRA(x) = softmax(q k^T / sqrt(d)) v,  q = x W_q,  [k | v] = SR(x) W_kv

so attention costs O(N^2 / R^2). With R = 1 there is no reduction (no conv, no norm, as PVT) and SRA
is global self-attention. Names follow PVT (``q``, ``kv``, ``sr``, ``norm``, ``proj``) so its
checkpoints map one to one.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .attention import attend
from .linear import Linear


class SpatialReductionAttention(nn.Module):
    """x: (B, H, W, C) -> (B, H, W, C). ``attn_bias`` broadcasts to (B, heads, H*W, M) with M the
    number of reduced tokens (floor(H/R) * floor(W/R)); ``return_attention`` returns the
    probabilities in that shape."""

    def __init__(self, dim: int, num_heads: int = 8, sr_ratio: int = 1, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, norm_eps: float = 1e-6):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.sr_ratio, self.attn_drop = num_heads, sr_ratio, attn_drop
        self.q = Linear(dim, dim, bias=qkv_bias)
        self.kv = Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> the key/value tokens (B, M, C): SR(x), or x itself when R = 1."""
        if self.sr_ratio == 1:
            return rearrange(x, "b h w c -> b (h w) c")
        x = self.sr(rearrange(x, "b h w c -> b c h w"))                 # (B, C, H/R, W/R)
        return self.norm(rearrange(x, "b c h w -> b (h w) c"))

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None,
                return_attention: bool = False):
        B, H, W, C = x.shape
        q = rearrange(self.q(x), "b h w (nh d) -> b nh (h w) d", nh=self.num_heads)
        k, v = rearrange(self.kv(self.reduce(x)), "b m (two nh d) -> two b nh m d", two=2,
                         nh=self.num_heads).unbind(0)                   # each (B, nh, M, d)
        out = attend(q, k, v, attn_bias, self.attn_drop if self.training else 0.0, return_attention)
        if return_attention:
            out, attn = out
        out = self.proj_drop(self.proj(rearrange(out, "b nh (h w) d -> b h w (nh d)", h=H)))
        return (out, attn) if return_attention else out

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, sr_ratio={self.sr_ratio}"
