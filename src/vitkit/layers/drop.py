"""Dropping in training: stochastic depth (Huang et al. 2016), as used by DeiT and every ViT recipe since,
and random token subsets (MAE's masking, PatchDropout: `keep_random_tokens`)."""
from __future__ import annotations

import torch
from torch import nn


def drop_path(x: torch.Tensor, p: float = 0.0, training: bool = False) -> torch.Tensor:
    """Zero whole residual branches per sample with probability ``p``; rescale survivors by 1/(1-p).

    x: (B, ...). Identity when ``p == 0`` or not training.
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path`."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def keep_random_tokens(x: torch.Tensor, len_keep: int, noise: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep ``len_keep`` random tokens of each sample (MAE's per-sample shuffle): x (B, N, D), noise (B, N),
    default uniform in [0, 1); the tokens with the smallest noise stay.

    Returns the kept tokens (B, len_keep, D), in order of increasing noise, and ``ids_shuffle`` (B, N) =
    argsort(noise), whose first ``len_keep`` columns index them."""
    B, N, D = x.shape
    if noise is None:
        noise = torch.rand(B, N, device=x.device)
    if noise.shape != (B, N):
        raise ValueError(f"noise must be (B, N) = ({B}, {N}), got {tuple(noise.shape)}")
    ids_shuffle = torch.argsort(noise.to(x.device), dim=1)
    return torch.gather(x, 1, ids_shuffle[:, :len_keep, None].expand(-1, -1, D)), ids_shuffle
