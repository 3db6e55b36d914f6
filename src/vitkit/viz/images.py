"""Pictures of images: a pixel-exact grid (samples, reconstructions) and rollout overlays."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ._figure import PathLike, hwc, new_figure, save_figure, to_display


def make_grid(images: torch.Tensor, nrow: int, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Tile (B, C, H, W) images, ``nrow`` per row, into one (C, rows * (H + p) + p, nrow * (W + p) + p)
    image with ``padding`` pixels of ``pad_value`` between and around the tiles (torchvision's layout)."""
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    b, c, h, w = images.shape
    ncol = min(nrow, b)
    rows = -(-b // ncol)  # ceil
    p = padding
    grid = images.new_full((c, rows * (h + p) + p, ncol * (w + p) + p), pad_value)
    for i in range(b):
        r, col = divmod(i, ncol)
        y, x = p + r * (h + p), p + col * (w + p)
        grid[:, y : y + h, x : x + w] = images[i]
    return grid


def image_grid(
    images: torch.Tensor,
    nrow: int,
    out_png: PathLike,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    padding: int = 2,
    pad_value: float = 1.0,
    scale: int = 1,
) -> Path:
    """Save (B, C, H, W) images (C = 1 or 3) as one grid image, ``nrow`` images a row, in the format
    the file name says (``.png``, pixel-exact; ``.jpg``, ``.webp``, ``.bmp``...).

    mean, std: undo x_norm = (x - mean) / std before saving; values are then clipped to [0, 1].
    scale: integer nearest-neighbour enlargement (28x28 digits are small on screen).
    The PNG is mode "L" for one channel, "RGB" for three. Returns the path.
    """
    out = Path(out_png)
    fmt = Image.registered_extensions().get(out.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell an image format from the name {out.name!r}: end it in .png (or .jpg, .webp)")
    x = to_display(images, mean, std)
    grid = make_grid(x, nrow, padding, pad_value)  # (C, Hg, Wg) in [0, 1]
    if scale != 1:
        if scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        grid = F.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    pixels = np.ascontiguousarray((grid * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy())  # (Hg, Wg, C)
    img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)  # uint8: "L" or "RGB"
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, format=fmt)
    return out


def plot_rollout(
    images: torch.Tensor,
    maps: torch.Tensor,
    out_png: PathLike,
    titles: Sequence[str] | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
) -> Path:
    """One row per sample: the image, its attention map, and the map laid over the image.

    images: (B, C, H, W), C = 1 or 3, un-normalised with mean/std if given.
    maps: (B, h, w) in [0, 1], e.g. from ``rollout_to_image``; resized bilinearly to (H, W) if
        (h, w) differs, so raw (B, gh, gw) patch maps work too.
    titles: B strings shown above each sample's image (e.g. "true 3 / pred 3").
    """
    x = to_display(images, mean, std)
    b, _, h, w = x.shape
    m = torch.as_tensor(maps).detach().cpu().float()
    if m.ndim != 3 or m.shape[0] != b:
        raise ValueError(f"maps must be (B={b}, h, w), got shape {tuple(m.shape)}")
    if m.shape[-2:] != (h, w):
        m = F.interpolate(m[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    if titles is not None and len(titles) != b:
        raise ValueError(f"{len(titles)} titles for {b} images")

    fig = new_figure((7.5, 2.6 * b))
    axes = fig.subplots(b, 3, squeeze=False)
    for i in range(b):
        img = hwc(x[i])
        gray = img.ndim == 2
        ax_img, ax_map, ax_ovl = axes[i]
        ax_img.imshow(img, cmap="gray" if gray else None, vmin=0.0, vmax=1.0)
        ax_map.imshow(m[i].numpy(), cmap=cmap, vmin=0.0, vmax=1.0)
        ax_ovl.imshow(img, cmap="gray" if gray else None, vmin=0.0, vmax=1.0)
        ax_ovl.imshow(m[i].numpy(), cmap=cmap, vmin=0.0, vmax=1.0, alpha=alpha)
        ax_img.set_title(titles[i] if titles is not None else "image", fontsize=9)
        ax_map.set_title("attention rollout", fontsize=9)
        ax_ovl.set_title("overlay", fontsize=9)
        for ax in (ax_img, ax_map, ax_ovl):
            ax.set_axis_off()
    return save_figure(fig, out_png)


def plot_errors(
    images: torch.Tensor,
    predicted: Sequence[str],
    true: Sequence[str],
    out_png: PathLike,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    ncol: int = 8,
    total: int | None = None,
) -> Path:
    """A grid of held-out images the model gets wrong, each titled "pred P / true T".

    images: (B, C, H, W), un-normalised with mean/std; predicted, true: B class names each.
    total: how many the model got wrong in all (the title says when the grid shows only some).
    """
    x = to_display(images, mean, std)
    b = x.shape[0]
    if len(predicted) != b or len(true) != b:
        raise ValueError(f"{len(predicted)} predictions and {len(true)} labels for {b} images")
    ncol = max(1, min(ncol, b))
    nrow = max(1, -(-b // ncol))
    fig = new_figure((1.3 * ncol, 1.5 * nrow + 0.4))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < b:
            img = hwc(x[i])
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0.0, vmax=1.0)
            ax.set_title(f"pred {predicted[i]}\ntrue {true[i]}", fontsize=8)
    shown = f"{b} of {total}" if total is not None and total > b else f"{b}"
    fig.suptitle(f"held-out images the model gets wrong ({shown})" if b else "no held-out image is wrong",
                 fontsize=10)
    return save_figure(fig, out_png)
