"""Window attention (Swin, Liu et al. 2021, Sec. 3.2): self-attention inside non-overlapping M x M
windows, and the shifted-window variant that links neighbouring windows from one block to the next.

    W-MSA:   partition the (H, W) map into M x M windows; attention within each window, with a learned
             relative position bias B in softmax(q k^T / sqrt(d) + B) v  (eq. 4).
    SW-MSA:  cyclically shift the map by (-s, -s), s = M // 2 (torch.roll), partition, attend with a
             mask that blocks pairs from different regions of the shifted map (tokens that were not
             neighbours before the roll), merge, shift back by (+s, +s).  (Fig. 4)

Maps are channels-last, (B, H, W, C). A map that is not a multiple of M is zero-padded at the bottom
and right before partitioning and cropped after (as the reference implementation: the padded tokens
are keys like any other). When the map is no larger than a window, the window shrinks to the map and
the shift is dropped (``effective_window``), as in the paper's code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from .attention import Attention
from .pos_embed import RelativePositionBias
from .patch_embed import to_2tuple


def effective_window(grid: tuple[int, int], window_size: int, shift_size: int) -> tuple[int, int]:
    """(window, shift) actually used on an (H, W) map: a map no larger than the window is one window,
    unshifted (Swin's rule: ``if min(H, W) <= M: M = min(H, W); s = 0``)."""
    if min(grid) <= window_size:
        return min(grid), 0
    return window_size, shift_size


def padded_grid(size: tuple[int, int], window_size: int) -> tuple[int, int]:
    """(H, W) -> (Hp, Wp), each rounded up to a multiple of ``window_size`` (what pad_to_multiple makes)."""
    return tuple(-(-n // window_size) * window_size for n in size)


def pad_to_multiple(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """x: (B, H, W, C) -> (B, Hp, Wp, C), zero rows at the bottom and columns at the right so that
    Hp, Wp are multiples of ``window_size``. Crop back with ``x[:, :H, :W]``."""
    (H, W), (Hp, Wp) = x.shape[1:3], padded_grid(x.shape[1:3], window_size)
    if (Hp, Wp) != (H, W):
        x = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))  # (C: none, W: right, H: bottom)
    return x


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """x: (B, H, W, C), H and W multiples of M -> windows (B, nW, M*M, C).

    Windows in raster order over the map (nW = H/M * W/M), tokens in raster order inside a window.
    """
    return rearrange(x, "b (nh m1) (nw m2) c -> b (nh nw) (m1 m2) c", m1=window_size, m2=window_size)


def window_merge(windows: torch.Tensor, window_size: int, grid: tuple[int, int]) -> torch.Tensor:
    """The inverse of :func:`window_partition`: (B, nW, M*M, C) -> (B, H, W, C) for ``grid`` = (H, W)."""
    return rearrange(windows, "b (nh nw) (m1 m2) c -> b (nh m1) (nw m2) c",
                     nh=grid[0] // window_size, m1=window_size)


def cyclic_shift(x: torch.Tensor, shift_size: int) -> torch.Tensor:
    """Roll the map (B, H, W, C) up and left by ``shift_size`` (Swin Fig. 4): position (i, j) of the
    result holds the token from ((i + s) mod H, (j + s) mod W)."""
    return torch.roll(x, shifts=(-shift_size, -shift_size), dims=(1, 2)) if shift_size else x


def reverse_shift(x: torch.Tensor, shift_size: int) -> torch.Tensor:
    """Undo :func:`cyclic_shift`: roll down and right by ``shift_size``."""
    return torch.roll(x, shifts=(shift_size, shift_size), dims=(1, 2)) if shift_size else x


def shift_regions(grid: tuple[int, int], window_size: int, shift_size: int,
                  device: torch.device | None = None) -> torch.Tensor:
    """Region label (0..8) of every position of the shifted, padded (Hp, Wp) map: (Hp, Wp) long.

    Along each axis the rolled map has three slices, ``[0, L-M)``, ``[L-M, L-s)`` and ``[L-s, L)``;
    the last one holds the tokens that wrapped round from the other side. Label = 3 * row slice +
    column slice. Tokens of one window may attend to each other only with the same label.
    """
    def axis(length: int) -> torch.Tensor:
        i = torch.arange(length, device=device)
        return (i >= length - window_size).long() + (i >= length - shift_size).long()

    return axis(grid[0])[:, None] * 3 + axis(grid[1])[None, :]


def shift_window_mask(grid: tuple[int, int], window_size: int, shift_size: int,
                      device: torch.device | None = None) -> torch.Tensor:
    """SW-MSA's mask for a shifted, padded (Hp, Wp) map: (nW, N, N) bool, True = the pair may attend
    (both tokens carry the same :func:`shift_regions` label). N = M * M."""
    labels = shift_regions(grid, window_size, shift_size, device)[None, :, :, None]  # (1, Hp, Wp, 1)
    labels = window_partition(labels, window_size)[0, :, :, 0]                      # (nW, N)
    return labels[:, :, None] == labels[:, None, :]


def shift_window_bias(grid: tuple[int, int], window_size: int, shift_size: int,
                      dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """:func:`shift_window_mask` as an additive logits bias (nW, 1, N, N): 0 where allowed, -inf where
    blocked. Every token may attend to itself, so no row is fully blocked."""
    allowed = shift_window_mask(grid, window_size, shift_size, device)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, float("-inf"))
    return bias[:, None]


class WindowAttention(Attention):
    """W-MSA (``shift_size=0``) or SW-MSA (``shift_size=M//2``) with a learned relative position bias.

    x: (B, H, W, C) -> (B, H, W, C), any H, W (padded to multiples of M inside). The attention itself
    is :class:`Attention` (fused qkv, SDPA) run on (B, nW, M*M, C) windows with the bias
    B_rel (heads, N, N) [+ the shift mask (nW, 1, N, N)] [+ ``attn_bias``, broadcastable to
    (B, nW, heads, N, N)]. With ``return_attention`` the probabilities come back as (B, nW, heads, N, N).
    Parameters: ``qkv``, ``proj`` (as Attention) and ``rel_pos.table`` ((2M-1)^2, heads).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift_size: int = 0,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, window_size={window_size}), got {shift_size}")
        self.window_size, self.shift_size = window_size, shift_size
        self.rel_pos = RelativePositionBias(to_2tuple(window_size), num_heads)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None,
                return_attention: bool = False):
        B, H, W, C = x.shape
        M, s = effective_window((H, W), self.window_size, self.shift_size)
        x = cyclic_shift(pad_to_multiple(x, M), s)                     # (B, Hp, Wp, C)
        grid = x.shape[1:3]
        bias = self.rel_pos((M, M))                                     # (heads, N, N)
        if s:
            bias = bias + shift_window_bias(grid, M, s, bias.dtype, bias.device)  # (nW, heads, N, N)
        if attn_bias is not None:
            bias = bias + attn_bias
        out = super().forward(window_partition(x, M), attn_bias=bias,
                              return_attention=return_attention)        # (B, nW, N, C)
        if return_attention:
            out, attn = out
        out = reverse_shift(window_merge(out, M, grid), s)[:, :H, :W]   # (B, H, W, C)
        return (out, attn) if return_attention else out

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, shift_size={self.shift_size}, num_heads={self.num_heads}"
