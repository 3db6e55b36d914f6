"""Datasets, transforms and loaders.

    bundle = build("mnist5k", split_seed=0)          # or "digits", "imagefolder:PATH", "cifar10:PATH"
    loader = make_loader(bundle.train, batch_size=128, shuffle=True, drop_last=True,
                         transform=train_transform(bundle, rotate=10, translate=0.1))
    for images, labels in loader: ...                # (B, C, H, W) float32 normalised, (B,) int64

Photos of mixed sizes (imagefolder keeps each at its own size): the transforms crop per image, in
the loader's worker processes, from the decoded original:

    bundle = build("imagefolder:photos")
    train = make_loader(bundle.train, 32, shuffle=True, drop_last=True, num_workers=2,
                        transform=train_transform(bundle, 224, mean=ckpt_mean, std=ckpt_std))
    test = make_loader(bundle.test, 64, transform=eval_transform(bundle, 224, crop_pct=0.875))
"""
from __future__ import annotations

import inspect

from .bundle import DataBundle, TensorImageDataset, labelled_subset
from .bundled import digits, mnist5k
from .cifar import cifar10
from .folder import FolderDataset, imagefolder
from .image import IMAGE_EXTENSIONS, ImageLoadError, load_image
from .loader import Loader, default_num_workers, make_loader
from .photo import (DEFAULT_CROP_PCT, PHOTO_AUGMENT_DEFAULTS, RandomCropResize, ResizeCenterCrop,
                    photo_eval_transform, photo_train_transform)
from .pipeline import AUGMENT_DEFAULTS, eval_transform, model_input_transform, train_transform
from .randaugment import RandAugment, rand_augment
from .transforms import PerSample

_BUILDERS = {"mnist5k": mnist5k, "digits": digits, "imagefolder": imagefolder, "cifar10": cifar10}
_NEEDS_PATH = {"imagefolder", "cifar10"}


def build(spec: str, split_seed: int = 0, **kwargs) -> DataBundle:
    """Build a `DataBundle` from a spec string.

    spec: "mnist5k" (5,000 real MNIST digits, 4,000/1,000), "digits" (scikit-learn 8x8 digits, 80/20),
      "imagefolder:PATH" (class sub-folders; kwargs img_size=, in_memory=, keep_original=, in_chans=),
      "cifar10:PATH" (binary files).
    split_seed: seed of the fixed stratified train/test split (ignored where the data has its own split).
    Raises ValueError for an unknown spec, TypeError for a keyword the dataset does not take.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"data spec must be a non-empty string such as 'mnist5k', got {spec!r}")
    kind, sep, path = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in _BUILDERS:
        raise ValueError(f"unknown data spec '{spec}'; use one of: mnist5k, digits, imagefolder:PATH, cifar10:PATH")
    if (kind in _NEEDS_PATH) != bool(sep and path):
        form = f"'{kind}:PATH'" if kind in _NEEDS_PATH else f"'{kind}' (no path)"
        raise ValueError(f"data spec '{spec}' should be {form}")
    fn = _BUILDERS[kind]
    allowed = set(inspect.signature(fn).parameters) - {"path", "name", "split_seed"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(f"data '{kind}' does not take {unknown}; it takes {sorted(allowed) or 'no options'}")
    if "split_seed" in inspect.signature(fn).parameters:
        kwargs["split_seed"] = split_seed
    return fn(path, name=spec, **kwargs) if kind in _NEEDS_PATH else fn(name=spec, **kwargs)


__all__ = ["build", "make_loader", "train_transform", "eval_transform", "model_input_transform", "load_image", "DataBundle",
           "ImageLoadError", "labelled_subset", "Loader", "TensorImageDataset", "FolderDataset", "AUGMENT_DEFAULTS",
           "IMAGE_EXTENSIONS", "mnist5k", "digits", "imagefolder", "cifar10", "default_num_workers",
           "photo_train_transform", "photo_eval_transform", "PHOTO_AUGMENT_DEFAULTS", "DEFAULT_CROP_PCT",
           "RandomCropResize", "ResizeCenterCrop", "RandAugment", "rand_augment", "PerSample"]
