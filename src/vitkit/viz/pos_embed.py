"""Position-embedding similarity (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021, Fig. 7 centre).

For each patch position i, the cosine similarity of its learned embedding to every position j,

    S[i, j] = <e_i, e_j> / (|e_i| |e_j|),

drawn as a small (gh, gw) image; the small images are tiled on the (gh, gw) grid of positions i.
A well-trained ViT shows each tile brightest near its own position, with row/column structure.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ._figure import PathLike, new_figure, save_figure


def _grid(grid_size: int | tuple[int, int]) -> tuple[int, int]:
    return (grid_size, grid_size) if isinstance(grid_size, int) else (int(grid_size[0]), int(grid_size[1]))


def pos_embed_similarity(pos_embed: torch.Tensor) -> torch.Tensor:
    """pos_embed: (N, D) or (1, N, D) patch position embeddings -> (N, N) cosine similarities."""
    e = torch.as_tensor(pos_embed).detach().cpu().float()
    if e.ndim == 3 and e.shape[0] == 1:
        e = e[0]
    if e.ndim != 2:
        raise ValueError(f"pos_embed must be (N, D) or (1, N, D), got shape {tuple(e.shape)}")
    e = F.normalize(e, dim=-1)  # zero vectors stay zero (similarity 0), no NaN
    return e @ e.T


def similarity_mosaic(sim: torch.Tensor, grid_size: int | tuple[int, int]) -> np.ndarray:
    """(N, N) similarities -> one (gh * (gh + 1) - 1, gw * (gw + 1) - 1) array: tile (r, c) holds
    row r * gw + c of ``sim`` as a (gh, gw) image; the one-pixel gutters between tiles are NaN."""
    gh, gw = _grid(grid_size)
    tiles = sim.reshape(gh, gw, gh, gw).numpy()  # (tile row, tile col, y, x)
    out = np.full((gh * (gh + 1) - 1, gw * (gw + 1) - 1), np.nan, dtype=np.float32)
    for r in range(gh):
        for c in range(gw):
            y, x = r * (gh + 1), c * (gw + 1)
            out[y : y + gh, x : x + gw] = tiles[r, c]
    return out


def plot_pos_embed_similarity(pos_embed: torch.Tensor, grid_size: int | tuple[int, int], out_png: PathLike) -> Path:
    """Write the ViT paper's position-embedding similarity figure for (N, D) patch embeddings
    (no class token; N = gh * gw, raster order) and return the path."""
    gh, gw = _grid(grid_size)
    sim = pos_embed_similarity(pos_embed)
    n = sim.shape[0]
    if n != gh * gw:
        hint = " (drop the class/prefix token embeddings first)" if n > gh * gw else ""
        raise ValueError(f"pos_embed has {n} positions, grid {gh}x{gw} needs {gh * gw}{hint}")
    mosaic = similarity_mosaic(sim, (gh, gw))

    fig = new_figure((6.5, 6.5 * gh / gw + 0.5))
    ax = fig.subplots()
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    im = ax.imshow(mosaic, cmap=cmap, vmin=-1.0, vmax=1.0, interpolation="nearest")
    # one tick per tile, at its centre: the position whose similarities the tile shows
    ax.set_xticks([c * (gw + 1) + (gw - 1) / 2 for c in range(gw)], [str(c + 1) for c in range(gw)], fontsize=7)
    ax.set_yticks([r * (gh + 1) + (gh - 1) / 2 for r in range(gh)], [str(r + 1) for r in range(gh)], fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_xlabel("input patch column")
    ax.set_ylabel("input patch row")
    ax.set_title("position embedding similarity")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    return save_figure(fig, out_png)
