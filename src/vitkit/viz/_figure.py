"""Shared plumbing for the plots: an Agg figure without pyplot, saving, and image un-normalisation.

Figures are built as ``matplotlib.figure.Figure`` with a ``FigureCanvasAgg`` attached, so no
pyplot state machine and no global backend are touched (safe in tests, threads and headless runs).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

PathLike = str | Path


def new_figure(figsize: tuple[float, float], dpi: int = 100):
    """A pyplot-free figure drawn by the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, out_png: PathLike) -> Path:
    """Write ``fig`` as a PNG (parent folders created), release its artists, return the path."""
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, format="png", bbox_inches="tight")
    finally:
        fig.clear()  # no pyplot registry to close from; dropping the artists frees the memory
    return out


def _per_channel(v: float | Sequence[float] | torch.Tensor, c: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(c)
    if t.numel() != c:
        raise ValueError(f"{name} has {t.numel()} values, expected 1 or {c} (one per channel)")
    return t.view(1, c, 1, 1)


def to_display(
    images: torch.Tensor,
    mean: float | Sequence[float] | torch.Tensor | None = None,
    std: float | Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Images ready to show: float32 in [0, 1] on the CPU.

    images: (B, C, H, W) with C in {1, 3}, or (C, H, W) for one image; uint8 is scaled by 1/255.
    mean, std: the normalisation the images went through (x_norm = (x - mean) / std), undone here
        as x = x_norm * std + mean, per channel. Values outside [0, 1] are clipped.
    Returns (B, C, H, W).
    """
    x = torch.as_tensor(images).detach().cpu()
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    c = x.shape[1]
    if c not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {c} (shape {tuple(x.shape)})")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if std is not None:
        x = x * _per_channel(std, c, "std")
    if mean is not None:
        x = x + _per_channel(mean, c, "mean")
    return x.clamp(0.0, 1.0)


def hwc(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> numpy (H, W) for one channel or (H, W, 3), as imshow wants it."""
    a = image.permute(1, 2, 0).numpy()
    return a[..., 0] if a.shape[-1] == 1 else a
