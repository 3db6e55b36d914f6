"""Photos of any size to a model's input: the ImageNet recipes of timm and DeiT, one image at a time.

Training crops a random box from each decoded original (not from a copy resized at decode time) and
resizes only that box to the model's size; evaluation resizes the shorter side to size / crop_pct and
keeps the centre. Both run per image (`PerSample`), so images of different sizes can be batched after.

    train = photo_train_transform(224, mean, std)           # DeiT: RRC(0.08-1), flip, rand-m9-mstd0.5-inc1,
                                                            #   Normalize, random erasing 0.25 (pixel)
    test = photo_eval_transform(224, mean, std)             # resize 256 (bicubic), centre crop 224, Normalize
    loader = make_loader(folder_dataset, 32, transform=train, num_workers=2)

Interpolation is bicubic by default: DeiT trains (``--train-interpolation bicubic``) and evaluates
(``transforms.Resize(size, interpolation=3)``) with it, and timm's ViT and DeiT pretrained configs name
it; a checkpoint that names another (its pretrained_cfg) should be given it. Resizing is antialiased,
as PIL's (what timm and DeiT decode with) and torchvision's tensor resize.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .randaugment import rand_augment
from .transforms import (Compose, Normalize, PerSample, RandomAffine, RandomErasing, RandomHorizontalFlip, Resize,
                         Transform, _check_interpolation, _pair, _uniform, crop_range, resize)

DEFAULT_CROP_PCT = 0.875
"""Eval crop fraction: timm's DEFAULT_CROP_PCT and DeiT's ``--eval-crop-ratio`` (resize 256, crop 224)."""

DEFAULT_INTERPOLATION = "bicubic"

PHOTO_AUGMENT_DEFAULTS = dict(random_resized_crop=(0.08, 1.0), hflip=0.5, rotate=0.0, translate=0.0, scale=None,
                              shear=0.0, auto_augment="rand-m9-mstd0.5-inc1", erase=0.25, erase_mode="pixel",
                              interpolation=DEFAULT_INTERPOLATION)
"""DeiT's training augmentation (Touvron et al. 2021, Table 9; facebookresearch/deit main.py defaults:
``--aa rand-m9-mstd0.5-inc1 --reprob 0.25 --remode pixel --train-interpolation bicubic``, timm's
RandomResizedCrop scale (0.08, 1), ratio (3/4, 4/3), flip 0.5). Mixup 0.8 / CutMix 1.0 / label smoothing
0.1 are batch-level and live in the task (`vitkit.tasks.Classify`), not here."""


def crop_box(h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float],
             generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random box in an (h, w) image, as torchvision's / timm's
    RandomResizedCrop.get_params: area ~ U(scale) of the image, aspect (w / h) log-uniform in ``ratio``,
    up to 10 tries for a box that fits, else the largest centred box whose aspect is within ``ratio``."""
    area = h * w
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * float(_uniform(1, scale[0], scale[1], generator))
        aspect = math.exp(float(_uniform(1, log_lo, log_hi, generator)))
        bw = int(round(math.sqrt(target * aspect)))
        bh = int(round(math.sqrt(target / aspect)))
        if 0 < bw <= w and 0 < bh <= h:
            top = int(torch.randint(0, h - bh + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - bw + 1, (1,), generator=generator))
            return top, left, bh, bw
    in_ratio = w / h
    if in_ratio < ratio[0]:
        bw, bh = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        bh, bw = h, int(round(h * ratio[1]))
    else:
        bw, bh = w, h
    return (h - bh) // 2, (w - bw) // 2, bh, bw


class RandomCropResize(Transform):
    """RandomResizedCrop from each image's own pixels: (B, C, H, W) -> (B, C, *size), one box per image.

    The box is `crop_box` (torchvision's / timm's sampling, in whole pixels); only the box is resized,
    antialiased, with `interpolation`, so a crop of a large photo keeps the detail the photo has. Meant
    to run per image (`PerSample`) on decoded originals of any size; pixel values in [0, 1].
    """

    def __init__(self, size: int | Sequence[int], scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), interpolation: str = DEFAULT_INTERPOLATION):
        self.size = _pair(size)
        self.scale, self.ratio = crop_range(scale, ratio)
        self.interpolation = _check_interpolation(interpolation)

    def forward(self, x, generator):
        h, w = x.shape[-2:]
        out = []
        for i in range(x.shape[0]):
            top, left, bh, bw = crop_box(h, w, self.scale, self.ratio, generator)
            out.append(resize(x[i:i + 1, :, top:top + bh, left:left + bw], self.size, self.interpolation))
        return torch.cat(out)


CROP_MODES = ("center", "squash")


