"""A deterministic, rank-aware batch loader with a fast path for in-memory uint8 datasets.

The epoch's order is a permutation drawn from a generator seeded by (seed, epoch), the same on every
rank; rank r takes every world_size-th index of it (padded by wrapping around, or truncated when
drop_last, to a multiple of world_size), as torch's DistributedSampler does. Batch k's augmentation
uses a generator seeded by (seed, epoch, rank, k), so calling `set_epoch(e)` again replays exactly
the same batches, and `start_batch` resumes mid-epoch with the same batches that would have followed.

Two transform stages: a per-sample one (``sample_transform``, or a `PerSample` given as ``transform``)
runs on every item (C, H, W) before the items are stacked, in the worker processes when there are
some, with a generator seeded by (seed, epoch, rank, k, j) for the item at position j of batch k; the
batch one (``transform``) runs on the stacked batch in this process, with the batch's generator. The
seeds depend on none of the worker count, the worker an item went to, or the order items finish in,
so every ``num_workers`` gives the same batches. Worker processes (a torch DataLoader over the same
batches) are kept from one epoch to the next (``persistent_workers``).
"""
from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .bundle import TensorImageDataset
from .transforms import PerSample

_ORDER, _AUGMENT, _SAMPLE = 0, 1, 2  # stream tags, so the seed families never collide


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


def _keeps_original(dataset: Dataset) -> bool:
    """True for a dataset (possibly under Subsets) whose images keep their own sizes (FolderDataset.keep_original)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return bool(getattr(dataset, "keep_original", False))


def default_num_workers(dataset: Dataset) -> int:
    """Decoding processes worth starting for ``dataset``: 0 for an in-memory one (nothing to decode,
    the fast path indexes whole batches), else half the CPUs this process may use (at least 1, at most
    8), leaving the rest to the training step's own threads; on 2 cores, 1 worker."""
    if _tensor_source(dataset) is not None:
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus // 2))


class _Items(Dataset):
    """What the DataLoader's workers index: key (index, seed or None) -> (image, label), the image passed
    through the per-sample transform with a generator seeded by ``seed``. Holds no epoch state, so
    persistent workers need nothing from this process but the keys."""

    def __init__(self, dataset: Dataset, sample_transform: Callable | None):
        self.dataset = dataset
        self.sample_transform = sample_transform
        self.with_generator = sample_transform is not None and _accepts_generator(sample_transform)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int | None]):
        i, seed = key
        x, y = self.dataset[i]
        if self.sample_transform is not None:
            if self.with_generator:
                x = self.sample_transform(x, generator=torch.Generator().manual_seed(seed))
            else:
                x = self.sample_transform(x)
        return x, y


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = sorted({tuple(x.shape) for x, _ in items})
    if len(shapes) > 1:
        raise ValueError(f"cannot batch images of different sizes {shapes[:4]}{' ...' if len(shapes) > 4 else ''}: "
                         "give a per-sample transform that brings every image to one size (the bundle's "
                         "train_transform / eval_transform, or photo_train_transform / photo_eval_transform), "
                         "or build the data with one decode size (imagefolder(..., keep_original=False))")
    images = torch.stack([x for x, _ in items])
    return images, torch.as_tensor([int(y) for _, y in items], dtype=torch.int64)


