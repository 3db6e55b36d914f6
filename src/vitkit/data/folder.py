"""Image folders: one sub-folder per class (names sorted), PNG / JPEG / BMP files, decoded with Pillow.

    PATH/<class>/<image>             -> stratified 80/20 train/test split by split_seed
    PATH/train/<class>/<image> and PATH/test/<class>/<image> (or PATH/val/...) -> those splits
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .bundle import DataBundle, TensorImageDataset, float_channel_stats, stratified_split, uint8_channel_stats
from .image import IMAGE_EXTENSIONS, is_gray_mode, load_image, read_header

STATS_MAX_IMAGES = 5000
"""Mean/std of a lazily loaded train split use at most this many images (evenly spaced)."""


class FolderDataset(Dataset):
    """Image files decoded on access: item = (float32 (in_chans, H, W) in [0, 1], label int).

    samples: list of (path, label); every image is converted to `in_chans` and resized to `img_size`,
    or, with img_size None, kept at its own size (the decoded original, EXIF orientation applied), for
    a per-sample transform to crop (`photo_train_transform` / `photo_eval_transform`).
    """

    def __init__(self, samples: list[tuple[Path, int]], classes: list[str], in_chans: int,
                 img_size: tuple[int, int] | None):
        self.samples = samples
        self.classes = classes
        self.in_chans = in_chans
        self.img_size = None if img_size is None else (int(img_size[0]), int(img_size[1]))
        self.labels = torch.tensor([label for _, label in samples], dtype=torch.int64)

    @property
    def keep_original(self) -> bool:
        """True when items are the images at their own sizes."""
        return self.img_size is None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        return load_image(path, self.in_chans, self.img_size), label

    def to_memory(self) -> TensorImageDataset:
        """Decode every image once into a uint8 tensor (fast loading, no decoding per epoch)."""
        if self.img_size is None:
            raise ValueError("images kept at their own sizes cannot share one tensor; give img_size to decode "
                             "them at one size first")
        images = torch.empty((len(self), self.in_chans, *self.img_size), dtype=torch.uint8)
        for i in range(len(self)):
            images[i] = self[i][0].mul(255).round_().clamp_(0, 255).to(torch.uint8)
        return TensorImageDataset(images, self.labels.clone())


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()


def _scan(folder: Path, classes: list[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """(samples, classes) of a folder of class sub-folders; `classes` fixes the label of each name."""
    class_dirs = sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
                        key=lambda d: d.name)
    exts = "/".join(IMAGE_EXTENSIONS)
    if not class_dirs:
        if any(_is_image(p) for p in folder.iterdir()):
            raise ValueError(f"the images in '{folder}' are not in class sub-folders; "
                             f"put them in one sub-folder per class: {folder}/<class>/<image>")
        raise ValueError(f"'{folder}' has no class sub-folders; expected {folder}/<class>/<image> ({exts})")
    if classes is None:
        classes = [d.name for d in class_dirs]
        required = True
    else:
        unknown = [d.name for d in class_dirs if d.name not in classes]
        if unknown:
            raise ValueError(f"class folder(s) {unknown} in '{folder}' are not among the training classes {classes}")
        required = False
    index = {c: i for i, c in enumerate(classes)}
    files = {d.name: sorted((p for p in d.rglob("*") if _is_image(p)), key=str) for d in class_dirs}
    if not any(files.values()):
        raise ValueError(f"found no images ({exts}) under '{folder}'")
    empty = [str(d) for d in class_dirs if not files[d.name]]
    if required and empty:
        raise ValueError(f"class folder(s) {empty} have no images ({exts}); add images or remove the folder(s)")
    samples = [(p, index[d.name]) for d in class_dirs for p in files[d.name]]
    return samples, classes


def _root(path: str | Path) -> Path:
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"image folder '{root}' does not exist; check the path")
    if not root.is_dir():
        raise ValueError(f"'{root}' is not a folder; imagefolder:PATH needs PATH/<class>/<image> files")
    return root


def evaluation_images(path: str | Path, classes: list[str], in_chans: int,
                      img_size: tuple[int, int] | None = None) -> FolderDataset:
    """The images of a folder given for evaluation, labelled by their folder's index in ``classes``
    (a trained model's class names): every image of PATH/<class>/, or of PATH/test (or PATH/val)
    when the folder has its own train/test split. A class folder whose name is not in ``classes``
    raises ValueError naming it; classes without a folder are simply not scored. ``img_size`` None
    keeps every image at its own size (for `photo_eval_transform`, resize + centre crop)."""
    root = _root(path)
    dirs = _split_dirs(root)
    samples, _ = _scan(dirs[1] if dirs is not None else root, list(classes))
    for p, _ in samples:
        read_header(p)  # a non-image fails here, naming the file, before any scoring
    return FolderDataset(samples, list(classes), in_chans, None if img_size is None else tuple(img_size))


def _split_dirs(root: Path) -> tuple[Path, Path] | None:
    if (root / "train").is_dir():
        for name in ("test", "val"):
            if (root / name).is_dir():
                return root / "train", root / name
    return None


def imagefolder(path: str | Path, split_seed: int = 0, img_size: int | tuple[int, int] | None = None,
                in_memory: bool = False, name: str | None = None, in_chans: int | None = None,
                keep_original: bool | None = None) -> DataBundle:
    """A `DataBundle` from a folder of class sub-folders (see the module docstring for the layouts).

    Every image is converted to one channel count (``in_chans``, else 1 if every file is grayscale,
    else RGB). keep_original (None, the default: when the files are not all of one size, the target
    size when given, unless in_memory; photos): files are decoded on each access at their own size, and the bundle's transforms crop each image to the target size on its own: training a
    random resized crop of the original, evaluation a resize + centre crop (`vitkit.data.photo`);
    the bundle's `img_size` is `img_size` if given, else the most common file size (a model with a
    fixed input size should use its own: pass it as the transforms' img_size). keep_original=False or
    in_memory: every image is resized to one size at decode (`img_size`, int or (H, W), else the most
    common size among the files), as before; in_memory decodes everything once into a uint8 tensor
    (then the loader's fast path applies). Raises FileNotFoundError for a missing path, ValueError for
    a folder without class folders or images, ImageLoadError for an unreadable file.
    """
    root = _root(path)
    dirs = _split_dirs(root)
    if dirs is not None:
        train_samples, classes = _scan(dirs[0])
        test_samples, _ = _scan(dirs[1], classes)
    else:
        samples, classes = _scan(root)
        train_idx, test_idx = stratified_split(np.array([s[1] for s in samples]), 0.2, split_seed)
        train_samples = [samples[i] for i in train_idx]
        test_samples = [samples[i] for i in test_idx]
        if not test_samples:
            raise ValueError(f"'{root}' has too few images per class for a 80/20 split; add images "
                             f"or give separate {root}/train and {root}/test folders")

    headers = [read_header(p) for p, _ in train_samples + test_samples]  # also rejects non-images early
    if in_chans is None:
        in_chans = 1 if all(is_gray_mode(mode) for mode, _ in headers) else 3
    if img_size is None:
        size = Counter(hw for _, hw in headers).most_common(1)[0][0]
    else:
        size = (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))

    sizes = {hw for _, hw in headers}
    if keep_original is None:  # photos: sizes that differ, or differ from the size asked for
        keep_original = len(sizes) > 1 or (img_size is not None and sizes != {size})
    keep = bool(keep_original) and not in_memory
    train = FolderDataset(train_samples, classes, in_chans, None if keep else size)
    test = FolderDataset(test_samples, classes, in_chans, None if keep else size)
    if in_memory:
        train, test = train.to_memory(), test.to_memory()
        mean, std = uint8_channel_stats(train.images)
    else:
        pick = np.linspace(0, len(train) - 1, min(len(train), STATS_MAX_IMAGES)).round().astype(int)
        mean, std = float_channel_stats(train[int(i)][0] for i in np.unique(pick))
    return DataBundle(name=name or f"imagefolder:{path}", train=train, test=test, num_classes=len(classes),
                      in_chans=in_chans, img_size=size, classes=list(classes), mean=mean, std=std,
                      keep_original=keep)
