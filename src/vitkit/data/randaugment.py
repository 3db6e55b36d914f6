"""RandAugment on image tensors, with timm's ops, magnitude scales and config strings.

RandAugment (Cubuk et al. 2020, "RandAugment: Practical automated data augmentation with a reduced
search space", arXiv:1909.13719) applies N ops drawn uniformly (with replacement) from a fixed list,
all at one magnitude M; the paper's ImageNet setting is N=2, M=9. timm's implementation
(timm/data/auto_augment.py: rand_augment_transform), which DeiT trains with as
``rand-m9-mstd0.5-inc1``, adds: each chosen op applies with probability 0.5; the magnitude of each
application is drawn from N(M, mstd) clipped to [0, 10]; "inc1" uses ops whose severity increases
with the magnitude; signed ops (rotate, shear, translate, enhance) take a random sign. This module
follows timm's op list and level-to-argument maps, on float tensors (C, H, W) in [0, 1] instead of PIL
images, with every random draw from a torch.Generator (so the loader's per-sample seeding applies):

    ra = rand_augment("rand-m9-mstd0.5-inc1", fill=mean)  # DeiT
    ra = rand_augment("rand-m9-n2-p1")                    # the paper's N=2, M=9, every op applied

Differences from timm: pixel values stay float between ops (PIL rounds each op to uint8);
Posterize, Solarize, SolarizeAdd and Equalize compare and bin on the 0-255 levels as PIL does;
geometric ops sample with grid_sample (``interpolation``) and fill outside with ``fill``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .transforms import Transform, _check_interpolation

LEVEL_DENOM = 10.0  # magnitudes are on a 0-10 scale, as timm's _LEVEL_DENOM

RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
"""timm's _RAND_TRANSFORMS."""

RAND_INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
                       "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                       "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
"""timm's _RAND_INCREASING_TRANSFORMS ("inc1")."""


