"""The standard train / eval transform recipes for a `DataBundle`.

A bundle of images at one size gets batch transforms (the loader runs them on each stacked batch);
a bundle that keeps every image at its own size (``bundle.keep_original``: photos) gets per-image
ones (`PerSample`, run in the loader's workers before batching): `photo_train_transform` with DeiT's
augmentation for every key not given, and `photo_eval_transform` (resize + centre crop).
"""
from __future__ import annotations

import difflib
from collections.abc import Sequence

from .bundle import DataBundle
from .photo import (DEFAULT_CROP_PCT, DEFAULT_INTERPOLATION, PHOTO_AUGMENT_DEFAULTS, ResizeCenterCrop,
                    photo_eval_transform, photo_train_transform)
from .randaugment import rand_augment
from .transforms import (INTERPOLATIONS, Compose, Normalize, PerSample, RandomAffine, RandomElastic, RandomErasing,
                         RandomHorizontalFlip, RandomResizedCrop, Resize, Transform, _pair)

AUGMENT_DEFAULTS = dict(hflip=0.0, rotate=0.0, translate=0.0, scale=None, shear=0.0, elastic=0.0,
                        elastic_sigma=4.0, random_resized_crop=None, erase=0.0, erase_mode="const", auto_augment=None)
"""The keyword arguments `train_transform` accepts for a bundle of one-size images; these defaults
mean no augmentation. A bundle that keeps its images at their own sizes also takes ``interpolation``,
and its defaults are DeiT's (`PHOTO_AUGMENT_DEFAULTS`)."""


def _target_size(bundle: DataBundle, img_size: int | Sequence[int] | None) -> tuple[int, int]:
    return tuple(bundle.img_size) if img_size is None else _pair(img_size)


def train_transform(bundle: DataBundle, img_size: int | Sequence[int] | None = None,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    **augment) -> Compose | PerSample:
    """Training transform -> normalised images (C, *img_size).

    One-size bundles: a batch transform on float batches (B, C, H, W) in [0, 1]. Order:
    RandomResizedCrop (if `random_resized_crop`, output at img_size) -> RandomAffine (if any
    of rotate/translate/scale/shear) -> RandomElastic (if elastic) -> RandomHorizontalFlip (if hflip) -> RandAugment (if
    auto_augment, per image, filling with the mean) -> RandomErasing (if erase; "const" fills with
    the mean, i.e. 0 after normalising; "pixel" erases after Normalize with N(0, 1) noise) -> Resize
    to img_size (if it differs) -> Normalize with the bundle's train mean/std.

    Bundles that keep their images at their own sizes (``bundle.keep_original``): the per-image
    `photo_train_transform` (a random resized crop of each original, ...), with DeiT's augmentation
    (`PHOTO_AUGMENT_DEFAULTS`) for every key not given; pass e.g. auto_augment=None, erase=0 to drop parts.

    augment keys (see AUGMENT_DEFAULTS; the defaults mean no augmentation):
      hflip: flip probability; rotate: max degrees; translate: max shift as a fraction of the side;
      scale: (lo, hi) zoom range; shear: max degrees; elastic: Simard's alpha in pixels (0 = off; 34
      is the paper's for digits) with elastic_sigma (default 4) the smoothing std; random_resized_crop: (lo, hi) area fraction,
      or a float lo meaning (lo, 1.0); erase: probability of erasing one box per image; erase_mode:
      "const" or "pixel"; auto_augment: a RandAugment string ("rand-m9-mstd0.5-inc1", see
      `vitkit.data.randaugment.rand_augment`) or None; interpolation ("bicubic" / "bilinear", only for
      bundles kept at their own sizes).
    img_size: int or (H, W); None keeps the bundle's stored size. mean / std: the normalisation
    (a pretrained checkpoint's statistics); None uses the bundle's.
    Raises TypeError naming any unknown key.
    """
    valid = {**AUGMENT_DEFAULTS, **(PHOTO_AUGMENT_DEFAULTS if bundle.keep_original else {})}
    unknown = sorted(set(augment) - set(valid))
    if unknown:
        hints = [f"'{k}' (did you mean '{m[0]}'?)" if (m := difflib.get_close_matches(k, valid, 1))
                 else f"'{k}'" for k in unknown]
        extra = ("; 'interpolation' applies only to images kept at their own sizes"
                 if "interpolation" in unknown else "")
        raise TypeError(f"train_transform got unknown augmentation key(s) {', '.join(hints)}; "
                        f"valid keys: {', '.join(valid)}{extra}")
    _check_augment(augment)
    size = _target_size(bundle, img_size)
    mean = tuple(bundle.mean) if mean is None else tuple(mean)
    std = tuple(bundle.std) if std is None else tuple(std)
    if bundle.keep_original:
        return photo_train_transform(size, mean, std, **{**PHOTO_AUGMENT_DEFAULTS, **augment})
    a = {**AUGMENT_DEFAULTS, **augment}
    steps: list[Transform] = []
    rrc = a["random_resized_crop"]
    if rrc is not None and rrc is not False:
        if rrc is True:
            rrc = (0.08, 1.0)
        steps.append(RandomResizedCrop(size, scale=(float(rrc), 1.0) if isinstance(rrc, (int, float)) else tuple(rrc)))
    if a["rotate"] or a["translate"] or a["scale"] is not None or a["shear"]:
        steps.append(RandomAffine(rotate=a["rotate"], translate=a["translate"], scale=a["scale"], shear=a["shear"]))
    if a["elastic"]:
        steps.append(RandomElastic(alpha=a["elastic"], sigma=a["elastic_sigma"]))
    if a["hflip"]:
        steps.append(RandomHorizontalFlip(a["hflip"]))
    if a["auto_augment"]:
        steps.append(rand_augment(a["auto_augment"], fill=mean))
    if a["erase"] and a["erase_mode"] == "const":
        steps.append(RandomErasing(p=a["erase"], value=mean))
    steps += [Resize(size), Normalize(mean, std)]
    if a["erase"] and a["erase_mode"] == "pixel":
        steps.append(RandomErasing(p=a["erase"], mode="pixel"))
    return Compose(steps)


