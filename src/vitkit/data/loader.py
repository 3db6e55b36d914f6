"""A deterministic, rank-aware batch loader with a fast path for in-memory uint8 datasets.

The epoch's order is a permutation drawn from a generator seeded by (seed, epoch), the same on every
rank; rank r takes every world_size-th index of it (padded by wrapping around, or truncated when
drop_last, to a multiple of world_size), as torch's DistributedSampler does. Batch k's augmentation
uses a generator seeded by (seed, epoch, rank, k), so calling `set_epoch(e)` again replays exactly
the same batches, and `start_batch` resumes mid-epoch with the same batches that would have followed.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .bundle import TensorImageDataset

_ORDER, _AUGMENT = 0, 1  # stream tags, so the two seed families never collide


def _derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy SeedSequence: stable across platforms)."""
    return int(np.random.SeedSequence([int(p) % 2**64 for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def _generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(_derive_seed(*parts))


def _tensor_source(dataset: Dataset) -> tuple[TensorImageDataset, torch.Tensor | None] | None:
    """(in-memory base dataset, index map or None) when `dataset` is one, possibly under Subsets."""
    idx = None
    while isinstance(dataset, Subset):
        sub = torch.as_tensor(dataset.indices, dtype=torch.int64)
        idx = sub if idx is None else sub[idx]
        dataset = dataset.dataset
    if isinstance(dataset, TensorImageDataset):
        return dataset, idx
    return None


def _accepts_generator(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "generator" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class Loader:
    """Iterate `(images, labels)` batches: images float32 (B, C, H, W) after `transform`, labels int64 (B,).

    Build it with `make_loader`. Attributes `epoch`, `rank`, `world_size`, `seed` may be changed
    between epochs; `set_epoch(e)` selects the epoch's order and augmentation.
    """

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool, drop_last: bool, seed: int,
                 transform: Callable | None, rank: int, world_size: int, num_workers: int = 0,
                 pad: bool = True):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if len(dataset) == 0:
            raise ValueError("cannot load batches from an empty dataset")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.transform = transform
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.num_workers = int(num_workers)
        self.pad = bool(pad)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration yields."""
        self.epoch = int(epoch)

    @property
    def num_samples(self) -> int:
        """Indices this rank sees per epoch (before batching)."""
        n = len(self.dataset)
        if not self.pad:  # uneven shards: rank r holds indices r, r + W, ...
            return len(range(self.rank, n, self.world_size))
        if self.drop_last and n >= self.world_size:
            return n // self.world_size
        return math.ceil(n / self.world_size)

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def indices(self, epoch: int | None = None) -> torch.Tensor:
        """This rank's dataset indices for `epoch` (default: the current one), in order: (num_samples,) int64."""
        epoch = self.epoch if epoch is None else int(epoch)
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=_generator(_ORDER, self.seed, epoch))
        else:
            order = torch.arange(n)
        if not self.pad:
            return order[self.rank::self.world_size]
        total = self.num_samples * self.world_size
        if total > n:  # pad by wrapping around, as many times as needed
            order = order.repeat(math.ceil(total / n))
        return order[:total][self.rank::self.world_size]

    def _batches(self, start_batch: int) -> list[torch.Tensor]:
        idx = self.indices()
        return [idx[k * self.batch_size:(k + 1) * self.batch_size] for k in range(start_batch, len(self))]

    def _apply(self, images: torch.Tensor, k: int) -> torch.Tensor:
        if self.transform is None:
            return images
        if _accepts_generator(self.transform):
            return self.transform(images, generator=_generator(_AUGMENT, self.seed, self.epoch, self.rank, k))
        return self.transform(images)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate the current epoch from batch `start_batch` (to resume mid-epoch)."""
        batches = self._batches(start_batch)
        fast = _tensor_source(self.dataset)
        if fast is not None:
            base, idx_map = fast
            for k, idx in enumerate(batches, start_batch):
                rows = idx if idx_map is None else idx_map[idx]
                images = base.images.index_select(0, rows).float().div_(base.max_value)
                yield self._apply(images, k), base.labels.index_select(0, rows)
            return
        # Generic datasets: items are decoded by a DataLoader (optionally in worker processes).
        dl = DataLoader(self.dataset, batch_sampler=[b.tolist() for b in batches],
                        num_workers=self.num_workers, persistent_workers=False)
        for k, (images, labels) in enumerate(dl, start_batch):
            yield self._apply(images.float(), k), torch.as_tensor(labels, dtype=torch.int64)

    def __repr__(self) -> str:
        return (f"Loader({len(self.dataset)} items, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, rank={self.rank}/{self.world_size}, {len(self)} batches"
                f"{', in-memory fast path' if _tensor_source(self.dataset) else ''})")


def make_loader(dataset: Dataset, batch_size: int = 128, shuffle: bool = False, drop_last: bool = False,
                seed: int = 0, transform: Callable | None = None, rank: int = 0, world_size: int = 1,
                num_workers: int = 0, pad: bool = True) -> Loader:
    """A `Loader` over `dataset` (items `(image (C, H, W) float in [0, 1], label)`).

    shuffle: a new permutation each epoch from (seed, epoch), identical on every rank.
    drop_last: drop the last short batch (and truncate, rather than pad, the split across ranks).
    transform: called on each float batch (B, C, H, W) in [0, 1], with `generator=` when it accepts one.
    rank / world_size: this process's shard (every world_size-th index of the permutation).
    num_workers: decoding processes for datasets that are not in memory (ignored for in-memory ones,
      which are indexed a whole batch at a time).
    pad: make every rank's shard equal by wrapping around (training under DDP needs equal step
      counts); pad=False gives uneven shards that hold each item exactly once (exact evaluation).
    """
    return Loader(dataset, batch_size, shuffle, drop_last, seed, transform, rank, world_size, num_workers, pad)
