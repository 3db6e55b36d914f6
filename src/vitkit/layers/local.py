"""Attention restricted to part of the map: axial (one row or one column at a time) and stand-alone
local attention (a k x k neighbourhood per pixel). Maps are channels-last, (B, H, W, C), and both
modules take ``(x, attn_bias=None, return_attention=False)``, so they plug into ``Block``.

Axial attention (Ho et al. 2019; Wang et al. 2020, Axial-DeepLab): attending along W within each row
costs O(H W^2), along H within each column O(W H^2); a row layer followed by a column layer
(``axial_blocks``) lets every pixel reach every other in two steps, for O(HW (H + W)) instead of
O((HW)^2).

Stand-alone local attention (Ramachandran et al. 2019, "Stand-Alone Self-Attention in Vision
Models", eq. 3): pixel (i, j) attends to the pixels (a, b) of its k x k neighbourhood with logits
q_ij . (k_ab + r_{a-i, b-j}) / sqrt(d); the relative embedding r concatenates a row-offset embedding
and a column-offset embedding of d/2 each (shared by the heads). Neighbours outside the map are
masked out (not zero-padded keys).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .attention import Attention, attend
from .block import Block


class AxialAttention(Attention):
    """Multi-head attention along one axis of a (B, H, W, C) map: ``axis="row"`` attends among the W
    pixels of each row, ``axis="col"`` among the H pixels of each column. ``attn_bias`` broadcasts
    to (B, H, heads, W, W) for rows, (B, W, heads, H, H) for columns; with ``return_attention`` the
    probabilities come back in those shapes. Parameters as :class:`Attention` (``qkv``, ``proj``).
    """

    def __init__(self, dim: int, num_heads: int = 8, axis: str = "row", qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        if axis not in ("row", "col"):
            raise ValueError(f"axis must be 'row' or 'col', got {axis!r}")
        self.axis = axis

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None,
                return_attention: bool = False):
        if self.axis == "col":
            x = x.transpose(1, 2)                                       # (B, W, H, C): columns as rows
        out = super().forward(x, attn_bias=attn_bias, return_attention=return_attention)  # leading dims (B, rows)
        if return_attention:
            out, attn = out
        if self.axis == "col":
            out = out.transpose(1, 2)
        return (out, attn) if return_attention else out

    def extra_repr(self) -> str:
        return f"axis={self.axis}, num_heads={self.num_heads}"


def axial_blocks(dim: int, num_heads: int, **block_kw) -> nn.Sequential:
    """A row-attention block then a column-attention block (pre-LN, ``Block``): (B, H, W, C) -> same."""
    qkv_bias = block_kw.get("qkv_bias", True)
    return nn.Sequential(*[
        Block(dim, num_heads, attn=AxialAttention(dim, num_heads, axis, qkv_bias=qkv_bias,
                                                  attn_drop=block_kw.get("attn_drop", 0.0),
                                                  proj_drop=block_kw.get("drop", 0.0)), **block_kw)
        for axis in ("row", "col")])


class LocalAttention(Attention):
    """Stand-alone local self-attention over k x k neighbourhoods. x: (B, H, W, C) -> (B, H, W, C).

    ``attn_bias`` broadcasts to (B, heads, H*W, 1, k*k) (one logit per pixel and neighbour, in
    raster order of the window); ``return_attention`` returns the probabilities in that shape
    (0 on neighbours outside the map). Parameters: ``qkv``, ``proj`` (as Attention) and the relative
    embeddings ``rel_row``, ``rel_col`` (k, head_dim / 2) each.
    """

    def __init__(self, dim: int, num_heads: int = 8, kernel_size: int = 7, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a neighbourhood centred on its pixel), got {kernel_size}")
        if self.head_dim % 2:
            raise ValueError(f"head dim {self.head_dim} must be even (row and column embeddings of half each)")
        self.kernel_size = kernel_size
        self.rel_row = nn.Parameter(torch.zeros(kernel_size, self.head_dim // 2))  # offset a - i, -k//2..k//2
        self.rel_col = nn.Parameter(torch.zeros(kernel_size, self.head_dim // 2))  # offset b - j
        nn.init.trunc_normal_(self.rel_row, std=0.02)
        nn.init.trunc_normal_(self.rel_col, std=0.02)

    def rel_embed(self) -> torch.Tensor:
        """(k*k, head_dim): r for every neighbour, raster order, [row embedding | column embedding]."""
        k = self.kernel_size
        return torch.cat([self.rel_row[:, None].expand(k, k, -1), self.rel_col[None, :].expand(k, k, -1)],
                         dim=-1).reshape(k * k, self.head_dim)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None,
                return_attention: bool = False):
        B, H, W, C = x.shape
        k, pad = self.kernel_size, self.kernel_size // 2
        q, kk, v = rearrange(self.qkv(x), "b h w (three c) -> three b c h w", three=3).unbind(0)
        q = rearrange(q, "b (nh d) h w -> b nh (h w) 1 d", nh=self.num_heads)       # (B, nh, N, 1, d)

        def neighbours(t: torch.Tensor) -> torch.Tensor:                # (B, C, H, W) -> (B, nh, N, k*k, d)
            t = F.unfold(t, k, padding=pad)                             # (B, C*k*k, N)
            return rearrange(t, "b (nh d kk) n -> b nh n kk d", nh=self.num_heads, kk=k * k)

        kk, v = neighbours(kk), neighbours(v)
        inside = F.unfold(x.new_ones(1, 1, H, W), k, padding=pad)[0].T > 0  # (N, k*k): neighbour on the map
        bias = (q @ self.rel_embed().T) * self.scale                   # (B, nh, N, 1, k*k): q . r / sqrt(d)
        bias = bias.masked_fill(~inside[:, None], float("-inf"))
        if attn_bias is not None:
            bias = bias + attn_bias
        out = attend(q, kk, v, bias, self.attn_drop if self.training else 0.0, return_attention)
        if return_attention:
            out, attn = out
        out = rearrange(out, "b nh (h w) 1 d -> b h w (nh d)", h=H)
        out = self.proj_drop(self.proj(out))
        return (out, attn) if return_attention else out

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, num_heads={self.num_heads}"
