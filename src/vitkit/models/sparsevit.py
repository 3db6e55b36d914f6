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
    search space (Sec. 3.2; the official tools/search.py): one sparsity per pair of blocks (W-MSA then
        SW-MSA), from 0%, 10%, ..., 80%, non-decreasing within a stage: Swin-T's (2, 2, 6, 2) blocks
        have 1 + 1 + 3 + 1 knobs. ``SparseViT.sparsity`` holds one value per pair; ``set_sparsity``
        also takes one per stage (or one float) and broadcasts it.
    sparsity-aware adaptation (Sec. 3.2): fine-tune with a random config every step, each pair drawn
        uniformly and sorted within its stage as the official tools/train.py does
        (:class:`SparsityAwareAdaptation` wraps any task).
    resource-constrained search (Sec. 3.2): evolutionary search (population, parents, mutation,
        crossover; the official tools/search.py ``EvolveSearcher``) or its random-search baseline, at
        the same budget of evaluated configs, under a latency window [min, max]: a config outside it
        is never evaluated (:func:`search`); latency from a per-pair table measured on this machine
        (:func:`measure_latency_table`).

The parameters are exactly Swin's (same names), so a Swin checkpoint loads as is; with every
sparsity 0 the model computes the dense Swin.
"""
from __future__ import annotations

import dataclasses
import math
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

# The paper's search space (the official tools/search.py): 0%, 10%, ..., 80% for each pair of blocks.
SPARSITY_CHOICES = tuple(i / 10 for i in range(9))


@dataclasses.dataclass(frozen=True)
class SparseViTConfig(SwinConfig):
    # window sparsity per pair of blocks, or per stage (broadcast to its pairs); () = dense (all 0)
    sparsity: tuple[float, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.sparsity, list):
            object.__setattr__(self, "sparsity", tuple(self.sparsity))
        check_sparsity(self.sparsity or 0.0, pairs_per_stage(self.depths))


def pairs_per_stage(depths: Sequence[int]) -> tuple[int, ...]:
    """Pairs of blocks (W-MSA then SW-MSA) per stage: ceil(depth / 2); the search's knobs per stage."""
    return tuple(-(-d // 2) for d in depths)


def expand_sparsity(sparsity: float | Sequence[float], pairs: Sequence[int]) -> tuple[float, ...]:
    """One float, one per stage or one per pair -> one per pair (a stage's value broadcast to its pairs)."""
    if isinstance(sparsity, (int, float)):
        return (float(sparsity),) * sum(pairs)
    values = tuple(float(v) for v in sparsity)
    if len(values) == sum(pairs):
        return values
    if len(values) == len(pairs):
        return tuple(v for v, n in zip(values, pairs) for _ in range(n))
    raise ValueError(f"need one sparsity per block pair ({sum(pairs)}: {tuple(pairs)} per stage) or one "
                     f"sparsity per stage ({len(pairs)}), got {values}")


def split_stages(values: Sequence, pairs: Sequence[int]) -> list[tuple]:
    """A flat per-pair sequence -> one tuple per stage."""
    ends = [sum(pairs[:i + 1]) for i in range(len(pairs))]
    return [tuple(values[e - n:e]) for e, n in zip(ends, pairs)]


def check_sparsity(sparsity: float | Sequence[float], pairs: Sequence[int]) -> tuple[float, ...]:
    """:func:`expand_sparsity`, each value in [0, 1) and non-decreasing within a stage (the search
    space's rule; the official backbone keeps a prefix of the previous pair's windows)."""
    values = expand_sparsity(sparsity, pairs)
    for s in values:
        kept_windows(1, s)  # raises unless 0 <= s < 1
    for stage in split_stages(values, pairs):
        if list(stage) != sorted(stage):
            raise ValueError(f"sparsity must be non-decreasing within a stage, got {stage} in {values}")
    return values


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
    return sparse_blocks(stage.blocks, stage.downsample(x), block_sparsity(sparsity, len(stage.blocks)))


def sparse_blocks(blocks: Sequence[nn.Module], x: torch.Tensor, sparsity: Sequence[float]) -> torch.Tensor:
    """Blocks of one stage (one sparsity each) as :func:`sparse_stage` runs them, without patch merging."""
    magnitude = None
    for blk, s in zip(blocks, sparsity):
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

    ``sparsity`` (one float per pair of blocks, ``pairs_per_stage`` of them per stage, non-decreasing
    within a stage) starts as ``cfg.sparsity`` and may be changed at any time with :meth:`set_sparsity`
    (adaptation and search do). The API is Swin's.
    """

    def __init__(self, cfg: SparseViTConfig):
        super().__init__(cfg)
        self.num_stages = len(cfg.depths)
        self.pairs_per_stage = pairs_per_stage(cfg.depths)
        self.num_pairs = sum(self.pairs_per_stage)
        self.set_sparsity(cfg.sparsity or 0.0)

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

    def set_sparsity(self, sparsity: float | Sequence[float]) -> None:
        """Window sparsity, each in [0, 1): one per pair of blocks (non-decreasing within a stage), or one
        per stage or one float, broadcast (:func:`check_sparsity`). ``self.sparsity`` is per pair."""
        self.sparsity = check_sparsity(sparsity, self.pairs_per_stage)

    @property
    def stage_sparsity(self) -> list[tuple[float, ...]]:
        """``sparsity`` grouped by stage: one tuple of pair sparsities per stage."""
        return split_stages(self.sparsity, self.pairs_per_stage)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> normed last-stage map (B, h, w, num_features)."""
        x = self._embed(x)
        for stage, s in zip(self.stages, self.stage_sparsity):
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
        for stage, s in zip(self.stages, self.stage_sparsity):
            x = sparse_stage(stage, x, s)
            maps.append(rearrange(x, "b h w c -> b c h w"))
        return {"features": self.norm(x), "stages": maps}

    def extra_repr(self) -> str:
        return f"sparsity={self.sparsity}"


# -------------------------------------------------------------------- sparsity-aware adaptation
def sample_sparsity(pairs: int | Sequence[int], choices: Sequence[float] = SPARSITY_CHOICES,
                    rng: random.Random | None = None) -> tuple[float, ...]:
    """One random config of the search space, one sparsity per pair: each pair drawn uniformly from
    ``choices``, then sorted within its stage (the official tools/train.py ``random_sample`` and
    tools/search.py ``sample``). pairs: pairs per stage (``SparseViT.pairs_per_stage``); an int n
    means n stages of one pair."""
    rng = rng or random
    pairs = (1,) * pairs if isinstance(pairs, int) else tuple(pairs)
    return tuple(v for n in pairs for v in sorted(float(rng.choice(choices)) for _ in range(n)))


class SparsityAwareAdaptation:
    """Wrap a task so that every training step runs the model at a fresh random config (one sparsity
    per pair of blocks, :func:`sample_sparsity`; the paper's sparsity-aware adaptation, Sec. 3.2);
    evaluation runs at ``eval_sparsity`` (per pair, per stage or one float; default: dense).

    The wrapper is a task for the one trainer (``loss``, ``eval_metrics``; everything else, such as
    ``main_metric`` or ``summarize``, comes from the wrapped task). The model must have
    ``set_sparsity`` and ``pairs_per_stage`` (:class:`SparseViT`).
    """

    def __init__(self, task, choices: Sequence[float] = SPARSITY_CHOICES,
                 eval_sparsity: float | Sequence[float] | None = None, seed: int = 0):
        self.task, self.choices = task, tuple(choices)
        self.eval_sparsity = eval_sparsity if eval_sparsity is None or isinstance(eval_sparsity, (int, float)) \
            else tuple(eval_sparsity)
        self.rng = random.Random(seed)
        self.last_sparsity: tuple[float, ...] | None = None

    def loss(self, model: SparseViT, batch):
        inner = getattr(model, "module", model)  # the trainer may pass a DDP wrapper
        self.last_sparsity = sample_sparsity(inner.pairs_per_stage, self.choices, self.rng)
        inner.set_sparsity(self.last_sparsity)
        return self.task.loss(model, batch)

    def eval_metrics(self, model: SparseViT, batch):
        inner = getattr(model, "module", model)
        inner.set_sparsity(0.0 if self.eval_sparsity is None else self.eval_sparsity)
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


def block_pairs(blocks: Sequence[nn.Module]) -> list[Sequence[nn.Module]]:
    """A stage's blocks in pairs (W-MSA then SW-MSA; an odd depth ends with one block)."""
    return [blocks[j:j + 2] for j in range(0, len(blocks), 2)]


@torch.no_grad()
def measure_latency_table(model: SparseViT, x: torch.Tensor, choices: Sequence[float] = SPARSITY_CHOICES,
                          repeats: int = 5) -> dict:
    """A per-pair latency table measured on this machine, for :func:`table_latency_fn`.

    Each pair of blocks is timed alone at each sparsity in ``choices``, on its real (dense) input for
    ``x``, with its activation-magnitude computation when it prunes (a stage computes it once, so a
    stage's later pruning pairs are over-estimated by that one pass over the map); ``base_ms`` is the
    rest (patch embedding, patch merging, final norm and head). Returns ``{"choices": [...],
    "base_ms": float, "pairs_per_stage": [...], "pair_ms": [[ms per choice] per pair]}``.
    """
    model.eval()
    h = model._embed(x)
    base = measure_latency(lambda: model._embed(x), repeats)
    pair_ms = []
    for stage in model.stages:
        base += measure_latency(lambda: stage.downsample(h), repeats)
        h = stage.downsample(h)
        for pair in block_pairs(stage.blocks):
            pair_ms.append([measure_latency(lambda: sparse_blocks(pair, h, (s,) * len(pair)), repeats)
                            for s in choices])
            for blk in pair:
                h = blk(h)
    base += measure_latency(lambda: model.forward_head(model.norm(h)), repeats)
    return {"choices": [float(c) for c in choices], "base_ms": base,
            "pairs_per_stage": list(model.pairs_per_stage), "pair_ms": pair_ms}


def table_latency_fn(table: dict) -> Callable[[float | Sequence[float]], float]:
    """config -> predicted latency (ms) = base_ms + sum over pairs of pair_ms[p][choice index]. A config
    is what ``set_sparsity`` takes: one sparsity per pair, per stage or one float."""
    if "pair_ms" not in table:
        raise ValueError("not a per-pair latency table (no pair_ms; a per-stage table from an earlier "
                         "vitkit?): measure a new one")
    index = {round(c, 6): i for i, c in enumerate(table["choices"])}
    pairs = tuple(table["pairs_per_stage"])
    if sum(pairs) != len(table["pair_ms"]) or any(len(row) != len(index) for row in table["pair_ms"]):
        raise ValueError(f"the table needs one row per pair ({sum(pairs)}) of one time per choice ({len(index)})")

    def latency(config: float | Sequence[float]) -> float:
        config = expand_sparsity(config, pairs)
        try:
            return table["base_ms"] + sum(row[index[round(s, 6)]] for row, s in zip(table["pair_ms"], config))
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


def sort_stages(config: Sequence[float], pairs: Sequence[int]) -> tuple[float, ...]:
    """Sort a per-pair config within each stage (the official ``sort_cfg``): back into the search space."""
    return tuple(v for stage in split_stages(tuple(config), pairs) for v in sorted(stage))


def mutate(config: Sequence[float], pairs: Sequence[int], choices: Sequence[float], prob: float,
           rng: random.Random) -> tuple[float, ...]:
    """Evolutionary mutation (the official ``EvolveSearcher._mutate``): each pair takes, with probability
    ``prob``, its value in a fresh :func:`sample_sparsity`, else keeps the parent's; then sorted per stage."""
    fresh = sample_sparsity(pairs, choices, rng)
    return sort_stages([f if rng.random() < prob else c for c, f in zip(config, fresh)], pairs)


def crossover(parents: Sequence[Sequence[float]], pairs: Sequence[int], rng: random.Random) -> tuple[float, ...]:
    """Evolutionary crossover (the official ``EvolveSearcher._crossover``): each pair's value from a
    parent drawn at random; then sorted per stage."""
    return sort_stages([rng.choice(parents)[i] for i in range(sum(pairs))], pairs)


class _Evaluator:
    """A search's scoring (Sec. 3.2; the official ``BaseSearcher.run_step``): a config's latency first; one
    outside [min_ms, max_ms] is rejected, never evaluated (``filter_func``); each distinct config is
    evaluated once (a repeat returns the cached score). ``rows``: the evaluated configs."""

    def __init__(self, model: SparseViT, eval_fn: Callable, latency_fn: Callable, min_ms: float, max_ms: float):
        self.model, self.eval_fn, self.latency_fn = model, eval_fn, latency_fn
        self.min_ms, self.max_ms = min_ms, max_ms
        self.latency: dict[tuple[float, ...], float] = {}     # every config seen
        self.rows: dict[tuple[float, ...], dict] = {}          # every config evaluated

    def __call__(self, config: tuple[float, ...]) -> float | None:
        """The config's score, or None when its latency is outside the window."""
        if config in self.rows:
            return self.rows[config]["score"]
        if config not in self.latency:  # a measured latency_fn is slow: once per config
            self.latency[config] = float(self.latency_fn(config))
        ms = self.latency[config]
        if not self.min_ms <= ms <= self.max_ms:
            return None
        self.model.set_sparsity(config)
        self.rows[config] = {"sparsity": config, "latency_ms": ms, "score": float(self.eval_fn(self.model))}
        return self.rows[config]["score"]


def _random_search(ev: _Evaluator, draw: Callable[[], tuple], done: Callable[[], bool], max_draws: int) -> None:
    """Random search, the paper's baseline: every draw a fresh :func:`sample_sparsity`."""
    for _ in range(max_draws):
        if done():
            return
        ev(draw())


def _evolutionary_search(ev: _Evaluator, draw: Callable[[], tuple], done: Callable[[], bool], max_draws: int,
                         pairs: Sequence[int], choices: Sequence[float], rng: random.Random,
                         population_size: int, num_parents: int, mutation_prob: float) -> None:
    """Evolutionary search as the official ``EvolveSearcher``: configs within the latency window join the
    population; once it holds ``population_size``, its best ``num_parents`` become the parents and a new
    population starts. Until the first parents exist every config is a fresh sample; then the first half
    of each population comes from :func:`mutate` of a random parent, the second half from
    :func:`crossover` of two random parents."""
    population: list[tuple[tuple, float]] = []
    parents: list[tuple[tuple, float]] = []
    for _ in range(max_draws):
        if done():
            return
        if len(population) >= population_size:
            parents = sorted(population, key=lambda p: p[1], reverse=True)[:num_parents]
            population = []
        if not parents:
            config = draw()
        elif len(population) < population_size // 2:
            config = mutate(rng.choice(parents)[0], pairs, choices, mutation_prob, rng)
        else:
            config = crossover([c for c, _ in rng.sample(parents, min(2, len(parents)))], pairs, rng)
        score = ev(config)
        if score is not None:
            population.append((config, score))


def search(model: SparseViT, eval_fn: Callable[[SparseViT], float],
           latency_fn: Callable[[Sequence[float]], float], budget_ms: float, n_samples: int,
           choices: Sequence[float] = SPARSITY_CHOICES, seed: int = 0, max_draws: int | None = None, *,
           min_ms: float = 0.0, method: str = "evolution", population_size: int = 100, num_parents: int = 25,
           mutation_prob: float = 0.1) -> tuple[tuple[float, ...], list[dict]]:
    """Resource-constrained search (Sec. 3.2): the best config whose latency is in [``min_ms``,
    ``budget_ms``] (the official tools/search.py: ``--min <= latency <= --max``).

    Configs are of the search space (one sparsity per pair of blocks from ``choices``, non-decreasing
    within a stage). ``latency_fn(config)`` (ms) is checked first; a config outside the window is never
    evaluated; ``eval_fn(model)`` (higher is better, e.g. held-out accuracy) runs with the model set to
    each distinct config inside it, until ``n_samples`` configs were evaluated (the budget: the same for
    both methods, so they compare), every config of the space was seen, or ``max_draws`` (default
    ``50 * n_samples``) were drawn (a converged evolution, redrawing configs it has seen, may stop there,
    under the budget). ``method``: ``"evolution"`` (the paper's; the official defaults:
    population 100, 25 parents, mutation probability 0.1; :func:`_evolutionary_search`) or ``"random"``
    (its baseline). The model's sparsity is restored afterwards.

    Returns ``(best, table)``: ``best`` the evaluated config with the highest score (ties: the faster);
    ``table`` one row per evaluated config, sorted by latency: ``{"sparsity", "latency_ms", "score",
    "pareto"}``, ``pareto`` True when no other row is at least as fast and at least as good and
    strictly better in one. Raises ValueError when no draw met the window (the message names the
    fastest and slowest configs seen).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if not 0 <= min_ms <= budget_ms:
        raise ValueError(f"need 0 <= min_ms <= budget_ms, got {min_ms} and {budget_ms}")
    if method not in ("evolution", "random"):
        raise ValueError(f"method must be 'evolution' or 'random', got {method!r}")
    if method == "evolution" and not (1 <= num_parents <= population_size and 0 <= mutation_prob <= 1):
        raise ValueError(f"need 1 <= num_parents <= population_size and mutation_prob in [0, 1], got "
                         f"{num_parents}, {population_size}, {mutation_prob}")
    rng, pairs = random.Random(seed), model.pairs_per_stage
    space = math.prod(math.comb(len(choices) + n - 1, n) for n in pairs)  # multisets per stage
    ev = _Evaluator(model, eval_fn, latency_fn, min_ms, budget_ms)

    def draw() -> tuple[float, ...]:
        return sample_sparsity(pairs, choices, rng)

    def done() -> bool:  # the budget is spent, or every config of the space was seen
        return len(ev.rows) >= n_samples or len(ev.latency) >= space

    previous = model.sparsity
    try:
        if method == "random":
            _random_search(ev, draw, done, max_draws or 50 * n_samples)
        else:
            _evolutionary_search(ev, draw, done, max_draws or 50 * n_samples, pairs, choices, rng,
                                 population_size, num_parents, mutation_prob)
    finally:
        model.set_sparsity(previous)
    if not ev.rows:
        (lo, fast), (hi, slow) = min((v, k) for k, v in ev.latency.items()), max((v, k) for k, v in ev.latency.items())
        raise ValueError(f"no sampled config meets the latency budget [{min_ms}, {budget_ms}] ms (fastest seen: "
                         f"{fast} at {lo:.2f} ms, slowest: {slow} at {hi:.2f} ms); widen the window or change "
                         "the choices")
    rows = sorted(ev.rows.values(), key=lambda r: (r["latency_ms"], -r["score"]))
    for r in rows:
        r["pareto"] = not any(o is not r and o["latency_ms"] <= r["latency_ms"] and o["score"] >= r["score"]
                              and (o["latency_ms"] < r["latency_ms"] or o["score"] > r["score"]) for o in rows)
    best = max(rows, key=lambda r: (r["score"], -r["latency_ms"]))
    return best["sparsity"], rows


def format_sparsity(sparsity: Sequence[float], pairs: Sequence[int] | None = None) -> str:
    """A per-pair config as text: stages separated by '/', a stage's pairs by ',' (``pairs``: pairs per
    stage; None: every value its own stage), e.g. Swin-T's ``30%/0%/10%,20%,20%/0%``."""
    groups = split_stages(tuple(sparsity), pairs) if pairs else [(s,) for s in sparsity]
    return "/".join(",".join(f"{s:.0%}" for s in g) for g in groups)


def format_table(rows: list[dict], pareto_only: bool = True, pairs: Sequence[int] | None = None) -> str:
    """The search table as fixed-width text (the Pareto front by default), for a CLI to print; ``pairs``
    (the model's ``pairs_per_stage``) groups each config by stage (:func:`format_sparsity`)."""
    rows = [r for r in rows if r["pareto"] or not pareto_only]
    text = [format_sparsity(r["sparsity"], pairs) for r in rows]
    width = max([28, *(len(t) + 2 for t in text)])
    lines = [f"{'sparsity per stage (per pair)':<{width}}{'latency ms':>12}{'score':>10}"]
    lines += [f"{t:<{width}}{r['latency_ms']:>12.2f}{r['score']:>10.4f}" for t, r in zip(text, rows)]
    return "\n".join(lines)


# -------------------------------------------------------------------- registered variants
def _sparsevit(base: SparseViTConfig, **overrides) -> SparseViT:
    return SparseViT(build_from_config(SparseViTConfig, base, overrides))


@register_model
def sparsevit_swin_tiny_patch4_window7_224(**kw) -> SparseViT:
    """SparseViT on Swin-T at 224 (C=96, depths (2, 2, 6, 2): 1 + 1 + 3 + 1 block pairs); Swin-T weights
    load as is. Dense until ``sparsity=`` (one float per pair or per stage) or ``set_sparsity`` says
    otherwise."""
    dim, depths, heads = SIZES["tiny"]
    return _sparsevit(SparseViTConfig(embed_dim=dim, depths=depths, num_heads=heads, window_size=7,
                                      drop_path_rate=0.2, name="sparsevit_swin_tiny_patch4_window7_224"), **kw)


@register_model
def sparsevit_swin_nano_patch2_window4_28(**kw) -> SparseViT:
    """SparseViT on ``swin_nano_patch2_window4_28`` (28x28 digits; 16, 4 and 1 windows per stage)."""
    return _sparsevit(SparseViTConfig(img_size=28, in_chans=1, num_classes=10, patch_size=2, embed_dim=32,
                                      depths=(2, 2, 2), num_heads=(2, 4, 8), window_size=4, drop_path_rate=0.1,
                                      name="sparsevit_swin_nano_patch2_window4_28"), **kw)
