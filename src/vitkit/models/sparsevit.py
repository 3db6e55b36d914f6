"""SparseViT (Chen et al. 2023, "Revisiting Activation Sparsity for Efficient High-Resolution Vision
Transformer") on vitkit's Swin backbone.

    window activation pruning (Sec. 3.1): per stage, after patch merging, each token's activation
        magnitude (mean |x| over channels) is computed once, at the input of the stage's first pruning
        block, and shared by its blocks; every block scores the M x M windows of its own grid (the
        unshifted one for W-MSA, the rolled map for SW-MSA, as the official backbone's ``w_index`` and
        ``shift_w_index``) by the L2 norm of their tokens' magnitudes, keeps the top ceil((1 - s) * nW),
        runs on those windows only (gathered into a dense (B, k, M*M, C) batch; a shifted block with
        those windows' rows of the shift mask) and scatters every token of them back; the other tokens
        pass through the block unchanged.
    sparsity-aware adaptation (Sec. 3.2): fine-tune with a random per-stage sparsity every step
        (:class:`SparsityAwareAdaptation` wraps any task).
    resource-constrained search (Sec. 3.2): sample per-stage configs, reject those whose latency
        exceeds the budget, evaluate the rest, keep the best (:func:`search`), with a per-stage
        latency table measured on this machine (:func:`measure_latency_table`).

The parameters are exactly Swin's (same names), so a Swin checkpoint loads as is; with every
sparsity 0 the model computes the dense Swin.
"""
from __future__ import annotations

import dataclasses
import random
import statistics
import time
from typing import Callable, Sequence

import torch
from einops import rearrange
from torch import nn

from ..layers import (Attention, cyclic_shift, effective_window, pad_to_multiple, padded_grid, reverse_shift,
                      shift_window_bias, window_merge, window_partition)
from ..layers.sparse import (activation_magnitude, gather_windows, kept_windows, scatter_windows, select_windows,
                             window_scores)
from .registry import build_from_config, register_model
from .swin import SIZES, SwinConfig, SwinStage, SwinTransformer

# The paper's search space: 0%, 10%, ..., 80% per stage.
SPARSITY_CHOICES = tuple(i / 10 for i in range(9))


@dataclasses.dataclass(frozen=True)
class SparseViTConfig(SwinConfig):
    sparsity: tuple[float, ...] = ()   # window sparsity per stage, () = dense (all 0)

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.sparsity, list):
            object.__setattr__(self, "sparsity", tuple(self.sparsity))
        _check_sparsity(self.sparsity or (0.0,) * len(self.depths), len(self.depths))


def _check_sparsity(sparsity: Sequence[float], num_stages: int) -> tuple[float, ...]:
    sparsity = tuple(float(s) for s in sparsity)
    if len(sparsity) != num_stages:
        raise ValueError(f"need one sparsity per stage ({num_stages}), got {sparsity}")
    for s in sparsity:
        kept_windows(1, s)  # raises unless 0 <= s < 1
    return sparsity


