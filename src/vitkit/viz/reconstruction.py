"""MAE reconstructions as one pixel-exact grid (MAE paper Figs. 2-4): a column per sample, four rows

    1. the original image
    2. the encoder's input: masked patches grey
    3. the reconstruction with the visible patches pasted back (what MAE's figures show)
    4. the raw reconstruction (the decoder's prediction for every patch, visible ones included)

Images are un-normalised with the data's mean / std before display. For a model trained with
``norm_pix_loss`` the prediction is in per-patch normalised units; it is mapped back with each
patch's true mean and variance, as MAE's visualisation does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from ._figure import PathLike, to_display
from .images import image_grid

if TYPE_CHECKING:
    from pathlib import Path

    from ..tasks.mae import MAE

ROWS = ("original", "masked", "pasted", "raw")


@torch.no_grad()
def reconstruct(mae: MAE, images: torch.Tensor, noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Run ``mae`` (in eval mode, its mode given back) on normalised images (B, C, H, W).

    Returns, all (B, C, H, W) in the images' normalised units: "original", "masked" (masked patches
    zero), "pasted" (visible patches from the input, masked ones predicted), "raw" (every patch
    predicted); and "mask" (B, C, H, W), 1 on the pixels of masked patches.
    """
    was_training = mae.training
    mae.eval()
    try:
        _, pred, mask = mae(images, noise)
    finally:
        mae.train(was_training)
    grid = mae.grid_of(images)
    pred = pred.float()
    if mae.norm_pix_loss:  # back to pixels with each patch's own statistics (MAE's visualisation)
        t = mae.patchify(images).float()
        pred = pred * (t.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5 + t.mean(dim=-1, keepdim=True)
    raw = mae.unpatchify(pred, grid)
    pixel_mask = mae.unpatchify(mask[..., None].float().expand_as(pred).contiguous(), grid)  # (B, C, H, W)
    x = images.float()
    return {"original": x, "masked": x * (1 - pixel_mask), "pasted": x * (1 - pixel_mask) + raw * pixel_mask,
            "raw": raw, "mask": pixel_mask}


def plot_reconstruction(
    mae: MAE,
    images: torch.Tensor,
    out_png: PathLike,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    noise: torch.Tensor | None = None,
    grey: float = 0.5,
    padding: int = 2,
    pad_value: float = 1.0,
    scale: int = 1,
) -> Path:
    """Save the four-row reconstruction grid of normalised ``images`` (B, C, H, W) (C = 1 or 3) as a PNG.

    mean, std: the data normalisation, undone for display (``DataBundle.mean`` / ``.std``).
    noise: (B, N) masking noise (default: random); grey: the displayed value of masked pixels.
    The PNG is ``4 * (H + padding) + padding`` high and ``B * (W + padding) + padding`` wide, times
    ``scale`` (``vitkit.viz.make_grid``'s layout). Returns the path.
    """
    r = reconstruct(mae, images, noise)
    rows = {k: to_display(r[k], mean, std) for k in ROWS}
    rows["masked"] = torch.where(r["mask"].cpu().bool(), torch.full_like(rows["masked"], grey), rows["masked"])
    return image_grid(torch.cat([rows[k] for k in ROWS]), images.shape[0], out_png, padding=padding,
                      pad_value=pad_value, scale=scale)
