"""CIFAR-10 in its binary format: `data_batch_{1..5}.bin` and `test_batch.bin`, records of 1 label byte + 3072
pixel bytes (1024 red, 1024 green, 1024 blue, row-major 32x32). Read as raw bytes; nothing is unpickled."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .bundle import DataBundle, TensorImageDataset, uint8_channel_stats

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_RECORD = 1 + 3 * 32 * 32


def _find_root(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"CIFAR-10 folder '{path}' does not exist; download the binary version "
                                f"(cifar-10-binary.tar.gz) and give the folder that holds test_batch.bin")
    if not path.is_dir():
        raise ValueError(f"'{path}' is not a folder; give the folder that holds the CIFAR-10 .bin files")
    for root in (path, path / "cifar-10-batches-bin"):  # the folder the official archive extracts to
        if (root / "test_batch.bin").is_file():
            return root
    raise FileNotFoundError(
        f"no test_batch.bin in '{path}'; expected the CIFAR-10 binary version (data_batch_1.bin .. "
        f"data_batch_5.bin, test_batch.bin), not the python (pickle) or matlab version")


def read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 .bin file -> (images (N, 3, 32, 32) uint8, labels (N,) int64)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _RECORD:
        raise ValueError(f"'{path}' has {raw.size} bytes, not a whole number of {_RECORD}-byte CIFAR-10 records; "
                         f"the file is truncated or not CIFAR-10 binary (CIFAR-100 is not supported)")
    rec = raw.reshape(-1, _RECORD)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() >= 10:
        raise ValueError(f"'{path}' has label {labels.max()}, CIFAR-10 labels are 0-9; is it CIFAR-100?")
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels


def _class_names(root: Path) -> list[str]:
    meta = root / "batches.meta.txt"
    if meta.is_file():
        names = [line.strip() for line in meta.read_text().splitlines() if line.strip()]
        if len(names) == 10:
            return names
    return list(CIFAR10_CLASSES)


def _load(files: list[Path]) -> TensorImageDataset:
    parts = [read_cifar_bin(f) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return TensorImageDataset(torch.from_numpy(images), torch.from_numpy(labels))


def cifar10(path: str | Path, name: str | None = None) -> DataBundle:
    """CIFAR-10 from the binary files in `path` (or `path/cifar-10-batches-bin`): train = every
    `data_batch_*.bin`, test = `test_batch.bin`. Images (3, 32, 32); class names from `batches.meta.txt`."""
    root = _find_root(Path(path).expanduser())
    train_files = sorted(root.glob("data_batch_*.bin"))
    if not train_files:
        raise FileNotFoundError(f"no data_batch_*.bin files in '{root}'; the training split is missing")
    train, test = _load(train_files), _load([root / "test_batch.bin"])
    mean, std = uint8_channel_stats(train.images)
    return DataBundle(name=name or f"cifar10:{path}", train=train, test=test, num_classes=10, in_chans=3,
                      img_size=(32, 32), classes=_class_names(root), mean=mean, std=std)
