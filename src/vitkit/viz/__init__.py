"""Pictures of what a ViT learned and how training went.

- ``attention_rollout`` / ``rollout_to_image``: Abnar & Zuidema 2020 attention flow maps.
- ``plot_rollout``: image | map | overlay rows.
- ``pos_embed_similarity`` / ``plot_pos_embed_similarity``: ViT paper Fig. 7 (centre).
- ``patch_filter_components`` / ``plot_patch_filters``: ViT paper Fig. 7 (left).
- ``plot_curves``: loss and accuracy from a metrics JSONL log.
- ``confusion_matrix`` / ``plot_confusion``.
- ``image_grid`` / ``make_grid``: pixel-exact sample and reconstruction grids.
- ``reconstruct`` / ``plot_reconstruction``: MAE original / masked / reconstruction rows.

Plots draw on a pyplot-free Agg figure (no global backend is chosen), create the output's
parent folder, and return the PNG's path.
"""
from .confusion import confusion_matrix, plot_confusion
from .curves import plot_curves, read_metrics
from .filters import patch_filter_components, plot_patch_filters
from .images import image_grid, make_grid, plot_rollout
from .pos_embed import plot_pos_embed_similarity, pos_embed_similarity
from .reconstruction import plot_reconstruction, reconstruct
from .rollout import attention_rollout, discard_lowest, fuse_heads, rollout_to_image

__all__ = [
    "attention_rollout",
    "confusion_matrix",
    "discard_lowest",
    "fuse_heads",
    "image_grid",
    "plot_reconstruction",
    "reconstruct",
    "make_grid",
    "patch_filter_components",
    "plot_confusion",
    "plot_curves",
    "plot_patch_filters",
    "plot_pos_embed_similarity",
    "plot_rollout",
    "pos_embed_similarity",
    "read_metrics",
    "rollout_to_image",
]