def _check_augment(augment: dict) -> None:
    """Raise TypeError naming the first augmentation value of the wrong kind (``augment.rotate=abc``)."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def pair(v) -> bool:
        return isinstance(v, (list, tuple)) and len(v) == 2 and all(number(x) for x in v)

    for key, value in augment.items():
        if key in ("hflip", "rotate", "translate", "shear", "erase", "elastic"):
            ok, want = number(value) and value >= 0, "a number >= 0"
        elif key == "elastic_sigma":
            ok, want = number(value) and value > 0, "a number > 0"
        elif key == "scale":
            ok, want = value is None or pair(value), "null or [lo, hi]"
        elif key == "erase_mode":
            ok, want = value in RandomErasing.MODES, f"one of {list(RandomErasing.MODES)}"
        elif key == "interpolation":
            ok, want = value in INTERPOLATIONS, f"one of {list(INTERPOLATIONS)}"
        elif key == "auto_augment":
            ok, want = value is None or value is False or isinstance(value, str), \
                "null or a RandAugment string such as 'rand-m9-mstd0.5-inc1'"
            if ok and value:
                try:
                    rand_augment(value)
                except ValueError as e:
                    raise TypeError(f"augment.auto_augment: {e}") from None
        else:  # random_resized_crop
            ok, want = value is None or isinstance(value, bool) or number(value) or pair(value), \
                "null, true, a number lo or [lo, hi]"
        if not ok:
            raise TypeError(f"augment.{key} must be {want}, got {value!r}")


def eval_transform(bundle: DataBundle, img_size: int | Sequence[int] | None = None,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   crop_pct: float | None = None, interpolation: str | None = None,
                   crop_mode: str = "center") -> Compose | PerSample:
    """Deterministic eval transform -> normalised images (C, *img_size).

    One-size bundles: (B, C, H, W) in [0, 1] -> Resize to img_size (if it differs) -> Normalize, or,
    with crop_pct, resize + centre crop (`ResizeCenterCrop`). Bundles kept at their own sizes: per image
    `photo_eval_transform` (shorter side to img_size / crop_pct, centre crop; crop_pct default 0.875,
    bicubic; crop_mode "squash" resizes both sides). mean / std: the normalisation (a checkpoint's);
    None uses the bundle's.
    """
    mean = tuple(bundle.mean) if mean is None else tuple(mean)
    std = tuple(bundle.std) if std is None else tuple(std)
    size = _target_size(bundle, img_size)
    if bundle.keep_original:
        return photo_eval_transform(size, mean, std, crop_pct or DEFAULT_CROP_PCT,
                                    interpolation or DEFAULT_INTERPOLATION, crop_mode)
    return model_input_transform(size, mean, std, crop_pct, interpolation, crop_mode)


def model_input_transform(img_size: int | Sequence[int], mean: Sequence[float], std: Sequence[float],
                          crop_pct: float | None = None, interpolation: str | None = None,
                          crop_mode: str = "center") -> Compose | PerSample:
    """Images in [0, 1] -> what a trained model takes: Resize to img_size -> Normalize with its statistics.

    crop_pct (a run's or checkpoint's, e.g. 0.875): resize the shorter side to img_size / crop_pct (both
    sides with crop_mode "squash") and keep the centre img_size instead (`ResizeCenterCrop`, bicubic
    unless ``interpolation``), per image
    (`PerSample`), so it takes one image (C, H, W) or (1, C, H, W) of any size, or a loader of them.
    crop_pct None keeps the plain resize (bilinear unless ``interpolation``) of runs trained that way.
    """
    if crop_pct is None:
        return Compose([Resize(_pair(img_size), interpolation=interpolation or "bilinear"), Normalize(mean, std)])
    return PerSample(Compose([ResizeCenterCrop(img_size, crop_pct, interpolation or DEFAULT_INTERPOLATION, crop_mode),
                              Normalize(mean, std)]))
