"""Principal components of the patch-embedding filters (Dosovitskiy et al. 2021, Fig. 7 left).

The patch embedding is a Conv2d with kernel = stride = P, weight (D, C, P, P): D linear filters
over a P x P patch. Flatten them to (D, C*P*P), centre, and take the top right-singular vectors
of the SVD, W - mean = U S V^T; each row of V^T reshaped to (C, P, P) is one basis function, the
ViT paper's "plausible basis functions for a low-dimensional representation of each patch".
"""
from __future__ import annotations

from pathlib import Path

import torch

from ._figure import PathLike, new_figure, save_figure


def patch_filter_components(weight: torch.Tensor, num_components: int = 28) -> torch.Tensor:
    """weight: (D, C, P, P) patch-embedding conv weight -> (k, C, P, P) principal components,
    strongest first, k = min(num_components, D, C*P*P); each has unit norm (sign arbitrary)."""
    w = torch.as_tensor(weight).detach().cpu().float()
    if w.ndim != 4:
        raise ValueError(f"weight must be (D, C, P, P), got shape {tuple(w.shape)}")
    d, c, ph, pw = w.shape
    flat = w.reshape(d, c * ph * pw)
    flat = flat - flat.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)  # vh: (min(D, CPP), CPP)
    k = min(num_components, vh.shape[0])
    return vh[:k].reshape(k, c, ph, pw)


def plot_patch_filters(weight: torch.Tensor, out_png: PathLike, num_components: int = 28, ncol: int = 7) -> Path:
    """Tile the top principal components of the (D, C, P, P) patch filters, each min-max scaled to
    [0, 1] on its own (C = 3: RGB, C = 1: gray; other C: the channel mean); return the path."""
    comps = patch_filter_components(weight, num_components)
    k, c = comps.shape[:2]
    if c not in (1, 3):
        comps = comps.mean(dim=1, keepdim=True)
    lo = comps.amin(dim=(1, 2, 3), keepdim=True)
    hi = comps.amax(dim=(1, 2, 3), keepdim=True)
    comps = (comps - lo) / (hi - lo).clamp_min(1e-12)
    ncol = max(1, min(ncol, k))
    nrow = -(-k // ncol)
    fig = new_figure((1.2 * ncol, 1.2 * nrow + 0.4))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < k:
            img = comps[i].permute(1, 2, 0).numpy()
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.suptitle("patch embedding filters: principal components")
    return save_figure(fig, out_png)
