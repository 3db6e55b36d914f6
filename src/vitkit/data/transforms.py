"""Batch image transforms on tensors (torchvision does not import here).

Every transform takes a float batch `x: (B, C, H, W)` (a single image (C, H, W) also works) and an
optional `torch.Generator`, draws its random parameters per sample in one call, and applies them to
the whole batch at once. Parameters are drawn on the CPU generator, then moved to `x.device`, so a
seeded generator gives the same augmentation on any device. Geometric transforms fill with 0.
"""
from __future__ import annotations

import abc

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    h, w = v
    return (int(h), int(w))


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None) -> torch.Tensor:
    """(n,) float64 CPU samples from U(lo, hi)."""
    return torch.rand(n, generator=generator, dtype=torch.float64) * (hi - lo) + lo


class Transform(abc.ABC):
    """Abstract base class: `t(x, generator=None)` with x (B, C, H, W) or (C, H, W); subclasses define `forward`."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim == 3:
            return self.forward(x.unsqueeze(0), generator).squeeze(0)
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects (B, C, H, W) or (C, H, W), got {tuple(x.shape)}")
        return self.forward(x, generator)

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The transform of a batch (B, C, H, W)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply transforms in order, passing the same generator to each. (B, C, H, W) -> whatever the last returns."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def forward(self, x, generator):
        for t in self.transforms:
            x = t.forward(x, generator)
        return x

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"


INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def _check_interpolation(interpolation: str) -> str:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {list(INTERPOLATIONS)}, got {interpolation!r}")
    return interpolation


def resize(x: torch.Tensor, size: tuple[int, int], interpolation: str = "bilinear",
           antialias: bool = True) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, *size), antialiased (as PIL and torchvision resize); a no-op at the same size.
    Bicubic overshoots at edges, so its result is clamped to [0, 1] (pixel values, before Normalize).
    "nearest" is PIL's NEAREST (torch's nearest-exact), never antialiased."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if interpolation == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest-exact")
    y = F.interpolate(x, size=tuple(size), mode=interpolation, align_corners=False, antialias=antialias)
    return y.clamp_(0.0, 1.0) if interpolation == "bicubic" else y


class Resize(Transform):
    """Antialiased resize (bilinear by default): (B, C, H, W) -> (B, C, *size). A no-op when the size already
    matches. interpolation "bicubic" clamps to [0, 1] (see `resize`)."""

    def __init__(self, size: int | Sequence[int], antialias: bool = True, interpolation: str = "bilinear"):
        self.size = _pair(size)
        self.antialias = antialias
        self.interpolation = _check_interpolation(interpolation)

    def forward(self, x, generator):
        return resize(x, self.size, self.interpolation, self.antialias)


class PerSample(Transform):
    """Marks ``transform`` as one that runs on each image on its own, before images are batched: the
    per-image stage for images of different sizes (photos kept at their own size until cropped).

    `make_loader` applies it to every item (C, H, W), in its worker processes when it has some, with a
    generator seeded from (seed, epoch, rank, batch, position in the batch), so the items come out the
    same whatever the number of workers. Called directly on a batch (B, C, H, W), it runs on each image
    in turn with the one generator and stacks the results.
    """

    def __init__(self, transform: Transform):
        self.transform = transform

    def forward(self, x, generator):
        return torch.stack([self.transform(x[i], generator=generator) for i in range(x.shape[0])])

    def __repr__(self) -> str:
        return f"PerSample({self.transform!r})"


class Normalize(Transform):
    """(x - mean) / std per channel: (B, C, H, W) -> (B, C, H, W). mean/std have C entries (or one)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    def forward(self, x, generator):
        if len(self.mean) not in (1, x.shape[1]):
            raise ValueError(f"Normalize has {len(self.mean)} channel statistics but the batch has {x.shape[1]} channels")
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std


