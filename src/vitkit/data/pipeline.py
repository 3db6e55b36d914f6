"""The standard train / eval transform recipes for a `DataBundle`."""
from __future__ import annotations

import difflib
from collections.abc import Sequence

from .bundle import DataBundle
from .transforms import (Compose, Normalize, RandomAffine, RandomErasing, RandomHorizontalFlip,
                         RandomResizedCrop, Resize, Transform, _pair)

AUGMENT_DEFAULTS = dict(hflip=0.0, rotate=0.0, translate=0.0, scale=None, shear=0.0,
                        random_resized_crop=None, erase=0.0)
"""The keyword arguments `train_transform` accepts; these defaults mean no augmentation."""


def _target_size(bundle: DataBundle, img_size: int | Sequence[int] | None) -> tuple[int, int]:
    return tuple(bundle.img_size) if img_size is None else _pair(img_size)


def train_transform(bundle: DataBundle, img_size: int | Sequence[int] | None = None, **augment) -> Compose:
    """Training transform for float batches (B, C, H, W) in [0, 1] -> normalised (B, C, *img_size).

    Order: RandomResizedCrop (if `random_resized_crop`, output at img_size) -> RandomAffine (if any
    of rotate/translate/scale/shear) -> RandomHorizontalFlip (if hflip) -> RandomErasing (if erase;
    fills with the bundle mean, i.e. 0 after normalising) -> Resize to img_size (if it differs) ->
    Normalize with the bundle's train mean/std.

    augment keys (see AUGMENT_DEFAULTS; the defaults mean no augmentation):
      hflip: flip probability; rotate: max degrees; translate: max shift as a fraction of the side;
      scale: (lo, hi) zoom range; shear: max degrees; random_resized_crop: (lo, hi) area fraction,
      or a float lo meaning (lo, 1.0); erase: probability of erasing one box per image.
    img_size: int or (H, W); None keeps the bundle's stored size.
    Raises TypeError naming any unknown key.
    """
    unknown = sorted(set(augment) - set(AUGMENT_DEFAULTS))
    if unknown:
        hints = [f"'{k}' (did you mean '{m[0]}'?)" if (m := difflib.get_close_matches(k, AUGMENT_DEFAULTS, 1))
                 else f"'{k}'" for k in unknown]
        raise TypeError(f"train_transform got unknown augmentation key(s) {', '.join(hints)}; "
                        f"valid keys: {', '.join(AUGMENT_DEFAULTS)}")
    a = {**AUGMENT_DEFAULTS, **augment}
    size = _target_size(bundle, img_size)
    steps: list[Transform] = []
    rrc = a["random_resized_crop"]
    if rrc is not None and rrc is not False:
        if rrc is True:
            rrc = (0.08, 1.0)
        steps.append(RandomResizedCrop(size, scale=(float(rrc), 1.0) if isinstance(rrc, (int, float)) else tuple(rrc)))
    if a["rotate"] or a["translate"] or a["scale"] is not None or a["shear"]:
        steps.append(RandomAffine(rotate=a["rotate"], translate=a["translate"], scale=a["scale"], shear=a["shear"]))
    if a["hflip"]:
        steps.append(RandomHorizontalFlip(a["hflip"]))
    if a["erase"]:
        steps.append(RandomErasing(p=a["erase"], value=bundle.mean))
    steps += [Resize(size), Normalize(bundle.mean, bundle.std)]
    return Compose(steps)


def eval_transform(bundle: DataBundle, img_size: int | Sequence[int] | None = None) -> Compose:
    """Deterministic eval transform: (B, C, H, W) in [0, 1] -> Resize to img_size (if it differs) -> Normalize."""
    return Compose([Resize(_target_size(bundle, img_size)), Normalize(bundle.mean, bundle.std)])