class _Keys:
    """The DataLoader's batch sampler: the key lists of the Loader's current plan (set before each pass),
    so one DataLoader, and its persistent workers, serves every epoch."""

    def __init__(self):
        self.batches: list[list[tuple[int, int | None]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


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
                 pad: bool = True, sample_transform: Callable | None = None, persistent_workers: bool = True,
                 pin_memory: bool = False, repeats: int = 1):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if len(dataset) == 0:
            raise ValueError("cannot load batches from an empty dataset")
        if int(num_workers) < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if int(repeats) < 1 or (int(repeats) > 1 and not shuffle):
            raise ValueError(f"repeats must be >= 1, and 1 without shuffle; got {repeats} (shuffle={shuffle})")
        self.repeats = int(repeats)
        if isinstance(transform, PerSample):
            if sample_transform is not None:
                raise ValueError("give the per-sample stage once: a PerSample transform or sample_transform, not both")
            transform, sample_transform = None, transform.transform
        elif transform is not None and sample_transform is None and _keeps_original(dataset):
            transform, sample_transform = None, transform  # images of their own sizes cannot be batched first
        self.sample_transform = sample_transform
        self.persistent_workers = bool(persistent_workers)
        self.pin_memory = bool(pin_memory)
        self._dl: DataLoader | None = None
        self._dl_key: tuple | None = None
        self._keys = _Keys()
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
            if self.repeats > 1:  # repeated augmentation: n / r images, each r times in a row
                order = order[:math.ceil(n / self.repeats)].repeat_interleave(self.repeats)[:n]
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

    def sample_seed(self, k: int, j: int, epoch: int | None = None) -> int:
        """The seed of the per-sample generator of item j of batch k (this rank, `epoch` or the current one)."""
        epoch = self.epoch if epoch is None else int(epoch)
        return _derive_seed(_SAMPLE, self.seed, epoch, self.rank, k, j)

    def _keys_of(self, batches: list[torch.Tensor], start_batch: int) -> list[list[tuple[int, int | None]]]:
        if self.sample_transform is None:
            return [[(int(i), None) for i in b.tolist()] for b in batches]
        return [[(int(i), self.sample_seed(k, j)) for j, i in enumerate(b.tolist())]
                for k, b in enumerate(batches, start_batch)]

    def _per_sample(self, x: torch.Tensor, k: int, j: int) -> torch.Tensor:
        if _accepts_generator(self.sample_transform):
            return self.sample_transform(x, generator=torch.Generator().manual_seed(self.sample_seed(k, j)))
        return self.sample_transform(x)

    def _dataloader(self) -> DataLoader:
        key = (id(self.dataset), id(self.sample_transform), self.num_workers, self.persistent_workers, self.pin_memory)
        if self._dl is None or self._dl_key != key:
            self.close()
            workers = self.num_workers
            # a private generator: the DataLoader draws its workers' base seed from it, not from torch's global
            # RNG, which the training loop (mixup, dropout) relies on being untouched by data loading
            self._dl = DataLoader(_Items(self.dataset, self.sample_transform), batch_sampler=self._keys,
                                  num_workers=workers, collate_fn=_collate, pin_memory=self.pin_memory,
                                  persistent_workers=self.persistent_workers and workers > 0,
                                  generator=torch.Generator().manual_seed(self.seed))
            self._dl_key = key
        return self._dl

    def close(self) -> None:
        """Stop the worker processes (they stop anyway when the loader is garbage-collected)."""
        dl, self._dl, self._dl_key = self._dl, None, None
        it = getattr(dl, "_iterator", None) if dl is not None else None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()

    def iter_from(self, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate the current epoch from batch `start_batch` (to resume mid-epoch)."""
        batches = self._batches(start_batch)
        fast = _tensor_source(self.dataset)
        if fast is not None and (self.sample_transform is None or self.num_workers == 0):
            base, idx_map = fast
            for k, idx in enumerate(batches, start_batch):
                rows = idx if idx_map is None else idx_map[idx]
                images = base.images.index_select(0, rows).float().div_(base.max_value)
                if self.sample_transform is not None:
                    images = torch.stack([self._per_sample(images[j], k, j) for j in range(len(rows))])
                yield self._apply(images, k), base.labels.index_select(0, rows)
            return
        # Generic datasets: items are decoded (and per-sample transformed) by a DataLoader, in worker
        # processes when num_workers > 0; batches come back in order.
        self._keys.batches = self._keys_of(batches, start_batch)
        for k, (images, labels) in enumerate(self._dataloader(), start_batch):
            yield self._apply(images.float(), k), labels

    def __repr__(self) -> str:
        return (f"Loader({len(self.dataset)} items, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, rank={self.rank}/{self.world_size}, {len(self)} batches, "
                f"num_workers={self.num_workers}{', per-sample transform' if self.sample_transform else ''}"
                f"{', in-memory fast path' if _tensor_source(self.dataset) else ''})")


def make_loader(dataset: Dataset, batch_size: int = 128, shuffle: bool = False, drop_last: bool = False,
                seed: int = 0, transform: Callable | None = None, rank: int = 0, world_size: int = 1,
                num_workers: int = 0, pad: bool = True, sample_transform: Callable | None = None,
                persistent_workers: bool = True, pin_memory: bool = False, repeats: int = 1) -> Loader:
    """A `Loader` over `dataset` (items `(image (C, H, W) float in [0, 1], label)`).

    shuffle: a new permutation each epoch from (seed, epoch), identical on every rank.
    drop_last: drop the last short batch (and truncate, rather than pad, the split across ranks).
    transform: called on each float batch (B, C, H, W) in [0, 1], with `generator=` when it accepts one;
      a `PerSample` transform (e.g. `photo_train_transform`) is the per-sample stage instead, and so is
      any transform over a dataset whose images keep their own sizes (`FolderDataset.keep_original`),
      which cannot be stacked before they are transformed.
    sample_transform: called on each item's image (C, H, W) before batching, with a generator of its own
      (seeded by seed, epoch, rank, batch, position); this is how images of different sizes (photos kept
      at their own size) are cropped to one size. Runs in the worker processes when num_workers > 0.
    rank / world_size: this process's shard (every world_size-th index of the permutation).
    num_workers: decoding processes (torch DataLoader workers); 0 decodes here. In-memory datasets are
      indexed a whole batch at a time here unless a per-sample transform is to run in workers.
      `default_num_workers(dataset)` gives a sensible number. Any number gives the same batches.
    persistent_workers: keep the workers from one epoch to the next (else they restart every epoch).
    pin_memory: batches in pinned memory, for a faster copy to a CUDA device.
    pad: make every rank's shard equal by wrapping around (training under DDP needs equal step
      counts); pad=False gives uneven shards that hold each item exactly once (exact evaluation).
    repeats: repeated augmentation (Hoffer et al. 2019; DeiT's RASampler, Touvron et al. 2021): each
      epoch keeps its length but draws ceil(n / repeats) images and yields each `repeats` times in a
      row, each copy augmented on its own. One process sees the copies in one batch; under DDP the
      rank striding sends them to different ranks, as DeiT's sampler does. Needs shuffle.
    """
    return Loader(dataset, batch_size, shuffle, drop_last, seed, transform, rank, world_size, num_workers, pad,
                  sample_transform=sample_transform, persistent_workers=persistent_workers, pin_memory=pin_memory,
                  repeats=repeats)
