"""Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020).

How much each input patch flows into the output token, tracing attention through every block:

    A_l     = fuse_heads(attn_l)                      (B, N, N)   mean / max / min over heads
    A_l     = discard_lowest(A_l, discard_ratio)      optional: zero the weakest weights per row
    A_hat_l = (0.5 * A_l + 0.5 * I) / rowsum(...)     the residual connection, rows renormalised
    R       = A_hat_L @ ... @ A_hat_2 @ A_hat_1       (B, N, N)

Token order is the ViT one: ``num_prefix_tokens`` prefix tokens (class, distillation), then the
patch tokens in raster order. The map of a class-token model is row 0 of R over the patch
columns; a model that pools by global average has no such token, so its map is the mean of the
patch rows of R over the patch columns. Each map is scaled to max 1.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

HEAD_FUSIONS = ("mean", "max", "min")


def fuse_heads(attn: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """(B, heads, N, N) -> (B, N, N) by mean, max or min over the heads; (B, N, N) passes through."""
    if attn.ndim == 3:
        return attn
    if attn.ndim != 4:
        raise ValueError(f"attention must be (B, heads, N, N), got shape {tuple(attn.shape)}")
    if head_fusion == "mean":
        return attn.mean(dim=1)
    if head_fusion == "max":
        return attn.amax(dim=1)
    if head_fusion == "min":
        return attn.amin(dim=1)
    raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")


def discard_lowest(attn: torch.Tensor, discard_ratio: float) -> torch.Tensor:
    """Zero the ``floor(discard_ratio * N)`` smallest weights of every row, never the diagonal.

    attn: (B, N, N). The diagonal (a token's attention to itself) is always kept, so at most
    N - 1 weights of a row are dropped. Rows are not renormalised here; the rollout does that
    after adding the identity. Ties are broken arbitrarily.
    """
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    n = attn.shape[-1]
    k = min(int(discard_ratio * n), n - 1)
    if k == 0:
        return attn
    eye = torch.eye(n, dtype=torch.bool, device=attn.device)
    ranked = attn.masked_fill(eye, float("inf"))  # the diagonal is never among the smallest
    idx = ranked.topk(k, dim=-1, largest=False).indices  # (B, N, k)
    return attn.scatter(-1, idx, 0.0)


def attention_rollout(
    attentions: Sequence[torch.Tensor],
    num_prefix_tokens: int,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
) -> torch.Tensor:
    """Attention rollout maps over the patch tokens.

    attentions: one tensor per block, first block first, each (B, heads, N, N) attention
        probabilities (rows sum to 1), or already fused (B, N, N). A stacked (L, B, heads, N, N)
        tensor also works.
    num_prefix_tokens: class/distillation tokens before the patches; 0 for global average pooling.
    head_fusion: "mean" (the paper), "max" or "min" over heads.
    discard_ratio: fraction of each row's weights to zero before the residual (0 = keep all).

    Returns (B, N - num_prefix_tokens), float32 (float64 if the input is), each map scaled to
    max 1. A map that is zero everywhere (e.g. every block attends only to itself, so R = I and
    the class token receives nothing from the patches) is returned as zeros, never NaN.
    """
    attentions = list(attentions)
    if not attentions:
        raise ValueError("attentions is empty: need one attention tensor per block")
    if num_prefix_tokens < 0:
        raise ValueError(f"num_prefix_tokens must be >= 0, got {num_prefix_tokens}")

    first = fuse_heads(attentions[0], head_fusion)
    b, n, _ = first.shape
    if n <= num_prefix_tokens:
        raise ValueError(f"{n} tokens leave no patches after {num_prefix_tokens} prefix tokens")
    dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
    eye = torch.eye(n, dtype=dtype, device=first.device)

    rollout = eye.expand(b, n, n)
    for i, attn in enumerate(attentions):
        a = fuse_heads(attn, head_fusion).to(dtype)
        if a.shape != (b, n, n):
            raise ValueError(f"block {i}: attention shape {tuple(a.shape)}, expected {(b, n, n)} after head fusion")
        a = discard_lowest(a, discard_ratio)
        a = 0.5 * a + 0.5 * eye  # the residual stream carries half of each token through
        a = a / a.sum(dim=-1, keepdim=True)  # row sums >= 0.5, so never a division by zero
        rollout = a @ rollout  # R_l = A_hat_l @ R_{l-1}: later blocks multiply on the left

    p = num_prefix_tokens
    if p > 0:
        maps = rollout[:, 0, p:]  # class token's row, patch columns
    else:
        maps = rollout[:, p:, p:].mean(dim=1)  # GAP (p = 0): mean over the patch rows
    peak = maps.amax(dim=-1, keepdim=True)
    return torch.where(peak > 0, maps / peak.clamp_min(torch.finfo(dtype).tiny), torch.zeros_like(maps))


def rollout_to_image(
    maps: torch.Tensor,
    grid_size: int | tuple[int, int],
    image_size: int | tuple[int, int],
) -> torch.Tensor:
    """Patch maps (B, gh * gw), raster order, -> (B, H, W) by bilinear upsampling.

    Bilinear weights are convex, so the values stay within the maps' range ([0, 1] for rollout
    maps); the peak may fall slightly below 1 between pixel centres and is not rescaled.
    """
    gh, gw = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if maps.ndim != 2 or maps.shape[1] != gh * gw:
        raise ValueError(f"maps must be (B, {gh * gw}) for a {gh}x{gw} grid, got shape {tuple(maps.shape)}")
    grid = maps.reshape(maps.shape[0], 1, gh, gw)  # (B, 1, gh, gw), raster order
    dtype = maps.dtype if maps.is_floating_point() else torch.float32
    up = F.interpolate(grid.to(dtype), size=size, mode="bilinear", align_corners=False)
    return up[:, 0]  # (B, H, W)
