"""What every dataset builder returns: a `DataBundle` of two splits plus the facts models need.

Also the pieces the builders share: an in-memory uint8 dataset, a stratified split and
per-channel statistics.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset


@dataclass(frozen=True)
class DataBundle:
    """Two splits of one image classification dataset and what a model needs to know about it.

    `train` / `test` items are `(image, label)`: image float32 (C, H, W) in [0, 1], label int.
    `img_size` is the (H, W) of the stored images; `mean` / `std` are per-channel statistics of
    the train split only (in [0, 1] units), used by `train_transform` / `eval_transform`.
    `keep_original`: the items are decoded images at their own sizes (photos of mixed sizes), and
    `img_size` is only the size asked for, else the most common file size; `train_transform` /
    `eval_transform` then crop each image to one size per sample (see `vitkit.data.photo`).
    """

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    in_chans: int
    img_size: tuple[int, int]
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    keep_original: bool = False

    def __str__(self) -> str:
        h, w = self.img_size
        size = f"{self.in_chans} channels at their own sizes" if self.keep_original else f"{self.in_chans}x{h}x{w}"
        return (f"{self.name}: {len(self.train)} train / {len(self.test)} test images, "
                f"{size}, {self.num_classes} classes")


class TensorImageDataset(Dataset):
    """Images held in memory as one uint8 tensor; the loader indexes it a batch at a time.

    images: (N, C, H, W) uint8 with values in [0, max_value]; labels: (N,) int64.
    source_indices: (N,) int64, each image's row in the original file (for reproducibility).
    An item is `(images[i] / max_value as float32 (C, H, W), int(labels[i]))`.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, max_value: int = 255,
                 source_indices: torch.Tensor | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.max_value = int(max_value)
        self.source_indices = (torch.arange(len(labels)) if source_indices is None
                               else torch.as_tensor(source_indices, dtype=torch.int64))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i].float().div_(self.max_value), int(self.labels[i])

    def subset(self, idx: np.ndarray | torch.Tensor) -> "TensorImageDataset":
        """A new dataset holding copies of the rows `idx`, in that order."""
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.int64)
        return TensorImageDataset(self.images[idx], self.labels[idx], self.max_value,
                                  self.source_indices[idx])


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so each class keeps `round(test_fraction * count)` images for test.

    Deterministic from `seed` (numpy's PCG64 via `default_rng`), so a seed gives the same split
    on every machine. Each class keeps at least one training image. Both index arrays come back
    in a seeded random order, so a prefix of either split holds every class.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = min(int(round(test_fraction * len(idx))), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train_idx = rng.permutation(np.concatenate(train))
    test_idx = rng.permutation(np.concatenate(test))
    return train_idx, test_idx


def labelled_subset(dataset: Dataset, per_class: int, seed: int) -> Dataset:
    """The first ``per_class`` images of every class in a seeded random order: the few-label split.

    For the "pretrain on everything, fine-tune on 10 / 100 labels per class" protocol. The draw
    depends on ``seed`` only, and a larger ``per_class`` with the same seed keeps the smaller set.
    Raises ValueError when a class has fewer than ``per_class`` images.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise ValueError(f"{type(dataset).__name__} has no .labels: cannot draw labels per class from it")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} training images, fewer than labels_per_class={per_class}")
        picked.append(idx[:per_class])
    idx = rng.permutation(np.concatenate(picked))
    if hasattr(dataset, "subset"):
        return dataset.subset(idx)
    return torch.utils.data.Subset(dataset, idx.tolist())


def uint8_channel_stats(images: torch.Tensor, max_value: int = 255) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 images (N, C, H, W), in [0, 1] units.

    Uses a 256-bin histogram per channel, so it is exact and needs no float copy of the data.
    """
    means, stds = [], []
    values = torch.arange(256, dtype=torch.float64) / max_value
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        n = hist.sum()
        mean = (hist * values).sum() / n
        var = (hist * (values - mean) ** 2).sum() / n
        means.append(float(mean))
        stds.append(float(var.sqrt()))
    return tuple(means), tuple(stds)


def float_channel_stats(images: Iterable[torch.Tensor]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of float images, each (C, H, W), accumulated in float64."""
    total = total_sq = None
    count = 0
    for img in images:
        x = img.to(torch.float64).flatten(1)  # (C, H*W)
        s, sq = x.sum(1), (x * x).sum(1)
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += x.shape[1]
    if total is None:
        raise ValueError("cannot compute statistics of an empty split")
    mean = total / count
    std = (total_sq / count - mean ** 2).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
