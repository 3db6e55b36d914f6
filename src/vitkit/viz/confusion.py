"""Confusion matrix: counts of (true class, predicted class) pairs, and its picture."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ._figure import PathLike, new_figure, save_figure


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C[i, j] = number of samples whose true class is i and predicted class is j.

    preds: (B,) predicted class indices, or (B, K) scores/logits (argmax is taken).
    labels: (B,) true class indices in [0, num_classes).
    Returns (K, K) int64 on the CPU; rows = true, columns = predicted.
    """
    preds, labels = torch.as_tensor(preds).detach().cpu(), torch.as_tensor(labels).detach().cpu()
    if preds.ndim == 2:
        preds = preds.argmax(dim=1)
    preds, labels = preds.reshape(-1).long(), labels.reshape(-1).long()
    if preds.shape != labels.shape:
        raise ValueError(f"{preds.numel()} predictions but {labels.numel()} labels")
    for name, t in (("preds", preds), ("labels", labels)):
        if t.numel() and (t.min() < 0 or t.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}), got range [{t.min()}, {t.max()}]")
    flat = labels * num_classes + preds  # row-major index of (true, predicted)
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def plot_confusion(
    cm: torch.Tensor | np.ndarray,
    classes: Sequence[str] | None,
    out_png: PathLike,
    normalize: bool = False,
) -> Path:
    """Draw the (K, K) matrix (rows = true, columns = predicted) with each cell's value written in.

    classes: K names for the ticks (None: 0 .. K-1).
    normalize: divide each row by its total, so cells read as the fraction of class i predicted
        as j (the diagonal is per-class recall); an empty row stays 0. Counts are written as
        integers, fractions with two decimals. Numbers are left out when K > 30 (unreadable).
    """
    m = torch.as_tensor(cm).detach().cpu().double().numpy()
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"cm must be square (K, K), got shape {m.shape}")
    k = m.shape[0]
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for a {k}x{k} matrix")
    if normalize:
        totals = m.sum(axis=1, keepdims=True)
        m = np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)

    side = min(max(4.0, 0.45 * k + 2.0), 20.0)
    fig = new_figure((side + 1.0, side))
    ax = fig.subplots()
    vmax = 1.0 if normalize else max(m.max(), 1.0)
    im = ax.imshow(m, cmap="Blues", vmin=0.0, vmax=vmax)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right" if max(map(len, names)) > 2 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix" + (" (row-normalised)" if normalize else ""))
    if k <= 30:
        fontsize = 10 if k <= 10 else 7
        for i in range(k):
            for j in range(k):
                v = m[i, j]
                text = f"{v:.2f}" if normalize else f"{int(round(v))}"
                color = "white" if v > 0.5 * vmax else "black"  # readable on dark and light cells
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize)
    return save_figure(fig, out_png)
