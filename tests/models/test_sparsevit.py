"""SparseViT: sparsity 0 is the dense Swin; sparsity s runs every block on exactly ceil((1-s) nW)
windows, those selected on its own grid, against a brute-force reference; one sparsity per pair of
blocks, non-decreasing within a stage; adaptation samples such configs; the search respects the latency
budget and returns the Pareto front."""
import math
import random

import pytest
import torch

from vitkit.layers import effective_window, window_partition
from vitkit.models import create_model, list_models
from vitkit.models.sparsevit import (SparseViT, SparseViTConfig, SparsityAwareAdaptation, accuracy_fn,
                                     format_sparsity, format_table, measure_latency_table, sample_sparsity,
                                     search, sparse_stage, table_latency_fn)


def _pair(**kw):
    """A nano Swin with every parameter randomised (LN biases too, so padding matters) and the
    SparseViT holding the same weights."""
    torch.manual_seed(0)
    swin = create_model("swin_nano_patch2_window4_28", **kw).eval()
    with torch.no_grad():
        for p in swin.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    sparse = SparseViT.from_swin(swin)  # same parameter names as Swin
    return swin, sparse


def test_registered():
    assert {"sparsevit_swin_nano_patch2_window4_28", "sparsevit_swin_tiny_patch4_window7_224"} <= set(
        list_models("sparsevit_*"))
    m = create_model("sparsevit_swin_tiny_patch4_window7_224", device="meta")
    assert abs(sum(p.numel() for p in m.parameters()) / 1e6 - 28.3) < 0.1  # Swin-T's parameters


@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (2, 1, 36, 20)])
def test_sparsity_zero_equals_dense_swin(shape):
    """At sparsity 0 the stages are Swin's own, so this checks SparseViT's wiring around them (embedding,
    norm, head, intermediates), with a map that needs padding; the pruned path is checked below."""
    swin, sparse = _pair(dynamic_img_size=True)
    x = torch.randn(shape)
    with torch.no_grad():
        dense, out = swin.forward_features(x), sparse.forward_features(x)
        assert torch.equal(out, dense), (out - dense).abs().max()              # bit for bit
        assert torch.equal(sparse(x), swin(x))
        inter = sparse.forward_intermediates(x)["stages"]
        ref = swin.forward_intermediates(x)["stages"]
        assert all(torch.allclose(a, b, atol=1e-6, rtol=0) for a, b in zip(inter, ref))


def _count_windows(model, x):
    """Windows each block's attention ran on: the (B, k, N, C) windows reaching ``Attention.forward``
    (both the dense WindowAttention and the sparse path call it on their windows)."""
    from vitkit.layers.attention import Attention
    counts, forward = [], Attention.forward

    def spy(self, t, *args, **kwargs):
        if t.dim() == 4:  # the outer call; it re-enters itself with the windows folded into the batch
            counts.append(t.shape[1])
        return forward(self, t, *args, **kwargs)

    Attention.forward = spy
    try:
        with torch.no_grad():
            model(x)
    finally:
        Attention.forward = forward
    return counts


@pytest.mark.parametrize("sparsity", [(0.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.3, 0.7, 0.8), (0.8, 0.1, 0.0)])
def test_blocks_run_on_exactly_ceil_kept_windows(sparsity):
    _, m = _pair()
    m.set_sparsity(sparsity)
    windows = (16, 4, 1)  # nano: 14 -> 16 padded (4x4 windows of 4), 7 -> 8 (2x2), 4 (one window)
    expected = [math.ceil((1 - s) * n - 1e-9) for s, n in zip(sparsity, windows) for _ in range(2)]
    assert _count_windows(m, torch.randn(2, 1, 28, 28)) == expected


def test_each_pair_of_blocks_runs_at_its_own_sparsity():
    """Swin-T's geometry: 64, 16, 4 and 1 windows; stage 3's three pairs at 25, 50 and 75%."""
    m = _swin_t_geometry()
    m.set_sparsity((0.5, 0.0, 0.25, 0.5, 0.75, 0.3))
    assert m.stage_sparsity == [(0.5,), (0.0,), (0.25, 0.5, 0.75), (0.3,)]
    assert _count_windows(m, torch.randn(1, 3, 224, 224)) == [32, 32, 16, 16, 3, 3, 2, 2, 1, 1, 1, 1]