# ---------------------------------------------------------------------------- ops on one image (C, H, W) or a batch
def _luma(x: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) -> (..., H, W) grey level: ITU-R 601-2 luma for RGB (PIL's convert("L")), else the
    first channel."""
    if x.shape[-3] == 3:
        return 0.299 * x[..., 0, :, :] + 0.587 * x[..., 1, :, :] + 0.114 * x[..., 2, :, :]
    return x[..., 0, :, :]


def _levels(x: torch.Tensor) -> torch.Tensor:
    """Pixel values as integer 0-255 levels (float tensor)."""
    return (x * 255.0).round_().clamp_(0, 255)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ImageEnhance: degenerate + factor * (x - degenerate), clipped to [0, 1]."""
    return (degenerate + factor * (x - degenerate)).clamp_(0.0, 1.0)


# Every op takes one image (C, H, W) or a batch (B, C, H, W); an op argument is a number or, for a batch, a
# (B, 1, 1, 1) tensor of one value per image (`RandAugment.forward` applies each op to all its images at once).
def auto_contrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel to [0, 1] (PIL's ImageOps.autocontrast, cutoff 0); flat channels unchanged."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    flat = hi <= lo
    scale = torch.where(flat, torch.ones_like(hi), 1.0 / (hi - lo).clamp_min(1e-12))
    return torch.where(flat, x, ((x - lo) * scale).clamp_(0.0, 1.0))


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per channel on 0-255 levels (PIL's ImageOps.equalize algorithm)."""
    if x.dim() == 4:
        return torch.stack([equalize(im) for im in x])
    q = _levels(x).long()
    out = []
    for c in range(q.shape[0]):
        hist = torch.bincount(q[c].reshape(-1), minlength=256)
        nonzero = hist[hist > 0]
        step = int((nonzero.sum() - nonzero[-1]) // 255) if len(nonzero) > 1 else 0
        if step == 0:
            out.append(x[c])
            continue
        lut = (torch.cumsum(hist, 0) + step // 2) // step
        lut = torch.cat([lut.new_zeros(1), lut[:-1]]).clamp_(0, 255)
        out.append(lut[q[c]].to(x.dtype) / 255.0)
    return torch.stack(out)


def invert(x: torch.Tensor) -> torch.Tensor:
    return 1.0 - x


def posterize(x: torch.Tensor, bits) -> torch.Tensor:
    """Keep the top ``bits`` bits of each 0-255 level (0 bits: black; 8 or more: unchanged), as PIL's
    ImageOps.posterize."""
    b = torch.as_tensor(bits, dtype=torch.long, device=x.device)
    mask = torch.bitwise_left_shift(torch.full_like(b, 0xFF), 8 - b.clamp(0, 8)) & 0xFF
    return torch.where(b >= 8, x, (_levels(x).long() & mask).to(x.dtype) / 255.0)


def solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert the levels >= threshold (0-256), as PIL's ImageOps.solarize."""
    return torch.where(_levels(x) >= threshold, 1.0 - x, x)


def solarize_add(x: torch.Tensor, add: int, threshold: float = 128) -> torch.Tensor:
    """Add ``add`` levels to the levels below ``threshold``, clipped to 255 (timm's solarize_add)."""
    return torch.where(_levels(x) < threshold, (x + add / 255.0).clamp(max=1.0), x)


def color(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Saturation (PIL's ImageEnhance.Color): blend with the grey image; a no-op on one channel."""
    if x.shape[-3] != 3:
        return x
    return _blend(_luma(x).unsqueeze(-3), x, factor)


def contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ImageEnhance.Contrast: blend with the image's mean grey level (rounded to a 0-255 level)."""
    mean = torch.round(_luma(x).mean(dim=(-2, -1), keepdim=True) * 255.0) / 255.0
    return _blend(mean.unsqueeze(-3), x, factor)


def brightness(x: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ImageEnhance.Brightness: blend with black."""
    return _blend(torch.zeros((), dtype=x.dtype), x, factor)


def sharpness(x: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ImageEnhance.Sharpness: blend with the image smoothed by [[1,1,1],[1,5,1],[1,1,1]] / 13,
    whose one-pixel border is the original's."""
    c, h, w = x.shape[-3:]
    if h < 3 or w < 3:
        return x
    k = torch.ones(3, 3, dtype=x.dtype)
    k[1, 1] = 5.0
    k = (k / 13.0).expand(c, 1, 3, 3)
    xb = x.reshape(-1, c, h, w)
    smooth = xb.clone()
    smooth[..., 1:-1, 1:-1] = F.conv2d(xb, k, groups=c)
    return _blend(smooth.view(x.shape), x, factor)


def _theta(matrix: Sequence[float], h: int, w: int) -> torch.Tensor:
    """PIL's AFFINE matrix (a, b, c, d, e, f) -> grid_sample's (2, 3) theta (float64) for an H x W image."""
    a, b, c, d, e, f = (float(v) for v in matrix)
    # pixel u = (n + 1) W / 2 with n grid_sample's normalised coordinate (align_corners=False)
    lin = torch.tensor([[a, b * h / w], [d * w / h, e]], dtype=torch.float64)
    off = torch.tensor([(a * w / 2 + b * h / 2 + c - w / 2) * 2 / w, (d * w / 2 + e * h / 2 + f - h / 2) * 2 / h],
                       dtype=torch.float64)
    return torch.cat([lin, off.view(2, 1)], 1)


def warp(x: torch.Tensor, matrix, fill: torch.Tensor, interpolation: str = "bilinear") -> torch.Tensor:
    """Sample x (C, H, W) where PIL's Image.transform(AFFINE, matrix) would: output pixel coordinates
    (u, v) (origin at the top-left corner, y down) read the input at (a u + b v + c, d u + e v + f).
    A batch (B, C, H, W) takes one matrix per image (a list). Outside the image reads ``fill`` (C,);
    bicubic results are clamped to [0, 1]."""
    batch = x.dim() == 4
    xb = x if batch else x.unsqueeze(0)
    h, w = xb.shape[-2:]
    theta = torch.stack([_theta(m, h, w) for m in (matrix if batch else [matrix])]).to(x.dtype)
    grid = F.affine_grid(theta, list(xb.shape), align_corners=False)
    fill = fill.to(x.dtype).view(-1, 1, 1)
    y = F.grid_sample(xb - fill, grid, mode=interpolation, padding_mode="zeros",
                      align_corners=False) + fill  # zero padding of x - fill = fill outside
    y = y if batch else y[0]
    return y.clamp_(0.0, 1.0) if interpolation == "bicubic" else y


def _rotate_matrix(degrees: float, h: int, w: int) -> tuple:
    t = math.radians(degrees)
    cos, sin = math.cos(t), math.sin(t)
    cx, cy = w / 2.0, h / 2.0
    # input = R (output - centre) + centre, R = [[cos, -sin], [sin, cos]] (y down: counter-clockwise on screen)
    return (cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)


_MATRICES = {  # op name -> (its argument, H, W) -> PIL's AFFINE matrix
    "Rotate": _rotate_matrix,  # counter-clockwise by ``degrees`` about the centre (PIL's Image.rotate)
    "ShearX": lambda v, h, w: (1, v, 0, 0, 1, 0),
    "ShearY": lambda v, h, w: (1, 0, 0, v, 1, 0),
    "TranslateXRel": lambda v, h, w: (1, 0, v * w, 0, 1, 0),
    "TranslateYRel": lambda v, h, w: (1, 0, 0, 0, 1, v * h),
}


def _geometric(name: str):
    def op(x, v, fill, interpolation="bilinear"):
        h, w = x.shape[-2:]
        vs = torch.as_tensor(v, dtype=torch.float64).reshape(-1).tolist()
        matrices = [_MATRICES[name](vi, h, w) for vi in vs]
        if x.dim() == 4 and len(matrices) == 1:
            matrices *= x.shape[0]
        return warp(x, matrices if x.dim() == 4 else matrices[0], fill, interpolation)
    op.__name__ = op.__qualname__ = name
    return op


rotate, shear_x, shear_y = _geometric("Rotate"), _geometric("ShearX"), _geometric("ShearY")
translate_x_rel, translate_y_rel = _geometric("TranslateXRel"), _geometric("TranslateYRel")


# ---------------------------------------------------------------------------- magnitude -> op argument (timm's)
def _negate(v: float, generator) -> float:
    """timm's _randomly_negate: -v with probability 0.5."""
    return -v if float(torch.rand((), generator=generator)) > 0.5 else v


def _level_args(name: str, m: float, generator) -> tuple:
    level = m / LEVEL_DENOM
    if name in ("AutoContrast", "Equalize", "Invert"):
        return ()
    if name == "Rotate":
        return (_negate(level * 30.0, generator),)
    if name in ("ShearX", "ShearY"):
        return (_negate(level * 0.3, generator),)
    if name in ("TranslateXRel", "TranslateYRel"):
        return (_negate(level * 0.45, generator),)
    if name == "Posterize":
        return (int(level * 4),)
    if name == "PosterizeIncreasing":
        return (4 - int(level * 4),)
    if name == "Solarize":
        return (int(level * 256),)
    if name == "SolarizeIncreasing":
        return (256 - int(level * 256),)
    if name == "SolarizeAdd":
        return (int(level * 110),)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (level * 1.8 + 0.1,)
    if name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"):
        return (max(0.1, 1.0 + _negate(level * 0.9, generator)),)
    raise ValueError(f"unknown RandAugment op {name!r}")


_PIXEL_OPS = {"AutoContrast": auto_contrast, "Equalize": equalize, "Invert": invert,
              "Posterize": posterize, "PosterizeIncreasing": posterize,
              "Solarize": solarize, "SolarizeIncreasing": solarize, "SolarizeAdd": solarize_add,
              "Color": color, "ColorIncreasing": color, "Contrast": contrast, "ContrastIncreasing": contrast,
              "Brightness": brightness, "BrightnessIncreasing": brightness,
              "Sharpness": sharpness, "SharpnessIncreasing": sharpness}
_GEOMETRIC_OPS = {"Rotate": rotate, "ShearX": shear_x, "ShearY": shear_y,
                  "TranslateXRel": translate_x_rel, "TranslateYRel": translate_y_rel}


def apply_op(x: torch.Tensor, name: str, magnitude: float, fill=0.5, interpolation: str = "bilinear",
             generator: torch.Generator | None = None) -> torch.Tensor:
    """One RandAugment op on x (C, H, W) in [0, 1] at ``magnitude`` (0-10), its sign drawn from ``generator``."""
    return _apply(x, name, _level_args(name, magnitude, generator), fill, interpolation)


def _apply(x: torch.Tensor, name: str, args: tuple, fill, interpolation: str) -> torch.Tensor:
    """The op ``name`` with its arguments: numbers, or for a batch x (B, C, H, W) (B, 1, 1, 1) tensors."""
    if name in _GEOMETRIC_OPS:
        fill_t = torch.as_tensor(fill, dtype=torch.float32).reshape(-1)
        if fill_t.numel() not in (1, x.shape[-3]):
            raise ValueError(f"fill has {fill_t.numel()} values but the image has {x.shape[-3]} channels")
        return _GEOMETRIC_OPS[name](x, *args, fill_t.expand(x.shape[-3]), interpolation)
    return _PIXEL_OPS[name](x, *args)


class RandAugment(Transform):
    """RandAugment per image: (B, C, H, W) in [0, 1] -> same shape, each image its own ops and magnitudes.

    num_ops: ops per image, drawn uniformly with replacement from ``ops``; magnitude: M on the 0-10 scale;
    magnitude_std: each application draws N(M, std) (inf: U(0, M)), clipped to [0, magnitude_max];
    prob: probability that each drawn op applies (timm: 0.5; the paper: 1); fill: per-channel value
    outside the image for geometric ops (timm fills with the normalisation mean); interpolation:
    "bilinear" or "bicubic" for geometric ops. Every draw comes from the generator, in a fixed order.
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 9.0, magnitude_std: float = 0.0,
                 magnitude_max: float = LEVEL_DENOM, prob: float = 0.5, ops: Sequence[str] = RAND_OPS,
                 fill: float | Sequence[float] = 0.5, interpolation: str = "bilinear"):
        if num_ops < 0 or magnitude < 0 or magnitude_std < 0 or not 0 <= prob <= 1:
            raise ValueError(f"need num_ops >= 0, magnitude >= 0, magnitude_std >= 0, 0 <= prob <= 1; got "
                             f"{num_ops}, {magnitude}, {magnitude_std}, {prob}")
        unknown = [o for o in ops if o not in _PIXEL_OPS and o not in _GEOMETRIC_OPS]
        if unknown or not ops:
            raise ValueError(f"unknown RandAugment op(s) {unknown}; known: {sorted({**_PIXEL_OPS, **_GEOMETRIC_OPS})}")
        self.num_ops, self.magnitude, self.magnitude_std = int(num_ops), float(magnitude), float(magnitude_std)
        self.magnitude_max, self.prob, self.ops = float(magnitude_max), float(prob), tuple(ops)
        self.fill = float(fill) if isinstance(fill, (int, float)) else tuple(float(v) for v in fill)
        self.interpolation = _check_interpolation(interpolation)

    def _magnitude(self, generator) -> float:
        m = self.magnitude
        if self.magnitude_std == math.inf:
            m = float(torch.rand((), generator=generator, dtype=torch.float64)) * m
        elif self.magnitude_std > 0:
            m = m + self.magnitude_std * float(torch.randn((), generator=generator, dtype=torch.float64))
        return max(0.0, min(m, self.magnitude_max))

    def draw(self, generator: torch.Generator | None = None) -> list[tuple[str, tuple] | None]:
        """One image's ops in order: (name, op arguments), or None where the op's coin said skip."""
        plan = []
        for i in torch.randint(len(self.ops), (self.num_ops,), generator=generator).tolist():
            if self.prob < 1.0 and float(torch.rand((), generator=generator)) > self.prob:
                plan.append(None)
                continue
            name = self.ops[i]
            plan.append((name, _level_args(name, self._magnitude(generator), generator)))
        return plan

    def augment(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One image (C, H, W)."""
        for step in self.draw(generator):
            if step is not None:
                x = _apply(x, *step, self.fill, self.interpolation)
        return x

    def forward(self, x, generator):
        """The batch's draws image by image (the same as `augment` on each image in turn), then each op
        step applied to all the images that drew an op, grouped by op: a few batched calls instead of
        one small call per image and op."""
        plans = [self.draw(generator) for _ in range(x.shape[0])]
        out = x.clone()
        for j in range(self.num_ops):
            groups: dict[str, list[int]] = {}
            for i, plan in enumerate(plans):
                if plan[j] is not None:
                    groups.setdefault(plan[j][0], []).append(i)
            for name, idx in groups.items():
                columns = zip(*(plans[i][j][1] for i in idx))  # the op's k-th argument of every image
                args = tuple(_per_image(col, name, x.dtype) for col in columns)
                out[idx] = _apply(out[idx], name, args, self.fill, self.interpolation)
        return out


def _per_image(values: Sequence, name: str, dtype: torch.dtype) -> torch.Tensor:
    """One op argument per image -> a (B, 1, 1, 1) tensor: integers stay integers, pixel-op factors take
    the images' dtype (as a Python float does), geometric arguments float64 (as `_theta` reads them)."""
    if all(isinstance(v, int) for v in values):
        kind = torch.long
    else:
        kind = torch.float64 if name in _GEOMETRIC_OPS else dtype
    return torch.tensor(list(values), dtype=kind).view(-1, 1, 1, 1)


def rand_augment(spec: str, fill: float | Sequence[float] = 0.5, interpolation: str = "bilinear") -> RandAugment:
    """A `RandAugment` from a timm config string: "rand" then dash-separated keys:
    m<M> magnitude (default 10), n<N> ops per image (2), mstd<S> magnitude noise (0; > 100 means uniform),
    mmax<X> magnitude clip (10), inc<0|1> the increasing-severity ops (0), and vitkit's p<P> the
    probability each op applies (timm's 0.5; "p1" gives the paper's always-applied ops).
    DeiT: "rand-m9-mstd0.5-inc1"; the paper's ImageNet setting: "rand-m9-n2-p1".
    timm's "w" (weighted op choice) is not supported. Raises ValueError for anything else.
    """
    if not isinstance(spec, str) or spec.split("-")[0] != "rand":
        raise ValueError(f"auto_augment must be a RandAugment string such as 'rand-m9-mstd0.5-inc1', got {spec!r}")
    kw = dict(num_ops=2, magnitude=LEVEL_DENOM, magnitude_std=0.0, magnitude_max=LEVEL_DENOM, prob=0.5)
    ops = RAND_OPS
    for part in spec.split("-")[1:]:
        match = re.fullmatch(r"([a-z]+)(\d+(?:\.\d*)?)", part)
        if match is None:
            raise ValueError(f"cannot read {part!r} in auto_augment {spec!r}; keys: m, n, mstd, mmax, inc, p")
        key, val = match.group(1), float(match.group(2))
        if key == "m":
            kw["magnitude"] = val
        elif key == "n":
            kw["num_ops"] = int(val)
        elif key == "mstd":
            kw["magnitude_std"] = math.inf if val > 100 else val
        elif key == "mmax":
            kw["magnitude_max"] = val
        elif key == "inc":
            ops = RAND_INCREASING_OPS if val else RAND_OPS
        elif key == "p":
            kw["prob"] = val
        else:
            raise ValueError(f"unknown key {key!r} in auto_augment {spec!r}; keys: m, n, mstd, mmax, inc, p")
    return RandAugment(ops=ops, fill=fill, interpolation=interpolation, **kw)