def eval_resize_size(h: int, w: int, size: tuple[int, int], crop_pct: float,
                     crop_mode: str = "center") -> tuple[int, int]:
    """The (H, W) an (h, w) image is resized to before its centre crop, as timm's transforms_imagenet_eval:
    a square ``size`` S resizes the shorter side to floor(S / crop_pct), keeping the aspect (torchvision's
    Resize(int)); a non-square size, or crop_mode "squash", resizes to (floor(H / crop_pct), floor(W / crop_pct))
    whatever the image's aspect."""
    th, tw = size
    if th != tw or crop_mode == "squash":
        return math.floor(th / crop_pct), math.floor(tw / crop_pct)
    short = math.floor(th / crop_pct)
    if h <= w:
        return short, int(short * w / h)
    return int(short * h / w), short


class ResizeCenterCrop(Transform):
    """Evaluation preprocessing: resize (`eval_resize_size`: shorter side to size / crop_pct) then take the
    centre ``size`` box (torchvision's CenterCrop offsets): (B, C, H, W) -> (B, C, *size).

    crop_pct: the fraction of the resized image the crop keeps; 0.875 (timm's default, DeiT's
    --eval-crop-ratio) gives 256 -> 224. A checkpoint's own crop_pct (e.g. 0.9 for timm's augreg ViTs)
    should be given where it has one, and its crop_mode ("center": shorter side, keeping the aspect;
    "squash": both sides, as `PretrainedCfg.crop_mode`).
    """

    def __init__(self, size: int | Sequence[int], crop_pct: float = DEFAULT_CROP_PCT,
                 interpolation: str = DEFAULT_INTERPOLATION, crop_mode: str = "center"):
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        if crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode must be one of {list(CROP_MODES)}, got {crop_mode!r}")
        self.size = _pair(size)
        self.crop_pct = float(crop_pct)
        self.interpolation = _check_interpolation(interpolation)
        self.crop_mode = crop_mode

    def forward(self, x, generator):
        h, w = x.shape[-2:]
        rh, rw = eval_resize_size(h, w, self.size, self.crop_pct, self.crop_mode)
        y = resize(x, (rh, rw), self.interpolation)
        th, tw = self.size
        top, left = int(round((rh - th) / 2.0)), int(round((rw - tw) / 2.0))
        return y[..., top:top + th, left:left + tw]


def photo_train_transform(img_size: int | Sequence[int], mean: Sequence[float], std: Sequence[float],
                          random_resized_crop=(0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                          hflip: float = 0.5, rotate: float = 0.0, translate: float = 0.0, scale=None,
                          shear: float = 0.0, auto_augment: str | None = "rand-m9-mstd0.5-inc1",
                          erase: float = 0.25, erase_mode: str = "pixel",
                          interpolation: str = DEFAULT_INTERPOLATION) -> PerSample:
    """Per-image training transform for decoded originals of any size -> normalised (C, *img_size).

    Order (timm's transforms_imagenet_train): RandomCropResize from the original (``random_resized_crop``:
    (lo, hi) area fraction, a float lo for (lo, 1), True for (0.08, 1); None / False resizes the whole
    image instead) -> RandomAffine (if rotate/translate/scale/shear) -> flip (``hflip`` probability) ->
    RandAugment (``auto_augment``: a timm config string such as "rand-m9-mstd0.5-inc1", or None; geometric
    ops fill with ``mean``) -> Normalize(mean, std) -> RandomErasing (probability ``erase``, ``erase_mode``
    "pixel": N(0, 1) noise, or "const": 0, the mean). mean / std: the checkpoint's statistics when
    fine-tuning pretrained weights. The defaults are DeiT's (`PHOTO_AUGMENT_DEFAULTS`).
    """
    size = _pair(img_size)
    rrc = random_resized_crop
    steps: list[Transform] = []
    if rrc is None or rrc is False:
        steps.append(Resize(size, interpolation=interpolation))
    else:
        if rrc is True:
            rrc = (0.08, 1.0)
        lo_hi = (float(rrc), 1.0) if isinstance(rrc, (int, float)) else (float(rrc[0]), float(rrc[1]))
        steps.append(RandomCropResize(size, scale=lo_hi, ratio=ratio, interpolation=interpolation))
    if rotate or translate or scale is not None or shear:
        steps.append(RandomAffine(rotate=rotate, translate=translate, scale=scale, shear=shear))
    if hflip:
        steps.append(RandomHorizontalFlip(hflip))
    if auto_augment:
        steps.append(rand_augment(auto_augment, fill=mean, interpolation=interpolation))
    steps.append(Normalize(mean, std))
    if erase:
        steps.append(RandomErasing(p=erase, mode=erase_mode, value=0.0))
    return PerSample(Compose(steps))


def photo_eval_transform(img_size: int | Sequence[int], mean: Sequence[float], std: Sequence[float],
                         crop_pct: float = DEFAULT_CROP_PCT, interpolation: str = DEFAULT_INTERPOLATION,
                         crop_mode: str = "center") -> PerSample:
    """Per-image evaluation transform: `ResizeCenterCrop` (shorter side to size / crop_pct, centre crop) ->
    Normalize(mean, std). Give a checkpoint's own crop_pct / crop_mode / interpolation / mean / std
    (its `PretrainedCfg`) where it has them."""
    return PerSample(Compose([ResizeCenterCrop(img_size, crop_pct, interpolation, crop_mode), Normalize(mean, std)]))