def _swin_t_geometry():
    """A SparseViT with Swin-T's geometry (224 px, patch 4, window 7, depths (2, 2, 6, 2): stage maps 56,
    28, 14, 7, i.e. 64, 16, 4, 1 windows) but 16 channels, every parameter randomised."""
    torch.manual_seed(0)
    m = create_model("sparsevit_swin_tiny_patch4_window7_224", embed_dim=16, num_heads=(2, 2, 2, 2)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m


def _reference_stage(stage, x, pair_sparsity):
    """Brute force: the dense stage, each block's output taken only on the tokens of the windows selected
    on that block's own grid (rolled up-left by the shift for SW-MSA); every other token keeps the block's
    input. Scores (the official backbone): each token's mean |x| over channels, taken once per stage at
    the input of its first pruning block, zero on padding; a window's score is the L2 norm of its
    tokens'; the top ceil((1 - s) nW) windows of the block's grid are selected."""
    x = stage.downsample(x)
    magnitude = None
    for j, blk in enumerate(stage.blocks):
        B, H, W, _ = x.shape
        M, shift = effective_window((H, W), blk.attn.window_size, blk.attn.shift_size)
        Hp, Wp = -(-H // M) * M, -(-W // M) * M
        nW = (Hp // M) * (Wp // M)
        k = math.ceil((1 - pair_sparsity[j // 2]) * nW - 1e-9)
        dense = blk(x)
        if k == nW:
            x = dense
            continue
        if magnitude is None:
            magnitude = x.abs().mean(-1)                                   # (B, H, W)
        rows = ((torch.arange(H) - shift) % Hp) // M                       # the window of every position
        cols = ((torch.arange(W) - shift) % Wp) // M
        window = rows[:, None] * (Wp // M) + cols[None, :]                 # (H, W) on this block's grid
        scores = torch.zeros(B, nW).index_add_(1, window.flatten(), magnitude.flatten(1) ** 2).sqrt()
        selected = torch.zeros(B, nW, dtype=torch.bool).scatter_(1, scores.topk(k, dim=1).indices, True)
        x = torch.where(selected[:, window][..., None], dense, x)
    return x


@pytest.mark.parametrize("geometry,stage,sparsity", [
    ("nano", 0, 0.5), ("nano", 1, 0.5), ("swin_t", 0, 0.3), ("swin_t", 0, 0.5), ("swin_t", 0, 0.7),
    ("swin_t", 2, (0.25, 0.5, 0.75)), ("swin_t", 2, (0.0, 0.25, 0.75))])
def test_every_block_updates_exactly_the_windows_selected_on_its_own_grid(geometry, stage, sparsity):
    """Issue 23: a shifted block selects its own windows on the rolled map, so every token of a selected
    window, of either grid, gets the dense block's output, attention and MLP. (The nano's stage 1 is a
    padded 14x14 map; Swin-T's stage 3 has three block pairs, the second case with a dense first pair.)"""
    m = _swin_t_geometry() if geometry == "swin_t" else _pair()[1]
    x = m._embed(torch.randn(2, *((3, 224, 224) if geometry == "swin_t" else (1, 28, 28))))
    with torch.no_grad():
        for st in m.stages[:stage]:
            x = st(x)
        pairs = sparsity if isinstance(sparsity, tuple) else (sparsity,) * len(m.stages[stage].blocks)
        ref = _reference_stage(m.stages[stage], x, pairs)
        out = sparse_stage(m.stages[stage], x, sparsity)
    assert not torch.equal(ref, m.stages[stage](x))                         # something was pruned
    assert torch.allclose(out, ref, atol=1e-5, rtol=0), f"{(out - ref).abs().gt(1e-5).any(-1).sum()} tokens differ"


@pytest.mark.parametrize("mode", ["eval", "train_drop_path"])
def test_kept_windows_of_a_padded_map_equal_the_dense_block(mode):
    """Unshifted W-MSA is local to each window, so on a map that needs padding (14 -> 16) a kept
    window's output must equal the dense block's there: with LN + MLP on the real tokens only (eval; as
    training without drop path) and on every token (training with drop path, the branch a GPU always
    takes; the same seed draws the same per-sample drop as the dense call)."""
    from vitkit.models.sparsevit import select_windows, sparse_window_block, window_scores
    _, m = _pair()
    blk = m.stages[0].blocks[0].train(mode != "eval")                          # shift 0
    blk.drop_path2.p = 0.5 if mode == "train_drop_path" else 0.0
    x = m._embed(torch.randn(2, 1, 28, 28))                                    # (2, 14, 14, 32)
    pad = lambda t: torch.nn.functional.pad(t, (0, 0, 0, 2, 0, 2))
    idx = select_windows(window_scores(window_partition(pad(x), 4)), 6)        # (2, 6) of 16 windows
    try:
        with torch.no_grad():
            torch.manual_seed(1)
            dense = blk(x)
            torch.manual_seed(1)
            out = sparse_window_block(blk, x, idx)
    finally:
        blk.drop_path2.p = 0.0
    w_out, w_in = window_partition(pad(out), 4), window_partition(pad(x), 4)
    for b in range(2):
        pruned = sorted(set(range(16)) - set(idx[b].tolist()))
        assert torch.equal(w_out[b, pruned], w_in[b, pruned])
        w_dense = window_partition(pad(dense), 4)
        assert torch.allclose(w_out[b, idx[b]], w_dense[b, idx[b]], atol=1e-5)


def test_sparsity_is_one_per_pair_of_blocks_non_decreasing_within_a_stage():
    """The official search space: Swin-T's (2, 2, 6, 2) blocks have 1 + 1 + 3 + 1 knobs; one value per
    stage (or one float) is broadcast to the stage's pairs."""
    m = create_model("sparsevit_swin_tiny_patch4_window7_224", device="meta")
    assert m.pairs_per_stage == (1, 1, 3, 1) and m.num_pairs == 6 and m.num_stages == 4
    assert m.sparsity == (0.0,) * 6
    m.set_sparsity((0.3, 0.0, 0.1, 0.2, 0.2, 0.0))                             # per pair
    assert m.sparsity == (0.3, 0.0, 0.1, 0.2, 0.2, 0.0)
    assert m.stage_sparsity == [(0.3,), (0.0,), (0.1, 0.2, 0.2), (0.0,)]
    m.set_sparsity([0.6, 0.0, 0.4, 0.0])                                        # per stage, broadcast
    assert m.sparsity == (0.6, 0.0, 0.4, 0.4, 0.4, 0.0)
    m.set_sparsity(0.5)
    assert m.sparsity == (0.5,) * 6
    with pytest.raises(ValueError, match="non-decreasing within a stage"):
        m.set_sparsity((0.3, 0.0, 0.4, 0.2, 0.5, 0.0))
    with pytest.raises(ValueError, match=r"one sparsity per block pair \(6.*one sparsity per stage \(4\)"):
        m.set_sparsity((0.1,) * 5)
    cfg = SparseViTConfig(depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), sparsity=[0.7, 0.0, 0.2, 0.4, 0.5, 0.0])
    assert SparseViT(cfg).to("meta").sparsity == (0.7, 0.0, 0.2, 0.4, 0.5, 0.0)  # the official cfg3_33ms
    with pytest.raises(ValueError, match="non-decreasing"):
        SparseViTConfig(depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), sparsity=(0.0, 0.0, 0.5, 0.4, 0.5, 0.0))


def test_sparsity_validation_and_gradients():
    with pytest.raises(ValueError, match="one sparsity per stage"):
        create_model("sparsevit_swin_nano_patch2_window4_28", sparsity=(0.5,))
    m = create_model("sparsevit_swin_nano_patch2_window4_28", sparsity=(0.5, 0.5, 0.0), drop_path_rate=0.0)
    assert m.sparsity == (0.5, 0.5, 0.0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        m.set_sparsity((1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="1 input channel"):
        m(torch.randn(1, 3, 28, 28))
    m.train()(torch.randn(2, 1, 28, 28)).logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    with pytest.raises(ValueError, match="sparsity 0"):
        m.forward_intermediates(torch.randn(1, 1, 28, 28), return_attention=True)


class _Task:
    main_metric = ("acc", "max")

    def __init__(self):
        self.seen = []

    def loss(self, model, batch):
        model = getattr(model, "module", model)
        self.seen.append(model.sparsity)
        return model(batch[0]).mean(), {}

    def eval_metrics(self, model, batch):
        self.seen.append(model.sparsity)
        return {"count": 1}


def test_sampled_configs_are_sorted_uniform_draws_per_pair():
    """The official tools/train.py random_sample and tools/search.py sample: each pair drawn uniformly
    from the choices, then sorted within its stage."""
    choices = [i / 10 for i in range(9)]
    a, b = random.Random(3), random.Random(3)
    for _ in range(20):
        config = sample_sparsity((1, 1, 3, 1), choices, a)
        draws = [b.choice(choices) for _ in range(6)]
        assert config == (draws[0], draws[1], *sorted(draws[2:5]), draws[5])
    assert len(sample_sparsity(4)) == 4                                        # an int: one pair per stage
    stage3 = {sample_sparsity((1, 1, 3, 1), choices)[2:5] for _ in range(50)}
    assert any(len(set(c)) > 1 for c in stage3) and all(list(c) == sorted(c) for c in stage3)


def test_sparsity_aware_adaptation_samples_per_pair_each_step():
    m = create_model("sparsevit_swin_nano_patch2_window4_28")
    inner = _Task()
    task = SparsityAwareAdaptation(inner, choices=(0.0, 0.2, 0.4, 0.6), seed=1)
    batch = (torch.randn(1, 1, 28, 28), torch.zeros(1, dtype=torch.long))
    for _ in range(6):
        task.loss(m, batch)
    assert len(set(inner.seen)) > 1 and all(len(c) == 3 and set(c) <= {0.0, 0.2, 0.4, 0.6} for c in inner.seen)
    task.eval_metrics(m, batch)
    assert inner.seen[-1] == (0.0, 0.0, 0.0) and task.main_metric == ("acc", "max")
    a, b = SparsityAwareAdaptation(_Task(), seed=1), SparsityAwareAdaptation(_Task(), seed=1)
    assert a.rng.random() == b.rng.random()                                    # seeded
    tiny = _swin_t_geometry()                                                    # stage 3: three pairs
    task = SparsityAwareAdaptation(inner, seed=2)
    for _ in range(6):
        task.loss(tiny, (torch.randn(1, 3, 224, 224),))
        c = tiny.sparsity
        assert len(c) == 6 and list(c[2:5]) == sorted(c[2:5]) and set(c) <= set(task.choices)
    task = SparsityAwareAdaptation(inner, choices=(0.0, 0.2, 0.4, 0.6), seed=1)
    wrapped = torch.nn.Module()                                                  # as DDP: the model is .module
    wrapped.module = m
    task.loss(wrapped, batch)
    assert m.sparsity == task.last_sparsity


def _fake_table():
    # latency falls linearly with sparsity: pair i (one per stage, the nano) costs (i + 1) * 10 * (1 - s) ms,
    # plus 5 ms
    choices = [0.0, 0.2, 0.4, 0.6, 0.8]
    return {"choices": choices, "base_ms": 5.0, "pairs_per_stage": [1, 1, 1],
            "pair_ms": [[(i + 1) * 10 * (1 - s) for s in choices] for i in range(3)]}


def test_table_latency_adds_one_time_per_pair_and_takes_per_stage_configs():
    table = {"choices": [0.0, 0.5], "base_ms": 1.0, "pairs_per_stage": [1, 3],
             "pair_ms": [[8.0, 5.0], [4.0, 3.0], [2.0, 1.5], [1.0, 0.5]]}
    latency = table_latency_fn(table)
    assert latency((0.5, 0.0, 0.5, 0.5)) == pytest.approx(1 + 5 + 4 + 1.5 + 0.5)
    assert latency((0.5, 0.5)) == latency((0.5,) * 4) == latency(0.5) == pytest.approx(1 + 5 + 3 + 1.5 + 0.5)
    with pytest.raises(ValueError, match="not in the table's choices"):
        latency((0.3, 0.3))
    with pytest.raises(ValueError, match="per-pair latency table"):                # an earlier per-stage table
        table_latency_fn({"choices": [0.0], "base_ms": 1.0, "stage_ms": [[1.0]]})
    assert format_sparsity((0.3, 0.0, 0.1, 0.2, 0.2, 0.0), (1, 1, 3, 1)) == "30%/0%/10%,20%,20%/0%"
    assert format_sparsity((0.3, 0.0)) == "30%/0%"


@pytest.mark.parametrize("method", ["evolution", "random"])
def test_search_rejects_over_budget_and_returns_best_and_pareto(method):
    """On the nano model (its tests/models/test_sparsevit_search.py twin uses a synthetic model and table);
    with a population of 8, the evolution's later generations are mutations and crossovers."""
    m = create_model("sparsevit_swin_nano_patch2_window4_28", device="meta")
    latency = table_latency_fn(_fake_table())
    assert latency((0.0, 0.0, 0.0)) == pytest.approx(65.0) and latency((0.8, 0.8, 0.8)) == pytest.approx(17.0)
    evaluated = []

    def eval_fn(model):  # accuracy falls with sparsity, most in the first stage
        evaluated.append(model.sparsity)
        return 1.0 - sum(s * w for s, w in zip(model.sparsity, (0.3, 0.2, 0.1)))

    best, table = search(m, eval_fn, latency, budget_ms=40.0, n_samples=20, choices=_fake_table()["choices"],
                         method=method, population_size=8, num_parents=3)
    assert len(table) == len(evaluated) and m.sparsity == (0.0, 0.0, 0.0)     # restored
    assert len(table) == 20 if method == "random" else 8 < len(table) <= 20     # a converged evolution may stop
    assert all(r["latency_ms"] <= 40.0 for r in table)                         # rejected never evaluated
    assert all(latency(c) <= 40.0 for c in evaluated)
    assert best == max(table, key=lambda r: r["score"])["sparsity"]
    front = [r for r in table if r["pareto"]]
    assert front and all(not (o["latency_ms"] <= r["latency_ms"] and o["score"] > r["score"])
                         for r in front for o in table)
    scores = [r["score"] for r in front]                                       # sorted by latency: score rises
    assert scores == sorted(scores)
    assert "latency ms" in format_table(table) and len(format_table(table).splitlines()) == len(front) + 1
    with pytest.raises(ValueError, match="budget"):
        search(m, eval_fn, latency, budget_ms=10.0, n_samples=5, choices=_fake_table()["choices"])


def test_measured_latency_table_on_this_machine():
    m = create_model("sparsevit_swin_nano_patch2_window4_28")
    table = measure_latency_table(m, torch.randn(1, 1, 28, 28), choices=(0.0, 0.5), repeats=1)
    assert table["pairs_per_stage"] == [1, 1, 1]
    assert len(table["pair_ms"]) == 3 and all(len(r) == 2 and min(r) > 0 for r in table["pair_ms"])
    latency = table_latency_fn(table)
    assert latency((0.5, 0.0, 0.0)) > 0
    # end to end on the measured table: a budget between the fastest and the dense config
    loader = [(torch.randn(4, 1, 28, 28), torch.arange(4))]
    budget = (latency((0.5, 0.5, 0.5)) + latency((0.0, 0.0, 0.0))) / 2
    best, rows = search(m, accuracy_fn(loader), latency, budget, n_samples=3, choices=(0.0, 0.5))
    assert rows and all(r["latency_ms"] <= budget and 0 <= r["score"] <= 1 for r in rows) and len(best) == 3


def test_from_swin_starts_dense_in_the_source_dtype_and_mode():
    _, sparse = _pair()
    sparse.train().set_sparsity([0.5] * sparse.num_stages)
    again = SparseViT.from_swin(sparse.double())                     # a SparseViT at sparsity 0.5, in float64
    assert again.sparsity == (0.0,) * sparse.num_pairs and again.training
    assert next(again.parameters()).dtype == torch.float64
    # named as the registry names it (an export records this name), once
    assert sparse.cfg.name == again.cfg.name == "sparsevit_swin_nano_patch2_window4_28"


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_a_stage_with_nothing_to_prune_runs_dense_without_scoring(sparsity, monkeypatch):
    """Sparsity 0, or a map of one window at any sparsity (the nano's last stage): the Swin stage
    itself, and no window is scored."""
    import vitkit.models.sparsevit as sv
    _, m = _pair()
    x = m._embed(torch.randn(2, 1, 28, 28))
    for stage in m.stages[:-1]:
        x = stage(x)                                          # the last stage's input: a 2x2 map, one window
    monkeypatch.setattr(sv, "window_scores", lambda w: pytest.fail("scored windows with nothing to prune"))
    with torch.no_grad():
        assert torch.equal(sparse_stage(m.stages[-1], x, sparsity), m.stages[-1](x))
