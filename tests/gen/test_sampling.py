import math

import pytest
import torch

from vitkit.gen.sampling import (cfg_logits, cosine_schedule, gumbel_noise, process_logits, sample_logits,
                                 top_k_filter, top_p_filter)


@pytest.mark.parametrize("k", [1, 3, 7, 49])
def test_top_k_keeps_exactly_the_k_largest(k):
    logits = torch.randn(5, 50)
    out = top_k_filter(logits, k)
    kept = torch.isfinite(out)
    assert torch.all(kept.sum(-1) == k)
    kth = logits.sort(-1, descending=True).values[:, k - 1:k]
    assert torch.equal(kept, logits >= kth)                     # no ties in randn: the k largest
    assert torch.equal(out[kept], logits[kept])                 # kept logits are untouched


def test_top_k_is_exact_under_ties_and_off_when_disabled():
    logits = torch.zeros(3, 10)                                 # all tied
    assert torch.all(torch.isfinite(top_k_filter(logits, 4)).sum(-1) == 4)
    x = torch.randn(2, 6)
    for k in (None, 0, 6, 100):
        assert torch.equal(top_k_filter(x, k), x)
    with pytest.raises(ValueError):
        top_k_filter(x, -2)


def test_top_p_hand_computed():
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])                # descending: 0.5, 0.3, 0.15, 0.05
    logits = probs.log()[None]
    kept = lambda p: set(torch.isfinite(top_p_filter(logits, p))[0].nonzero().flatten().tolist())  # noqa: E731
    assert kept(0.3) == {1}                                     # 0.5 >= 0.3 already
    assert kept(0.5) == {1}
    assert kept(0.75) == {1, 3}                                 # 0.5 + 0.3 = 0.8 >= 0.75
    assert kept(0.9) == {1, 3, 2}                               # 0.95 >= 0.9
    assert kept(0.99) == {0, 1, 2, 3}
    assert kept(1.0) == {0, 1, 2, 3}


@pytest.mark.parametrize("p", [0.1, 0.4, 0.7, 0.9, 0.97])
def test_top_p_keeps_the_smallest_set_with_mass_at_least_p(p):
    logits = torch.randn(8, 30) * 2
    keep = torch.isfinite(top_p_filter(logits, p))
    probs = logits.softmax(-1)
    for row in range(8):
        order = probs[row].argsort(descending=True).tolist()
        mass, expected = 0.0, set()
        for i in order:                                         # brute force: add tokens until mass >= p
            expected.add(i)
            mass += probs[row, i].item()
            if mass >= p:
                break
        assert set(keep[row].nonzero().flatten().tolist()) == expected
        kept_mass = probs[row][keep[row]].sum().item()
        smallest = probs[row][keep[row]].min().item()
        assert kept_mass >= p - 1e-6 and kept_mass - smallest < p + 1e-6   # minimal


def test_cfg_formula():
    c, u = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])
    assert torch.equal(cfg_logits(c, u, 3.0), torch.tensor([3.0, -2.0]))   # u + 3 (c - u)
    assert torch.equal(cfg_logits(c, u, 1.0), c)
    assert torch.equal(cfg_logits(c, u, 0.0), u)
    # VAR's (1 + t) c - t u is the same with s = 1 + t
    c, u = torch.randn(4, 9), torch.randn(4, 9)
    assert torch.allclose(cfg_logits(c, u, 1.5), 1.5 * c - 0.5 * u, atol=1e-6)


def test_sample_logits_greedy_seeded_and_distribution():
    logits = torch.randn(6, 11)
    ids, logp = sample_logits(logits, temperature=0)
    assert torch.equal(ids, logits.argmax(-1))
    assert torch.allclose(logp, logits.log_softmax(-1).max(-1).values)
    ids, _ = sample_logits(logits, temperature=1.0, top_k=1)
    assert torch.equal(ids, logits.argmax(-1))
    a = sample_logits(logits, generator=torch.Generator().manual_seed(3))[0]
    b = sample_logits(logits, generator=torch.Generator().manual_seed(3))[0]
    assert torch.equal(a, b)
    # empirical frequencies follow softmax(logits / T)
    probs = torch.tensor([0.6, 0.3, 0.1])
    draws, logp = sample_logits(probs.log().expand(20000, 3) * 2.0, temperature=2.0,
                                generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=3).float() / 20000
    assert torch.allclose(freq, probs, atol=0.015)
    assert torch.allclose(logp, probs.log()[draws], atol=1e-5)
    # sampled tokens always come from the filtered set
    ids, _ = sample_logits(torch.randn(200, 40), top_k=5, top_p=0.5, generator=torch.Generator().manual_seed(1))
    assert ids.shape == (200,)


def test_filters_apply_after_temperature():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    out = process_logits(logits, temperature=0.5, top_k=2)
    assert torch.equal(out, torch.tensor([[4.0, 2.0, float("-inf")]]))
    with pytest.raises(ValueError):
        process_logits(logits, temperature=0.0)


def test_cosine_schedule_and_gumbel():
    assert cosine_schedule(0.0) == 1.0 and abs(cosine_schedule(1.0)) < 1e-12
    assert math.isclose(cosine_schedule(0.5), math.cos(math.pi / 4))
    r = torch.linspace(0, 1, 11)
    assert torch.all(cosine_schedule(r)[1:] < cosine_schedule(r)[:-1])   # strictly decreasing
    g = gumbel_noise((100000,), torch.Generator().manual_seed(0))
    assert torch.isfinite(g).all() and abs(g.mean().item() - 0.5772) < 0.02   # Euler-Mascheroni
