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
    _check_augment(augment)
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


def _check_augment(augment: dict) -> None:
    """Raise TypeError naming the first augmentation value of the wrong kind (``augment.rotate=abc``)."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def pair(v) -> bool:
        return isinstance(v, (list, tuple)) and len(v) == 2 and all(number(x) for x in v)

    for key, value in augment.items():
        if key in ("hflip", "rotate", "translate", "shear", "erase"):
            ok, want = number(value) and value >= 0, "a number >= 0"
        elif key == "scale":
            ok, want = value is None or pair(value), "null or [lo, hi]"
        else:  # random_resized_crop
            ok, want = value is None or isinstance(value, bool) or number(value) or pair(value), \
                "null, true, a number lo or [lo, hi]"
        if not ok:
            raise TypeError(f"augment.{key} must be {want}, got {value!r}")


def eval_transform(bundle: DataBundle, img_size: int | Sequence[int] | None = None) -> Compose:
    """Deterministic eval transform: (B, C, H, W) in [0, 1] -> Resize to img_size (if it differs) -> Normalize."""
    return model_input_transform(_target_size(bundle, img_size), bundle.mean, bundle.std)


def model_input_transform(img_size: int | Sequence[int], mean: Sequence[float], std: Sequence[float]) -> Compose:
    """Images in [0, 1] -> what a trained model takes: Resize to img_size -> Normalize with its statistics."""
    return Compose([Resize(_pair(img_size)), Normalize(mean, std)])
