"""Tiny model, learnable synthetic data and a rank-aware loader for the trainer tests."""
from __future__ import annotations

import math

import torch
from torch import nn


class TinyNet(nn.Module):
    """8x8 images -> 4 patch tokens (conv P=4) + pos -> Linear, GELU -> LayerNorm -> dropout -> flatten -> head."""

    def __init__(self, in_chans: int = 1, num_classes: int = 4, dim: int = 16, drop: float = 0.0):
        super().__init__()
        self.embed = nn.Conv2d(in_chans, dim, kernel_size=4, stride=4)
        self.pos = nn.Parameter(torch.randn(1, 4, dim) * 0.02)  # 3-D but named in no_weight_decay()
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(dim, dim)
        self.head = nn.Linear(4 * dim, num_classes)

    def no_weight_decay(self) -> set[str]:
        return {"pos"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2) + self.pos  # (B, 4, dim)
        t = self.drop(self.norm(torch.nn.functional.gelu(self.fc(t))))
        return self.head(t.flatten(1))


def make_model(seed: int = 0, **kw) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(**kw)


def make_data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c in 0..3 brightens quadrant c of a noisy 8x8 image."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.5 * torch.randn(n, 1, 8, 8, generator=g)
    for c, (r, s) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        x[y == c, :, r:r + 4, s:s + 4] += 1.5
    return x, y


class ToyLoader:
    """The data package's loader protocol: deterministic order from (seed, epoch); rank r takes perm[r::world].

    `fail_at=(epoch, batch)` raises KeyboardInterrupt when that batch is requested (a kill mid-epoch).
    """

    def __init__(self, x, y, batch_size, seed=0, shuffle=True, rank=0, world_size=1, fail_at=None):
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.shuffle, self.rank, self.world_size, self.fail_at = shuffle, rank, world_size, fail_at
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.y)
        if self.shuffle:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 7919 + self.epoch))
        else:
            perm = torch.arange(n)
        return perm[self.rank::self.world_size]

    def __len__(self) -> int:
        return math.ceil(len(self._indices()) / self.batch_size)

    def __iter__(self):
        idx = self._indices()
        for b in range(len(self)):
            if self.fail_at == (self.epoch, b):
                raise KeyboardInterrupt("simulated kill")
            i = idx[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.x[i], self.y[i]
