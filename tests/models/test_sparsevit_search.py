"""SparseViT's resource-constrained search (Sec. 3.2; the official tools/search.py): the evolutionary
search against its random-search baseline at the same budget of evaluated configs, on a synthetic
accuracy with a known optimum and a synthetic per-pair latency table; the latency window; mutation and
crossover stay in the search space."""
import random

import pytest

from vitkit.models.sparsevit import (SPARSITY_CHOICES, check_sparsity, crossover, mutate, sample_sparsity, search,
                                     table_latency_fn)

PAIRS = (1, 1, 3, 1)                                   # Swin-T: 6 knobs, 9 * 9 * 165 * 9 = 120285 configs
CHOICES = list(SPARSITY_CHOICES)
OPTIMUM = (0.6, 0.2, 0.3, 0.5, 0.7, 0.1)               # non-decreasing within stage 3
WEIGHTS = (1.0, 3.0, 2.0, 2.0, 1.0, 4.0)


class _Model:
    """What the search needs of a SparseViT: ``pairs_per_stage``, ``sparsity``, ``set_sparsity``."""
    pairs_per_stage = PAIRS

    def __init__(self):
        self.sparsity = (0.0,) * 6

    def set_sparsity(self, sparsity):
        self.sparsity = check_sparsity(sparsity, PAIRS)


def _score(config) -> float:
    """Synthetic accuracy, highest (0) at OPTIMUM."""
    return -sum(w * (a - b) ** 2 for w, a, b in zip(WEIGHTS, config, OPTIMUM))


def _latency():
    """Pair p costs cost_p * (1 - 0.9 s) ms, plus 5 ms: dense 80 ms, OPTIMUM 49.76 ms."""
    cost = (30.0, 15.0, 8.0, 8.0, 8.0, 6.0)
    return table_latency_fn({"choices": CHOICES, "base_ms": 5.0, "pairs_per_stage": list(PAIRS),
                             "pair_ms": [[c * (1 - 0.9 * s) for s in CHOICES] for c in cost]})


def _run(method, seed, budget=200, window=(46.0, 53.0), evaluated=None, latency=None):
    model = _Model()

    def eval_fn(m):
        if evaluated is not None:
            evaluated.append(m.sparsity)
        return _score(m.sparsity)

    best, rows = search(model, eval_fn, latency or _latency(), window[1], budget, CHOICES, seed=seed, min_ms=window[0],
                        method=method, population_size=40, num_parents=10, mutation_prob=0.1)
    assert model.sparsity == (0.0,) * 6                                        # restored
    return best, rows


def test_evolution_finds_a_config_at_least_as_good_as_random_search_at_the_same_budget():
    latency = _latency()
    assert 46.0 <= latency(OPTIMUM) <= 53.0
    evo_found = random_found = 0
    for seed in range(5):
        (evo, evo_rows), (rnd, rnd_rows) = _run("evolution", seed), _run("random", seed)
        assert len(evo_rows) == len(rnd_rows) == 200                           # the same budget
        assert _score(evo) >= _score(rnd), (seed, evo, rnd)
        evo_found += _score(evo) == pytest.approx(0.0)
        random_found += _score(rnd) == pytest.approx(0.0)
    assert evo_found >= 4 and random_found == 0                                # one in ~1800 in-window configs


@pytest.mark.parametrize("method", ["evolution", "random"])
def test_every_config_respects_the_latency_window_and_the_non_decreasing_rule(method):
    latency, evaluated, timed = _latency(), [], []

    def measured(config):                                                       # as a slow, measured latency
        timed.append(tuple(config))
        return latency(config)

    best, rows = _run(method, seed=1, budget=120, window=(50.0, 52.0), evaluated=evaluated, latency=measured)
    assert len(timed) == len(set(timed)) > len(evaluated)                     # once per config seen
    assert len(rows) == len(evaluated) == len(set(evaluated)) <= 120         # each config evaluated once
    assert len(rows) == 120 if method == "random" else len(rows) > 40          # a converged evolution may stop
    for config in evaluated:                                                    # outside the window: never run
        assert 50.0 <= latency(config) <= 52.0
        assert check_sparsity(config, PAIRS) == config and list(config[2:5]) == sorted(config[2:5])
    assert all(50.0 <= r["latency_ms"] <= 52.0 for r in rows) and best in {r["sparsity"] for r in rows}
    assert best == max(rows, key=lambda r: (r["score"], -r["latency_ms"]))["sparsity"]


def test_an_empty_window_and_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match=r"latency budget \[90.0, 95.0\] ms.*slowest"):  # dense is 80 ms
        _run("evolution", seed=0, budget=5, window=(90.0, 95.0))
    with pytest.raises(ValueError, match="min_ms <= budget_ms"):
        _run("random", seed=0, window=(60.0, 50.0))
    with pytest.raises(ValueError, match="method"):
        search(_Model(), _score, _latency(), 60.0, 5, CHOICES, method="grid")
    with pytest.raises(ValueError, match="num_parents"):
        search(_Model(), _score, _latency(), 60.0, 5, CHOICES, population_size=4, num_parents=5)


def test_mutation_and_crossover_follow_the_official_searcher_and_stay_in_the_space():
    parent = (0.3, 0.0, 0.1, 0.2, 0.2, 0.0)
    assert mutate(parent, PAIRS, CHOICES, 0.0, random.Random(0)) == parent   # probability 0: the parent
    # probability 1: the fresh sample it draws first (sorted within stage 3)
    assert mutate(parent, PAIRS, CHOICES, 1.0, random.Random(5)) == sample_sparsity(PAIRS, CHOICES, random.Random(5))
    rng = random.Random(0)
    mutants = [mutate(parent, PAIRS, CHOICES, 0.1, rng) for _ in range(200)]
    changed = [sum(a != b for a, b in zip(m, parent)) for m in mutants]
    assert 0.3 < sum(c > 0 for c in changed) / 200 < 0.7                    # 1 - 0.9^6 (draws may repeat a value)
    low, high = (0.1,) * 6, (0.5,) * 6
    children = [crossover([low, high], PAIRS, rng) for _ in range(100)]
    assert crossover([parent, parent], PAIRS, rng) == parent
    for c in children + mutants:
        assert check_sparsity(c, PAIRS) == c                                  # non-decreasing within a stage
    assert {v for c in children for v in c} == {0.1, 0.5}
    assert all(set(c) <= {0.1, 0.5} for c in children)
