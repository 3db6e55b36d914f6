"""The pictures of a finished classification run: curves, confusion matrix, attention rollout,
position-embedding similarity and patch-embedding filters (ViT paper Fig. 6-7)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from .confusion import confusion_matrix, plot_confusion
from .curves import plot_curves
from .filters import plot_patch_filters
from .images import plot_rollout
from .pos_embed import plot_pos_embed_similarity
from .rollout import attention_rollout, rollout_to_image


def classification_pictures(out_dir: str | Path, model: torch.nn.Module, logits: torch.Tensor,
                            labels: torch.Tensor, images: torch.Tensor, classes: Sequence[str],
                            mean: Sequence[float], std: Sequence[float],
                            metrics_jsonl: str | Path | None = None) -> dict[str, Path]:
    """Write the run's PNGs into ``out_dir``; returns {name: path}.

    logits (N, K) and labels (N,) over the test split; images (n, C, H, W): a few normalised test
    images for the attention rollout (models with ``forward_intermediates(return_attention=True)``).
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    if metrics_jsonl is not None and Path(metrics_jsonl).is_file():
        try:
            paths["curves"] = plot_curves(metrics_jsonl, out / "curves.png")
        except ValueError:
            pass  # a log with no usable line yet
    cm = confusion_matrix(logits.argmax(1), labels, len(classes))
    paths["confusion"] = plot_confusion(cm, list(classes), out / "confusion.png")
    attns = _rollout_maps(model, images)
    if attns is not None:
        with torch.no_grad():
            probs = model(images).softmax(-1)
        maps = attention_rollout(attns, model.num_prefix_tokens)
        maps = rollout_to_image(maps, model.grid_size, tuple(images.shape[-2:]))
        titles = [f"pred {classes[i]} ({p:.0%})" for p, i in zip(*probs.max(-1))]
        paths["rollout"] = plot_rollout(images, maps, out / "rollout.png", titles=titles, mean=mean, std=std)
    table = _patch_pos_table(model)
    if table is not None:
        paths["pos_embed"] = plot_pos_embed_similarity(table, model.grid_size, out / "pos_embed.png")
    proj = getattr(getattr(model, "patch_embed", None), "proj", None)
    if proj is not None and proj.weight.shape[-1] > 1:
        k = min(28, proj.weight[0].numel(), proj.weight.shape[0])
        paths["patch_filters"] = plot_patch_filters(proj.weight.detach(), out / "patch_filters.png", k)
    return paths


def _rollout_maps(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor] | None:
    """Every block's attention (B, heads, N, N) over the same N = prefix + patch tokens, or None where the
    rollout does not apply: no patch grid (Visual Transformer's tokens are not patches), no attention maps,
    or maps over different token sets (ConViT's GPSA blocks attend before the class token joins)."""
    grid, prefix = getattr(model, "grid_size", None), getattr(model, "num_prefix_tokens", None)
    if not hasattr(model, "forward_intermediates") or grid is None or prefix is None:
        return None
    model.eval()
    with torch.no_grad():
        attns = model.forward_intermediates(images, return_attention=True).get("attentions")
    n = prefix + grid[0] * grid[1]
    if not attns or any(a.ndim != 4 or a.shape[-2:] != (n, n) for a in attns):
        return None
    return attns


def _patch_pos_table(model: torch.nn.Module) -> torch.Tensor | None:
    """The learned (or fixed) patch position table (N, D) of a model with an input embedding: the
    table's own prefix rows (class / distillation tokens) cut, which need not be the model's (register
    tokens have no position; ConViT's table has no class token)."""
    pe = getattr(model, "pos_embed", None)
    grid = getattr(model, "grid_size", None)
    if pe is None or not hasattr(pe, "table") or grid is None:
        return None
    with torch.no_grad():
        return pe.table(grid)[0, getattr(pe, "num_prefix_tokens", 0):].detach()