def _warp(x: torch.Tensor, theta: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Sample x (B, C, H, W) at `theta` (B, 2, 3), which maps output to input normalised coordinates.

    One `affine_grid` + one `grid_sample` (bilinear, zero fill, align_corners=False) for the batch.
    """
    b, c = x.shape[:2]
    out_h, out_w = size if size is not None else x.shape[-2:]
    grid = F.affine_grid(theta.to(x.dtype), [b, c, out_h, out_w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def affine(x: torch.Tensor, angle=0.0, translate=(0.0, 0.0), scale=1.0, shear=0.0) -> torch.Tensor:
    """Affine warp about the image centre, per sample: x (B, C, H, W) -> (B, C, H, W), fill 0.

    angle: degrees, counter-clockwise as displayed; translate: (tx, ty) in pixels (+x right,
    +y down), moves the content; scale: zoom factor (> 1 enlarges); shear: degrees along x.
    Each argument is a float or a (B,) tensor (translate: a pair of those or a (B, 2) tensor).
    The image is transformed as output = T(R(angle) Sh(shear) S(scale) input), in pixel units,
    so rotations stay rigid on non-square images.
    """
    b, _, h, w = x.shape

    def per_sample(v) -> torch.Tensor:
        return torch.as_tensor(v, dtype=torch.float64).reshape(-1).expand(b).cpu()

    if isinstance(translate, torch.Tensor) and translate.ndim == 2:  # (B, 2)
        t = translate.to(torch.float64).cpu()
    else:
        tx, ty = translate
        t = torch.stack([per_sample(tx), per_sample(ty)], -1)  # (B, 2)
    a = torch.deg2rad(per_sample(angle))
    s = per_sample(scale)
    sh = torch.tan(torch.deg2rad(per_sample(shear)))
    cos, sin = torch.cos(a), torch.sin(a)
    # Forward map in centred pixel coordinates (x right, y down): M = R @ Sh * s.
    # R (counter-clockwise on screen) = [[cos, sin], [-sin, cos]]; Sh = [[1, sh], [0, 1]].
    m = torch.stack([torch.stack([cos, cos * sh + sin], -1),
                     torch.stack([-sin, -sin * sh + cos], -1)], -2) * s.view(b, 1, 1)  # (B, 2, 2)
    det = (m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]).view(b, 1, 1)
    m_inv = torch.stack([torch.stack([m[:, 1, 1], -m[:, 0, 1]], -1),
                         torch.stack([-m[:, 1, 0], m[:, 0, 0]], -1)], -2) / det  # closed-form 2x2 inverse
    # Normalised -> pixel: p = A n with A = diag(W/2, H/2). Inverse map: n_in = A^-1 M^-1 (A n_out - t).
    A = torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64)
    lin = m_inv * A.view(1, 1, 2) / A.view(1, 2, 1)  # A^-1 M^-1 A
    off = -(m_inv @ t.unsqueeze(-1)).squeeze(-1) / A  # -A^-1 M^-1 t
    theta = torch.cat([lin, off.unsqueeze(-1)], dim=-1)  # (B, 2, 3)
    return _warp(x, theta.to(x.device))


class RandomAffine(Transform):
    """Random rotation, translation, scale and shear per sample: (B, C, H, W) -> (B, C, H, W), fill 0.

    rotate: angle ~ U(-rotate, rotate) degrees; translate: shift ~ U(-t, t) * (W, H) pixels per axis;
    scale: zoom ~ U(lo, hi) (None = 1); shear: x-shear ~ U(-shear, shear) degrees.
    One affine_grid + grid_sample per batch (see `affine`).
    """

    def __init__(self, rotate: float = 0.0, translate: float = 0.0,
                 scale: tuple[float, float] | None = None, shear: float = 0.0):
        if rotate < 0 or shear < 0 or not 0 <= translate <= 1:
            raise ValueError(f"need rotate >= 0, shear >= 0, 0 <= translate <= 1; got {rotate}, {shear}, {translate}")
        if scale is not None and not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi, got {scale}")
        self.rotate, self.translate, self.shear = float(rotate), float(translate), float(shear)
        self.scale = None if scale is None else (float(scale[0]), float(scale[1]))

    def forward(self, x, generator):
        b, _, h, w = x.shape
        angle = _uniform(b, -self.rotate, self.rotate, generator)
        tx = _uniform(b, -self.translate, self.translate, generator) * w
        ty = _uniform(b, -self.translate, self.translate, generator) * h
        scale = _uniform(b, *self.scale, generator) if self.scale else torch.ones(b, dtype=torch.float64)
        shear = _uniform(b, -self.shear, self.shear, generator)
        return affine(x, angle, torch.stack([tx, ty], -1), scale, shear)


def crop_range(scale: Sequence[float], ratio: Sequence[float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """A random resized crop's area range (fractions of the image) and aspect-ratio range (w/h), checked."""
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {ratio}")
    return (float(scale[0]), float(scale[1])), (float(ratio[0]), float(ratio[1]))


class RandomResizedCrop(Transform):
    """Crop a random box per sample and resize it to `size`: (B, C, H, W) -> (B, C, *size).

    Box area ~ U(scale) of the image, aspect ratio (w/h, in pixels) log-uniform in `ratio`; sides
    too long for the image are clipped to it; position uniform. One affine_grid + grid_sample
    (bilinear, not antialiased: strong downscaling may alias).
    """

    def __init__(self, size: int | Sequence[int], scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        self.size = _pair(size)
        self.scale, self.ratio = crop_range(scale, ratio)

    def forward(self, x, generator):
        b, _, h, w = x.shape
        area = _uniform(b, *self.scale, generator)
        r = torch.exp(_uniform(b, math.log(self.ratio[0]), math.log(self.ratio[1]), generator))
        # Box sides as fractions of the image: fw * fh = area, (fw * W) / (fh * H) = r.
        fw = torch.sqrt(area * r * h / w).clamp(max=1.0)
        fh = torch.sqrt(area * w / (r * h)).clamp(max=1.0)
        # Centre in normalised coordinates, so the box stays inside [-1, 1].
        cx = (torch.rand(b, generator=generator, dtype=torch.float64) * 2 - 1) * (1 - fw)
        cy = (torch.rand(b, generator=generator, dtype=torch.float64) * 2 - 1) * (1 - fh)
        zero = torch.zeros(b, dtype=torch.float64)
        theta = torch.stack([torch.stack([fw, zero, cx], -1), torch.stack([zero, fh, cy], -1)], -2)
        return _warp(x, theta.to(x.device), self.size)


class RandomHorizontalFlip(Transform):
    """Mirror left-right each sample with probability p: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, p: float = 0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, x, generator):
        flip = (torch.rand(x.shape[0], generator=generator) < self.p).to(x.device).view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(-1), x)


class RandomErasing(Transform):
    """Fill one random box per sample with `value`, with probability p: (B, C, H, W) -> (B, C, H, W).

    Box area ~ U(scale) of the image, aspect ratio log-uniform in `ratio` (clipped to the image);
    value: a float or one per channel (use the dataset mean before Normalize to erase to 0 after).
    mode: "const" fills with `value`; "pixel" fills every erased pixel and channel with N(0, 1) noise
    drawn from the generator, as timm's RandomErasing(mode="pixel") that DeiT trains with (`--remode
    pixel`): use it after Normalize, where N(0, 1) is the data's own spread.
    """

    MODES = ("const", "pixel")

    def __init__(self, p: float = 0.5, scale: tuple[float, float] = (0.02, 0.33),
                 ratio: tuple[float, float] = (0.3, 3.3), value: float | Sequence[float] = 0.0,
                 mode: str = "const"):
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {scale}")
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {list(self.MODES)}, got {mode!r}")
        self.p = float(p)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.value = float(value) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
        self.mode = mode

    def forward(self, x, generator):
        b, c, h, w = x.shape
        apply = torch.rand(b, generator=generator) < self.p
        area = _uniform(b, *self.scale, generator) * h * w
        r = torch.exp(_uniform(b, math.log(self.ratio[0]), math.log(self.ratio[1]), generator))
        eh = torch.sqrt(area / r).round().clamp(1, h).long()
        ew = torch.sqrt(area * r).round().clamp(1, w).long()
        y0 = (torch.rand(b, generator=generator, dtype=torch.float64) * (h - eh + 1)).long()
        x0 = (torch.rand(b, generator=generator, dtype=torch.float64) * (w - ew + 1)).long()
        rows = torch.arange(h).view(1, h)
        cols = torch.arange(w).view(1, w)
        in_rows = (rows >= y0.view(b, 1)) & (rows < (y0 + eh).view(b, 1))  # (B, H)
        in_cols = (cols >= x0.view(b, 1)) & (cols < (x0 + ew).view(b, 1))  # (B, W)
        mask = (in_rows[:, :, None] & in_cols[:, None, :] & apply.view(b, 1, 1)).to(x.device)  # (B, H, W)
        if self.mode == "pixel":
            if not bool(apply.any()):
                return x
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
            return torch.where(mask.unsqueeze(1), noise, x)
        value = torch.as_tensor(self.value, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
        if value.shape[1] not in (1, c):
            raise ValueError(f"RandomErasing has {value.shape[1]} fill values but the batch has {c} channels")
        return torch.where(mask.unsqueeze(1), value, x)


def _grayscale_mean(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, 1, 1): each image's mean grey level (ITU-R 601 luma for RGB, else channel mean)."""
    if x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    return x.mean((1, 2, 3), keepdim=True)


class RandomIntensityJitter(Transform):
    """Random brightness then contrast per sample, each sample jittered with probability p: (B, C, H, W) -> same.

    As torchvision's ColorJitter (brightness, contrast) for pixel values in [0, 1], in a fixed order:
        brightness: x <- clamp(b x),                    b ~ U(max(0, 1 - brightness), 1 + brightness)
        contrast:   x <- clamp(c x + (1 - c) mean(x)),  c ~ U(max(0, 1 - contrast), 1 + contrast)
    where mean(x) is the image's mean grey level (computed after the brightness step). `clamp`:
    the (lo, hi) range of valid pixel values (None: no clamping, e.g. on normalised batches, where
    the multiplicative brightness then scales about 0, the mean, not about black). Samples not
    chosen (probability 1 - p) are returned unchanged, bit for bit.
    """

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, p: float = 0.8,
                 clamp: tuple[float, float] | None = (0.0, 1.0)):
        if brightness < 0 or contrast < 0:
            raise ValueError(f"brightness and contrast must be >= 0, got {brightness}, {contrast}")
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if clamp is not None and not clamp[0] < clamp[1]:
            raise ValueError(f"clamp must be (lo, hi) with lo < hi, or None; got {clamp}")
        self.brightness, self.contrast, self.p = float(brightness), float(contrast), float(p)
        self.clamp = None if clamp is None else (float(clamp[0]), float(clamp[1]))

    def forward(self, x, generator):
        b = x.shape[0]
        apply = torch.rand(b, generator=generator) < self.p
        bright = _uniform(b, max(0.0, 1 - self.brightness), 1 + self.brightness, generator)
        contrast = _uniform(b, max(0.0, 1 - self.contrast), 1 + self.contrast, generator)
        view = (b, 1, 1, 1)
        bright = bright.to(device=x.device, dtype=x.dtype).view(view)
        contrast = contrast.to(device=x.device, dtype=x.dtype).view(view)
        y = self._clamp(x * bright)
        y = self._clamp(contrast * y + (1 - contrast) * _grayscale_mean(y))
        return torch.where(apply.to(x.device).view(view), y, x)

    def _clamp(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.clamp is None else x.clamp(*self.clamp)


def gaussian_kernel1d(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """(B,) standard deviations in pixels -> (B, size) normalised 1-D Gaussian kernels, size odd.

    g_i(t) = exp(-t^2 / (2 sigma_i^2)) / sum_t exp(-t^2 / (2 sigma_i^2)),  t = -(size // 2) .. size // 2.
    sigma = 0 gives the identity kernel (1 at the centre).
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")
    t = torch.arange(size, dtype=torch.float64) - size // 2
    s = sigma.to(torch.float64).view(-1, 1)
    logits = -(t.view(1, -1) ** 2) / (2 * s.clamp(min=1e-12) ** 2)
    return torch.softmax(logits, dim=-1)  # = exp(.) / sum exp(.), safe for tiny sigma


class RandomGaussianBlur(Transform):
    """Gaussian blur with sigma ~ U(sigma) per sample, each sample blurred with probability p: (B, C, H, W) -> same.

    Separable: one depthwise (grouped) conv along H, one along W, for the whole batch; borders
    are reflected, as torchvision's GaussianBlur. kernel_size: odd, default 2 * ceil(3 * sigma_hi) + 1
    (covers +-3 sigma), shrunk to fit the image. Samples not chosen are returned unchanged.
    """

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0), p: float = 0.5, kernel_size: int | None = None):
        if not 0 < sigma[0] <= sigma[1]:
            raise ValueError(f"sigma must be (lo, hi) with 0 < lo <= hi, got {sigma}")
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if kernel_size is not None and (kernel_size < 1 or kernel_size % 2 == 0):
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.sigma = (float(sigma[0]), float(sigma[1]))
        self.p = float(p)
        self.kernel_size = kernel_size

    def forward(self, x, generator):
        b, c, h, w = x.shape
        apply = torch.rand(b, generator=generator) < self.p
        sigma = torch.where(apply, _uniform(b, *self.sigma, generator), torch.zeros(b, dtype=torch.float64))
        k = self.kernel_size or 2 * math.ceil(3 * self.sigma[1]) + 1
        k = min(k, 2 * ((min(h, w) - 1) // 2) + 1)  # reflect padding needs k // 2 < side
        if k == 1:
            return x
        y = gaussian_blur(x, sigma, k)
        return torch.where(apply.to(x.device).view(b, 1, 1, 1), y, x)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, k: int) -> torch.Tensor:
    """Blur each sample of x (B, C, H, W) with its own Gaussian, sigma (B,) pixels, kernel size k (odd).

    Separable: one depthwise (grouped) conv along H, one along W, for the whole batch; borders are
    reflected, so k // 2 must be < min(H, W).
    """
    b, c, h, w = x.shape
    g = gaussian_kernel1d(sigma, k).to(device=x.device, dtype=x.dtype)  # (B, k)
    g = g.repeat_interleave(c, dim=0)  # (B*C, k): one kernel per (sample, channel) group
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (0, 0, k // 2, k // 2), mode="reflect"), g.view(b * c, 1, k, 1), groups=b * c)
    y = F.conv2d(F.pad(y, (k // 2, k // 2, 0, 0), mode="reflect"), g.view(b * c, 1, 1, k), groups=b * c)
    return y.view(b, c, h, w)


class RandomElastic(Transform):
    """Elastic distortion (Simard, Steinkraus & Platt 2003, Sec. 2): (B, C, H, W) -> same, fill 0.

    Per sample and axis a displacement field u(x) ~ U(-1, 1) i.i.d. per pixel is smoothed by a Gaussian
    of std `sigma` pixels and scaled by `alpha` pixels: d = alpha * (G_sigma * u), and
    output(x) = input(x + d(x)) (bilinear). Simard's values for 28x28 digits are sigma 4, alpha 34
    (displacements of ~1.4 px rms that vary smoothly across the digit: a different hand, not a
    different pose, which RandomAffine covers). Each sample is distorted with probability p.
    """

    def __init__(self, alpha: float = 34.0, sigma: float = 4.0, p: float = 1.0):
        if alpha < 0 or sigma <= 0 or not 0 <= p <= 1:
            raise ValueError(f"need alpha >= 0, sigma > 0, 0 <= p <= 1; got {alpha}, {sigma}, {p}")
        self.alpha, self.sigma, self.p = float(alpha), float(sigma), float(p)

    def forward(self, x, generator):
        b, c, h, w = x.shape
        apply = (torch.rand(b, generator=generator) < self.p).float()
        u = torch.rand(b, 2, h, w, generator=generator) * 2 - 1  # (B, [dx, dy], H, W), float32 on the CPU
        k = min(2 * math.ceil(3 * self.sigma) + 1, 2 * ((min(h, w) - 1) // 2) + 1)
        d = gaussian_blur(u, torch.full((b,), self.sigma), k) * (self.alpha * apply.view(b, 1, 1, 1))
        # Pixel displacements -> normalised coordinates (align_corners=False: 2 / side per pixel).
        d = d * torch.tensor([2.0 / w, 2.0 / h]).view(1, 2, 1, 1)
        eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(b, 2, 3)
        grid = F.affine_grid(eye, [b, c, h, w], align_corners=False) + d.permute(0, 2, 3, 1)
        return F.grid_sample(x, grid.to(device=x.device, dtype=x.dtype), mode="bilinear",
                             padding_mode="zeros", align_corners=False)
