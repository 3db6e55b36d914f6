"""Window activation pruning (SparseViT, Chen et al. 2023, "Revisiting Activation Sparsity for
Efficient High-Resolution Vision Transformer", Sec. 3.1).

Windows, not tokens, are the unit of pruning, so the kept work stays dense and regular:

    a_t     = mean_c |x_tc|                   each token's activation magnitude (mean |x| over channels),
                                              computed once per stage ("shared scoring")
    score_w = || (a_t)_{t in w} ||_2          the L2 norm of the window's token magnitudes
    keep    = top ceil((1 - s) * nW) windows  s = the stage's sparsity
    gather the kept windows -> run the blocks on them only -> scatter back; pruned windows pass
    through unchanged.

Helpers work on windows laid out as :func:`vitkit.layers.window_partition` makes them:
(B, nW, N, C), windows in raster order over the map.

Sparse window attention (:class:`SparseWindowAttention`) prunes inside windows instead: every window
keeps the same number of tokens (its top ceil(r * N) by L2 norm), so the kept tokens still form one
dense (B, nW, k, C) batch (hardware-friendly equal-size grouping), and attention runs among them only.
"""
from __future__ import annotations

import math

import torch

from .attention import Attention
from .window import (WindowAttention, cyclic_shift, effective_window, pad_to_multiple, reverse_shift,
                     shift_window_bias, window_merge, window_partition)


def kept_windows(num_windows: int, sparsity: float) -> int:
    """ceil((1 - s) * nW), at least 1. A tiny tolerance keeps (1 - 0.3) * 10 = 7.000000000000001 at 7."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"window sparsity must be in [0, 1), got {sparsity}")
    return max(1, math.ceil((1.0 - sparsity) * num_windows - 1e-9))


def activation_magnitude(x: torch.Tensor) -> torch.Tensor:
    """x: (..., C) -> (..., 1) in float32: each token's mean |x| over channels (Sec. 3.1; the official
    backbone's ``act_mag = mean(|x|, -1)``)."""
    return x.float().abs().mean(-1, keepdim=True)


def window_scores(windows: torch.Tensor) -> torch.Tensor:
    """windows: (B, nW, N, C) -> importance (B, nW): the L2 norm, over each window's N tokens, of the
    tokens' :func:`activation_magnitude` (Sec. 3.1; the official ``vector_norm(act_mag windows, 2)``).
    Windows of a magnitude map (C = 1, values >= 0) give the same scores, so a stage can compute the
    magnitudes once and partition them on each block's grid."""
    return activation_magnitude(windows).squeeze(-1).norm(dim=-1)


def select_windows(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """scores: (B, nW) -> indices (B, keep) of the highest-scoring windows, in ascending window order
    (so keeping every window is the identity permutation)."""
    if keep >= scores.shape[1]:
        return torch.arange(scores.shape[1], device=scores.device).expand(scores.shape[0], -1)
    return scores.topk(keep, dim=1).indices.sort(dim=1).values


def gather_windows(windows: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """windows: (B, nW, N, C), idx: (B, k) -> the kept windows (B, k, N, C)."""
    B, _, N, C = windows.shape
    return windows.gather(1, idx[:, :, None, None].expand(B, idx.shape[1], N, C))


def scatter_windows(windows: torch.Tensor, idx: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Write ``kept`` (B, k, N, C) back at ``idx`` (B, k) into a copy of ``windows`` (B, nW, N, C);
    the other windows pass through unchanged. Differentiable in both inputs."""
    B, k, N, C = kept.shape
    if k == windows.shape[1]:  # every window kept (idx is the identity): nothing passes through
        return kept
    return windows.scatter(1, idx[:, :, None, None].expand(B, k, N, C), kept)


def gather_tokens(windows: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """windows: (B, nW, N, C), idx: (B, nW, k) token indices -> (B, nW, k, C)."""
    return windows.gather(2, idx[..., None].expand(*idx.shape, windows.shape[-1]))


def gather_pair_bias(bias: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """bias: broadcastable to (B, nW, h, N, N); idx: (B, nW, k) -> the kept pairs' bias (B, nW, h, k, k)."""
    B, nW, k = idx.shape
    h, N = bias.shape[-3], bias.shape[-1]
    bias = bias.expand(B, nW, h, N, N)
    rows = bias.gather(3, idx[:, :, None, :, None].expand(B, nW, h, k, N))
    return rows.gather(4, idx[:, :, None, None, :].expand(B, nW, h, k, k))


class SparseWindowAttention(WindowAttention):
    """W-MSA / SW-MSA among an equal-size subset of every window's tokens.

    x: (B, H, W, C) -> (B, H, W, C). Each M x M window keeps its top ceil(``keep_ratio`` * M^2) tokens
    by L2 norm; they attend to each other only (relative bias and shift mask restricted to the kept
    pairs); the other tokens' outputs are zero, so in a residual block they pass through unchanged.
    ``keep_ratio=1`` is :class:`WindowAttention`. Parameters are WindowAttention's (same names).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift_size: int = 0,
                 keep_ratio: float = 1.0, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__(dim, num_heads, window_size, shift_size, qkv_bias, attn_drop, proj_drop)
        kept_windows(1, 1.0 - keep_ratio)  # raises unless 0 < keep_ratio <= 1
        self.keep_ratio = keep_ratio

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None,
                return_attention: bool = False):
        if return_attention or attn_bias is not None:
            raise ValueError("SparseWindowAttention takes no attn_bias and returns no attention maps")
        B, H, W, C = x.shape
        M, s = effective_window((H, W), self.window_size, self.shift_size)
        x = cyclic_shift(pad_to_multiple(x, M), s)                              # (B, Hp, Wp, C)
        grid = x.shape[1:3]
        windows = window_partition(x, M)                                       # (B, nW, N, C)
        N = windows.shape[2]
        k = kept_windows(N, 1.0 - self.keep_ratio)
        bias = self.rel_pos((M, M))                                             # (heads, N, N)
        if s:
            bias = bias + shift_window_bias(grid, M, s, bias.dtype, bias.device)  # (nW, heads, N, N)
        if k == N:
            out = Attention.forward(self, windows, attn_bias=bias)
        else:
            idx = windows.float().pow(2).sum(-1).topk(k, dim=-1).indices.sort(dim=-1).values  # (B, nW, k)
            kept = Attention.forward(self, gather_tokens(windows, idx),
                                     attn_bias=gather_pair_bias(bias, idx))     # (B, nW, k, C)
            out = windows.new_zeros(windows.shape).scatter(2, idx[..., None].expand(*idx.shape, C), kept)
        return reverse_shift(window_merge(out, M, grid), s)[:, :H, :W]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", keep_ratio={self.keep_ratio}"