def sparse_window_block(blk: nn.Module, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """One Swin block (vitkit ``Block`` with a ``WindowAttention``) run on the windows ``idx`` only.

    x: (B, H, W, C) map; idx: (B, k) window indices (from :func:`block_windows`) of the block's own
    grid: the padded map, rolled for a shifted block. -> (B, H, W, C): every token of those windows
    gets ``blk(x)``'s value (same parameters and arithmetic: the attention is the block's own,
    ``Attention.forward`` on the gathered windows with the relative bias [+ their rows of the shift
    mask]; LN, MLP and residuals are per token); every other token keeps its input.
    """
    attn = blk.attn
    B, H, W, C = x.shape
    M, s = effective_window((H, W), attn.window_size, attn.shift_size)
    grid = padded_grid((H, W), M)                                           # (Hp, Wp)
    if idx.shape[1] == (grid[0] // M) * (grid[1] // M):  # every window kept: the dense block itself
        return blk(x)
    windows = window_partition(cyclic_shift(pad_to_multiple(x, M), s), M)   # (B, nW, N, C)
    kept = gather_windows(windows, idx)                                     # (B, k, N, C)
    h = blk.norm1(kept)
    valid = None
    if grid != (H, W):  # the dense block pads *after* norm1: padded tokens are zero keys
        valid = pad_to_multiple(x.new_ones(1, H, W, 1), M)
        valid = gather_windows(window_partition(cyclic_shift(valid, s), M).expand(B, -1, -1, -1), idx)
        h = h * valid                                                       # (B, k, N, 1) mask
    bias = attn.rel_pos((M, M))                                             # (heads, N, N)
    if s:
        mask = shift_window_bias(grid, M, s, bias.dtype, bias.device)       # (nW, 1, N, N)
        bias = bias + mask[idx]                                             # (B, k, heads, N, N)
    out = kept + blk.drop_path1(Attention.forward(attn, h, attn_bias=bias))
    if valid is not None and out.device.type == "cpu" and not (blk.training and blk.drop_path2.p > 0):
        # LN + MLP only on the real tokens (the dense block never runs them on padding): the
        # padding of a 7x7 grid is up to ~20% of a late stage's tokens at 384-1024 px. (Not on a
        # GPU, where the boolean selection would wait for the device; per-token ops give the real
        # tokens the same values either way.)
        rows = valid.reshape(-1).nonzero().squeeze(1)                       # the real tokens' rows
        flat = out.reshape(-1, C)
        tok = flat.index_select(0, rows)
        out = flat.index_copy_(0, rows, tok + blk.mlp(blk.norm2(tok))).view_as(out)
    else:
        out = out + blk.drop_path2(blk.mlp(blk.norm2(out)))
    windows = scatter_windows(windows, idx, out)
    return reverse_shift(window_merge(windows, M, grid), s)[:, :H, :W]


def block_grid(blk: nn.Module, hw: tuple[int, int]) -> tuple[int, int, int]:
    """(window M, shift s, number of windows nW) of ``blk``'s grid on an (H, W) map (padded to M)."""
    M, s = effective_window(hw, blk.attn.window_size, blk.attn.shift_size)
    Hp, Wp = padded_grid(hw, M)
    return M, s, (Hp // M) * (Wp // M)


def block_windows(blk: nn.Module, magnitude: torch.Tensor, keep: int) -> torch.Tensor:
    """The ``keep`` windows of ``blk``'s own grid with the highest scores (Sec. 3.1): (B, keep).

    magnitude: (B, H, W, 1), the stage's :func:`activation_magnitude` (zero on the padding, as the
    official backbone pads it). A shifted block scores the windows of the rolled map, the windows its
    attention runs on (the official ``shift_w_index``), not those of the unshifted grid.
    """
    M, s, _ = block_grid(blk, magnitude.shape[1:3])
    return select_windows(window_scores(window_partition(cyclic_shift(pad_to_multiple(magnitude, M), s), M)), keep)


def block_sparsity(sparsity: float | Sequence[float], depth: int) -> tuple[float, ...]:
    """A stage's sparsity per block: one float for every block, or one per pair of blocks (W-MSA then
    SW-MSA; the last pair of an odd depth is one block)."""
    if isinstance(sparsity, (int, float)):
        return (float(sparsity),) * depth
    pairs = tuple(float(v) for v in sparsity)
    if len(pairs) != -(-depth // 2):
        raise ValueError(f"a stage of {depth} blocks needs {-(-depth // 2)} pair sparsities, got {pairs}")
    return tuple(pairs[j // 2] for j in range(depth))


def sparse_stage(stage: SwinStage, x: torch.Tensor, sparsity: float | Sequence[float]) -> torch.Tensor:
    """A Swin stage with window activation pruning: (B, H, W, C_in) -> (B, H', W', C).

    sparsity: one float for the stage, or one per pair of blocks (:func:`block_sparsity`). Block j keeps
    ceil((1 - s_j) nW) windows of its own grid (:func:`block_windows`), scored on the activation
    magnitude computed once, at the input of the first block that prunes. A block with nothing to prune
    (sparsity 0, or too few windows to drop one, such as a late stage's single window) runs dense;
    a stage with nothing to prune is Swin's own, unscored.
    """
    x = stage.downsample(x)
    magnitude = None
    for blk, s in zip(stage.blocks, block_sparsity(sparsity, len(stage.blocks))):
        num_windows = block_grid(blk, x.shape[1:3])[2]
        k = kept_windows(num_windows, s)
        if k == num_windows:
            x = blk(x)
            continue
        if magnitude is None:  # shared scoring: once per stage
            magnitude = activation_magnitude(x)
        x = sparse_window_block(blk, x, block_windows(blk, magnitude, k))
    return x


class SparseViT(SwinTransformer):
    """Swin with window activation pruning. (B, C, H, W) -> logits (B, num_classes).

    ``sparsity`` (one float per stage) starts as ``cfg.sparsity`` and may be changed at any time with
    :meth:`set_sparsity` (adaptation and search do). The API is Swin's.
    """

    def __init__(self, cfg: SparseViTConfig):
        super().__init__(cfg)
        self.num_stages = len(cfg.depths)
        self.set_sparsity(cfg.sparsity or (0.0,) * self.num_stages)

    @classmethod
    def from_swin(cls, swin: SwinTransformer) -> "SparseViT":
        """The SparseViT of a Swin: its config and its weights (one state dict serves both), at sparsity 0,
        in the Swin's mode, on its device. It is named as the registry names it: ``sparsevit_`` + the
        Swin's name (what an export records as the model)."""
        fields = {f.name: getattr(swin.cfg, f.name) for f in dataclasses.fields(swin.cfg)}
        name = swin.cfg.name
        if name and not name.startswith("sparsevit_"):
            name = f"sparsevit_{name}"
        p = next(swin.parameters())
        sparse = cls(SparseViTConfig(**{**fields, "sparsity": (), "name": name})).to(p.device, p.dtype)
        sparse.load_state_dict(swin.state_dict())
        return sparse.train(swin.training)

    def set_sparsity(self, sparsity: Sequence[float]) -> None:
        """Per-stage window sparsity, each in [0, 1)."""
        self.sparsity = _check_sparsity(sparsity, self.num_stages)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> normed last-stage map (B, h, w, num_features)."""
        x = self._embed(x)
        for stage, s in zip(self.stages, self.sparsity):
            x = sparse_stage(stage, x, s)
        return self.norm(x)

    def forward_intermediates(self, x: torch.Tensor, return_attention: bool = False) -> dict:
        """As Swin's: ``features`` and every stage's map (B, C_i, H_i, W_i). Attention maps only when
        dense (every sparsity 0): pruned windows have none."""
        if return_attention:
            if any(self.sparsity):
                raise ValueError("attention maps need sparsity 0 in every stage; call set_sparsity first")
            return super().forward_intermediates(x, return_attention=True)
        x = self._embed(x)
        maps = []
        for stage, s in zip(self.stages, self.sparsity):
            x = sparse_stage(stage, x, s)
            maps.append(rearrange(x, "b h w c -> b c h w"))
        return {"features": self.norm(x), "stages": maps}

    def extra_repr(self) -> str:
        return f"sparsity={self.sparsity}"


# -------------------------------------------------------------------- sparsity-aware adaptation
def sample_sparsity(num_stages: int, choices: Sequence[float] = SPARSITY_CHOICES,
                    rng: random.Random | None = None) -> tuple[float, ...]:
    """One random per-stage config, each stage drawn uniformly from ``choices``."""
    rng = rng or random
    return tuple(float(rng.choice(choices)) for _ in range(num_stages))


class SparsityAwareAdaptation:
    """Wrap a task so that every training step runs the model at a fresh random per-stage sparsity
    (the paper's sparsity-aware adaptation); evaluation runs at ``eval_sparsity`` (default: dense).

    The wrapper is a task for the one trainer (``loss``, ``eval_metrics``; everything else, such as
    ``main_metric`` or ``summarize``, comes from the wrapped task). The model must have
    ``set_sparsity`` and ``num_stages`` (:class:`SparseViT`).
    """

    def __init__(self, task, choices: Sequence[float] = SPARSITY_CHOICES,
                 eval_sparsity: Sequence[float] | None = None, seed: int = 0):
        self.task, self.choices = task, tuple(choices)
        self.eval_sparsity = None if eval_sparsity is None else tuple(eval_sparsity)
        self.rng = random.Random(seed)
        self.last_sparsity: tuple[float, ...] | None = None

    def loss(self, model: SparseViT, batch):
        inner = getattr(model, "module", model)  # the trainer may pass a DDP wrapper
        self.last_sparsity = sample_sparsity(inner.num_stages, self.choices, self.rng)
        inner.set_sparsity(self.last_sparsity)
        return self.task.loss(model, batch)

    def eval_metrics(self, model: SparseViT, batch):
        inner = getattr(model, "module", model)
        inner.set_sparsity(self.eval_sparsity or (0.0,) * inner.num_stages)
        return self.task.eval_metrics(model, batch)

    def __getattr__(self, name: str):
        if name == "task":  # not yet set (copy / unpickling)
            raise AttributeError(name)
        return getattr(self.task, name)


# -------------------------------------------------------------------- latency and search
@torch.no_grad()
def measure_latency(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds (CUDA synchronised when available)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@torch.no_grad()
def measure_latency_table(model: SparseViT, x: torch.Tensor, choices: Sequence[float] = SPARSITY_CHOICES,
                          repeats: int = 5) -> dict:
    """A per-stage latency table measured on this machine, for :func:`table_latency_fn`.

    Stage i is timed alone at each sparsity in ``choices`` on its real (dense) input for ``x``;
    ``base_ms`` is the rest (patch embedding, final norm and head). Returns
    ``{"choices": [...], "base_ms": float, "stage_ms": [[ms per choice] per stage]}``.
    """
    model.eval()
    inputs, h = [], model._embed(x)
    base = measure_latency(lambda: model._embed(x), repeats)
    for stage in model.stages:
        inputs.append(h)
        h = stage(h)
    base += measure_latency(lambda: model.forward_head(model.norm(h)), repeats)
    stage_ms = [[measure_latency(lambda: sparse_stage(stage, inp, s), repeats) for s in choices]
                for stage, inp in zip(model.stages, inputs)]
    return {"choices": [float(c) for c in choices], "base_ms": base, "stage_ms": stage_ms}


def table_latency_fn(table: dict) -> Callable[[Sequence[float]], float]:
    """config -> predicted latency (ms) = base_ms + sum over stages of stage_ms[i][choice index]."""
    index = {round(c, 6): i for i, c in enumerate(table["choices"])}

    def latency(config: Sequence[float]) -> float:
        if len(config) != len(table["stage_ms"]):
            raise ValueError(f"config {tuple(config)} has {len(config)} stages, the table "
                             f"{len(table['stage_ms'])}")
        try:
            return table["base_ms"] + sum(row[index[round(s, 6)]] for row, s in zip(table["stage_ms"], config))
        except KeyError as e:
            raise ValueError(f"sparsity {e.args[0]} is not in the table's choices {table['choices']}") from None

    return latency


def accuracy_fn(loader, device: str | torch.device | None = None) -> Callable[[nn.Module], float]:
    """An ``eval_fn`` for :func:`search`: top-1 accuracy over ``loader`` ((images, labels) batches)."""

    @torch.no_grad()
    def accuracy(model: nn.Module) -> float:
        model.eval()
        dev = device or next(model.parameters()).device
        correct = count = 0
        for x, y in loader:
            correct += (model(x.to(dev)).argmax(-1) == y.to(dev)).sum().item()
            count += len(y)
        return correct / max(count, 1)

    return accuracy


def search(model: SparseViT, eval_fn: Callable[[SparseViT], float],
           latency_fn: Callable[[Sequence[float]], float], budget_ms: float, n_samples: int,
           choices: Sequence[float] = SPARSITY_CHOICES, seed: int = 0,
           max_draws: int | None = None) -> tuple[tuple[float, ...], list[dict]]:
    """Resource-constrained search by rejection sampling.

    Draw per-stage configs uniformly from ``choices`` (each distinct config once); reject a config
    whose ``latency_fn(config)`` (ms) exceeds ``budget_ms``; run ``eval_fn(model)`` (higher is
    better, e.g. held-out accuracy) with the model set to each kept config, until ``n_samples``
    configs were evaluated or ``max_draws`` (default ``50 * n_samples``) were drawn. The model's
    sparsity is restored afterwards.

    Returns ``(best, table)``: ``best`` the evaluated config with the highest score (ties: the
    faster); ``table`` one row per evaluated config, sorted by latency:
    ``{"sparsity", "latency_ms", "score", "pareto"}``, ``pareto`` True when no other row is at least
    as fast and at least as good and strictly better in one. Raises ValueError when no draw met the
    budget (the message names the fastest one seen).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    rng = random.Random(seed)
    max_draws = max_draws or 50 * n_samples
    space = len(choices) ** model.num_stages
    seen: set[tuple[float, ...]] = set()
    rows: list[dict] = []
    fastest: tuple[float, tuple] | None = None
    previous = model.sparsity
    try:
        for _ in range(max_draws):
            if len(rows) >= n_samples or len(seen) >= space:
                break
            config = sample_sparsity(model.num_stages, choices, rng)
            if config in seen:
                continue
            seen.add(config)
            latency = float(latency_fn(config))
            if fastest is None or latency < fastest[0]:
                fastest = (latency, config)
            if latency > budget_ms:
                continue  # rejected: over the budget, never evaluated
            model.set_sparsity(config)
            rows.append({"sparsity": config, "latency_ms": latency, "score": float(eval_fn(model))})
    finally:
        model.set_sparsity(previous)
    if not rows:
        raise ValueError(f"no sampled config meets the {budget_ms} ms budget (fastest seen: {fastest[1]} "
                         f"at {fastest[0]:.2f} ms); raise the budget or add higher sparsities")
    rows.sort(key=lambda r: (r["latency_ms"], -r["score"]))
    for r in rows:
        r["pareto"] = not any(o is not r and o["latency_ms"] <= r["latency_ms"] and o["score"] >= r["score"]
                              and (o["latency_ms"] < r["latency_ms"] or o["score"] > r["score"]) for o in rows)
    best = max(rows, key=lambda r: (r["score"], -r["latency_ms"]))
    return best["sparsity"], rows


def format_table(rows: list[dict], pareto_only: bool = True) -> str:
    """The search table as fixed-width text (the Pareto front by default), for a CLI to print."""
    rows = [r for r in rows if r["pareto"] or not pareto_only]
    lines = [f"{'sparsity per stage':<28}{'latency ms':>12}{'score':>10}"]
    lines += [f"{'/'.join(f'{s:.0%}' for s in r['sparsity']):<28}{r['latency_ms']:>12.2f}{r['score']:>10.4f}"
              for r in rows]
    return "\n".join(lines)


# -------------------------------------------------------------------- registered variants
def _sparsevit(base: SparseViTConfig, **overrides) -> SparseViT:
    return SparseViT(build_from_config(SparseViTConfig, base, overrides))


@register_model
def sparsevit_swin_tiny_patch4_window7_224(**kw) -> SparseViT:
    """SparseViT on Swin-T at 224 (C=96, depths (2, 2, 6, 2)); Swin-T weights load as is. Dense until
    ``sparsity=`` (one float per stage) or ``set_sparsity`` says otherwise."""
    dim, depths, heads = SIZES["tiny"]
    return _sparsevit(SparseViTConfig(embed_dim=dim, depths=depths, num_heads=heads, window_size=7,
                                      drop_path_rate=0.2, name="sparsevit_swin_tiny_patch4_window7_224"), **kw)


@register_model
def sparsevit_swin_nano_patch2_window4_28(**kw) -> SparseViT:
    """SparseViT on ``swin_nano_patch2_window4_28`` (28x28 digits; 16, 4 and 1 windows per stage)."""
    return _sparsevit(SparseViTConfig(img_size=28, in_chans=1, num_classes=10, patch_size=2, embed_dim=32,
                                      depths=(2, 2, 2), num_heads=(2, 4, 8), window_size=4, drop_path_rate=0.1,
                                      name="sparsevit_swin_nano_patch2_window4_28"), **kw)
