"""Window activation pruning (SparseViT, Chen et al. 2023, "Revisiting Activation Sparsity for
Efficient High-Resolution Vision Transformer", Sec. 3.1).

Windows, not tokens, are the unit of pruning, so the kept work stays dense and regular:

    score_w = || x_w ||_2                     L2 norm of the activations of window w (all its tokens
                                              and channels), computed once per stage ("shared scoring")
    keep    = top ceil((1 - s) * nW) windows  s = the stage's sparsity
    gather the kept windows -> run the blocks on them only -> scatter back; pruned windows pass
    through unchanged.

Helpers work on windows laid out as :func:`vitkit.layers.window_partition` makes them:
(B, nW, N, C), windows in raster order over the map.
"""
from __future__ import annotations

import math

import torch


def kept_windows(num_windows: int, sparsity: float) -> int:
    """ceil((1 - s) * nW), at least 1. A tiny tolerance keeps (1 - 0.3) * 10 = 7.000000000000001 at 7."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"window sparsity must be in [0, 1), got {sparsity}")
    return max(1, math.ceil((1.0 - sparsity) * num_windows - 1e-9))


def window_scores(windows: torch.Tensor) -> torch.Tensor:
    """windows: (B, nW, N, C) -> importance (B, nW): the L2 norm of each window's activations."""
    return windows.float().pow(2).sum(dim=(-2, -1)).sqrt()


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
