"""Position information for patch tokens (ViT Sec. 3.1 and Appendix D.4).

Every additive embedding covers ``num_prefix_tokens`` prefix tokens (class / distillation) followed
by the ``gh * gw`` patch tokens in raster order, and is called as ``pe(x, grid) -> x + table``.
``RelativePositionBias`` is not added to tokens: it returns a per-head bias for the attention logits.
2D layouts put the x (column) code in the first half of D and the y (row) code in the second, as MAE.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resample_pos_embed(pos_embed: torch.Tensor, new_size: tuple[int, int],
                       old_size: tuple[int, int] | None = None, num_prefix_tokens: int = 1,
                       mode: str = "bicubic", antialias: bool = False) -> torch.Tensor:
    """2D-interpolate the patch part of a learned table to a new grid; prefix tokens are kept apart.

    pos_embed: (1, num_prefix_tokens + gh*gw, D) -> (1, num_prefix_tokens + gh'*gw', D).
    ``old_size`` defaults to a square grid. Same size returns the input unchanged. The default
    (bicubic, align_corners=False, no antialias) is what HF ``interpolate_pos_encoding`` does.
    """
    new_size = tuple(new_size)
    n = pos_embed.shape[1] - num_prefix_tokens
    if old_size is None:
        side = int(round(n ** 0.5))
        if side * side != n:
            raise ValueError(f"cannot infer a square grid from {n} patch positions; pass old_size")
        old_size = (side, side)
    old_size = tuple(old_size)
    if old_size[0] * old_size[1] != n:
        raise ValueError(f"old_size {old_size} does not match {n} patch positions in the table")
    if new_size == old_size:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = pos_embed.shape[-1]
    grid = grid.reshape(1, old_size[0], old_size[1], dim).permute(0, 3, 1, 2)  # (1, D, gh, gw)
    grid = F.interpolate(grid.float(), size=new_size, mode=mode, antialias=antialias,
                         align_corners=False if mode in ("bilinear", "bicubic") else None)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_size[0] * new_size[1], dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def sincos_1d(pos: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoids: ``[sin(p * w_k), cos(p * w_k)]``, ``w_k = T^(-k / (dim/2))``. (M,) -> (M, dim)."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = 1.0 / temperature ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = pos.double()[:, None] * omega[None, :]
    return torch.cat([out.sin(), out.cos()], dim=1).float()


def sincos_2d(grid_size: tuple[int, int], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2D sin-cos table (MAE): x code in D[:D/2], y code in D[D/2:]. Returns (gh*gw, dim)."""
    if dim % 4:
        raise ValueError(f"2D sin-cos embedding needs a dimension divisible by 4, got {dim}")
    gh, gw = grid_size
    y, x = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    return torch.cat([sincos_1d(x.flatten(), dim // 2, temperature),
                      sincos_1d(y.flatten(), dim // 2, temperature)], dim=1)


class LearnedPosEmbed(nn.Module):
    """Learned 1D table, one D-vector per position including prefix tokens (ViT eq. 1, E_pos)."""

    def __init__(self, grid_size: tuple[int, int], dim: int, num_prefix_tokens: int = 1):
        super().__init__()
        self.grid_size, self.num_prefix_tokens = tuple(grid_size), num_prefix_tokens
        self.weight = nn.Parameter(torch.zeros(1, num_prefix_tokens + grid_size[0] * grid_size[1], dim))

    def table(self, grid: tuple[int, int]) -> torch.Tensor:
        """(1, P + gh*gw, D), 2D-interpolated when ``grid`` differs from the trained grid."""
        return resample_pos_embed(self.weight, grid, self.grid_size, self.num_prefix_tokens)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return x + self.table(grid)


class Learned2dPosEmbed(nn.Module):
    """Learned 2D embedding (ViT App. D.4): an x-table and a y-table of D/2 each, concatenated.

    Position (i, j) gets ``[col[j], row[i]]``; prefix tokens get their own learned vectors.
    """

    def __init__(self, grid_size: tuple[int, int], dim: int, num_prefix_tokens: int = 1):
        super().__init__()
        if dim % 2:
            raise ValueError(f"the 2D learned embedding splits D in halves; D={dim} is odd")
        self.grid_size, self.num_prefix_tokens = tuple(grid_size), num_prefix_tokens
        self.col = nn.Parameter(torch.zeros(grid_size[1], dim // 2))   # x
        self.row = nn.Parameter(torch.zeros(grid_size[0], dim // 2))    # y
        self.prefix = nn.Parameter(torch.zeros(1, num_prefix_tokens, dim)) if num_prefix_tokens else None

    @staticmethod
    def _resize(t: torch.Tensor, n: int) -> torch.Tensor:
        if t.shape[0] == n:
            return t
        return F.interpolate(t.t()[None], size=n, mode="linear", align_corners=False)[0].t()

    def table(self, grid: tuple[int, int]) -> torch.Tensor:
        gh, gw = grid
        col, row = self._resize(self.col, gw), self._resize(self.row, gh)
        pos = torch.cat([col[None, :, :].expand(gh, -1, -1), row[:, None, :].expand(-1, gw, -1)], dim=-1)
        pos = pos.reshape(1, gh * gw, -1)                                # (1, gh*gw, D)
        return pos if self.prefix is None else torch.cat([self.prefix, pos], dim=1)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return x + self.table(grid)


class SinCosPosEmbed(nn.Module):
    """Fixed 2D sin-cos table (not learned); prefix tokens get zeros. Exact at any grid size."""

    def __init__(self, grid_size: tuple[int, int], dim: int, num_prefix_tokens: int = 1):
        super().__init__()
        self.grid_size, self.dim, self.num_prefix_tokens = tuple(grid_size), dim, num_prefix_tokens
        self.register_buffer("weight", self._make(self.grid_size), persistent=False)

    def _make(self, grid: tuple[int, int]) -> torch.Tensor:
        pos = sincos_2d(grid, self.dim)
        return torch.cat([pos.new_zeros(self.num_prefix_tokens, self.dim), pos])[None]

    def table(self, grid: tuple[int, int]) -> torch.Tensor:
        if tuple(grid) == self.grid_size:
            return self.weight
        return self._make(tuple(grid)).to(self.weight)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return x + self.table(grid)


class SinCosLearnedPosEmbed(LearnedPosEmbed):
    """A learned 1D table that starts as the fixed 2D sin-cos one (prefix tokens at zero): how MAE fine-tunes
    (``models_vit.py`` loads the pretrained sin-cos ``pos_embed`` into timm's learnable one). A pretraining
    run's sin-cos table is a formula, not a stored weight, so ``starts_from_formula`` tells
    ``load_backbone`` not to ask a checkpoint for it; a table trained this way is stored and loaded."""

    starts_from_formula = True

    def __init__(self, grid_size: tuple[int, int], dim: int, num_prefix_tokens: int = 1):
        super().__init__(grid_size, dim, num_prefix_tokens)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.copy_(SinCosPosEmbed(self.grid_size, self.weight.shape[-1], self.num_prefix_tokens).weight)


def relative_position_index(grid_size: tuple[int, int], num_prefix_tokens: int = 0) -> torch.Tensor:
    """(N, N) index into a bias table of (2gh-1)(2gw-1) entries (+3 for prefix tokens, as BEiT).

    Entry [a, b] is the table row for the offset (y_a - y_b, x_a - x_b) between patches a and b.
    Prefix pairs use the last three rows: prefix->patch, patch->prefix, prefix->prefix.
    """
    gh, gw = grid_size
    y, x = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    coords = torch.stack([y.flatten(), x.flatten()])                # (2, N)
    rel = coords[:, :, None] - coords[:, None, :]                    # (2, N, N)
    index = (rel[0] + gh - 1) * (2 * gw - 1) + (rel[1] + gw - 1)     # (N, N)
    if num_prefix_tokens == 0:
        return index
    n_rel, p, n = (2 * gh - 1) * (2 * gw - 1), num_prefix_tokens, gh * gw
    full = torch.empty(p + n, p + n, dtype=torch.long)
    full[p:, p:] = index
    full[:p, p:] = n_rel
    full[p:, :p] = n_rel + 1
    full[:p, :p] = n_rel + 2
    return full


class RelativePositionBias(nn.Module):
    """A learned scalar per head and relative offset, added to the attention logits (Shaw et al.;
    the table layout of Swin/BEiT). ``forward(grid) -> (heads, N, N)``."""

    def __init__(self, grid_size: tuple[int, int], num_heads: int, num_prefix_tokens: int = 0):
        super().__init__()
        self.grid_size, self.num_prefix_tokens = tuple(grid_size), num_prefix_tokens
        gh, gw = self.grid_size
        extra = 3 if num_prefix_tokens else 0
        self.table = nn.Parameter(torch.zeros((2 * gh - 1) * (2 * gw - 1) + extra, num_heads))
        self.register_buffer("index", relative_position_index(self.grid_size, num_prefix_tokens),
                             persistent=False)

    def forward(self, grid: tuple[int, int]) -> torch.Tensor:
        grid = tuple(grid)
        if grid == self.grid_size:
            index = self.index
        else:
            if grid[0] > self.grid_size[0] or grid[1] > self.grid_size[1]:
                raise ValueError(f"relative position bias was trained for a {self.grid_size} grid and "
                                 f"cannot reach offsets of a larger {grid} grid")
            index = self._remap(grid).to(self.index.device)
        bias = self.table[index]                                        # (N, N, heads)
        return bias.permute(2, 0, 1).contiguous()                       # (heads, N, N)

    def _remap(self, grid: tuple[int, int]) -> torch.Tensor:
        """Index for a smaller grid, addressing the same offsets in the trained table."""
        gh, gw = grid
        GH, GW = self.grid_size
        y, x = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        coords = torch.stack([y.flatten(), x.flatten()])
        rel = coords[:, :, None] - coords[:, None, :]
        index = (rel[0] + GH - 1) * (2 * GW - 1) + (rel[1] + GW - 1)
        p = self.num_prefix_tokens
        if not p:
            return index
        full = relative_position_index(grid, p)
        n_rel = (2 * GH - 1) * (2 * GW - 1)
        full[p:, p:] = index
        full[:p, p:], full[p:, :p], full[:p, :p] = n_rel, n_rel + 1, n_rel + 2
        return full


POS_EMBEDS = {"learn": LearnedPosEmbed, "learn2d": Learned2dPosEmbed, "sincos": SinCosPosEmbed,
              "sincos_learn": SinCosLearnedPosEmbed}
