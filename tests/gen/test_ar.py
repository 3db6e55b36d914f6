import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitkit.gen.ar import ARTransformer, causal_bias, class_tokens
from vitkit.layers.attention import Attention, KVCache
from vitkit.gen.sampling import cfg_logits
from vitkit.gen.task import GenerativeModel, GenerativeTask

V, GRID, NCLS = 16, (3, 4), 5
N = GRID[0] * GRID[1]


def tiny(order, **kw):
    torch.manual_seed(0)
    return ARTransformer(vocab_size=V, grid=GRID, num_classes=NCLS, order=order, dim=32, depth=2, num_heads=4,
                         **kw).eval()


def changed_positions(model, ids, labels, pos, **kw):
    """Max |logit change| per raster position when token ``pos`` of every sample is replaced."""
    base = model(ids, labels, **kw)
    ids2 = ids.clone().flatten(1)
    ids2[:, pos] = (ids2[:, pos] + 1) % V
    return (model(ids2.view_as(ids), labels, **kw) - base).abs().amax(dim=(0, 2))   # (N,)


@pytest.mark.parametrize("chunks", [[1] * 7, [3, 1, 2, 1]])
def test_attention_kv_cache_equals_causal_attention(chunks):
    """Feeding tokens chunk by chunk through a KVCache (no mask) = one causal pass when each chunk
    is a single token; with a block-causal mask when chunks are longer (VAR's case)."""
    attn = Attention(32, num_heads=4).eval()
    x = torch.randn(2, 7, 32)
    ends = torch.tensor(chunks).cumsum(0).tolist()
    block = torch.cat([torch.full((n,), i) for i, n in enumerate(chunks)])
    bias = torch.zeros(7, 7).masked_fill(block[None] > block[:, None], float("-inf"))
    full = attn(x, attn_bias=bias)
    cache, outs = KVCache(), []
    for lo, hi in zip([0] + ends[:-1], ends):
        outs.append(attn(x[:, lo:hi], kv_cache=cache))
        assert len(cache) == hi
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-6)
    with pytest.raises(ValueError):
        attn(torch.randn(3, 1, 32), kv_cache=cache)          # another batch: a clear error
    with pytest.raises(ValueError):
        attn(torch.randn(2, 2, 3, 32), kv_cache=KVCache())   # windows / groups cannot be cached


def test_causal_bias_is_strictly_lower_triangular():
    b = causal_bias(4)
    for i in range(4):
        for j in range(4):
            assert b[i, j] == (0.0 if j <= i else float("-inf"))


def test_raster_attention_is_strictly_causal():
    m = tiny("raster")
    ids, labels = torch.randint(0, V, (2, *GRID)), torch.tensor([1, 3])
    for j in range(N):
        d = changed_positions(m, ids, labels, j)
        assert torch.all(d[:j + 1] == 0), f"token {j} leaked into positions <= {j}: {d[:j + 1]}"
        if j + 1 < N:
            assert torch.all(d[j + 1:] > 1e-6), f"token {j} does not reach every later position: {d}"


def test_random_order_is_causal_in_permutation_order():
    m = tiny("random")
    ids, labels = torch.randint(0, V, (2, *GRID)), torch.tensor([0, 4])
    perm = m.random_orders(1, torch.Generator().manual_seed(5)).expand(2, -1)
    assert not torch.equal(perm[0], torch.arange(N))
    for j in range(N):
        d = changed_positions(m, ids, labels, int(perm[0, j]), perm=perm)
        assert torch.all(d[perm[0, :j + 1]] == 0)              # positions generated up to and at step j
        if j + 1 < N:
            assert torch.all(d[perm[0, j + 1:]] > 1e-6)        # every later step sees it


def test_random_order_input_carries_the_next_position():
    """sigma-GPT: the logits predicted at slot t depend on which position sigma(t) is asked for."""
    m = tiny("random")
    ids, labels = torch.randint(0, V, (1, *GRID)), torch.tensor([2])
    p1 = torch.arange(N)[None]
    p2 = p1.clone()
    p2[0, [0, 1]] = p2[0, [1, 0]]                              # swap the first two targets
    a, b = m(ids, labels, perm=p1), m(ids, labels, perm=p2)
    assert not torch.allclose(a[:, 0], b[:, 1])                # different targets, different predictions


def test_masked_order_is_bidirectional():
    m = tiny("masked")
    ids, labels = torch.randint(0, V, (2, *GRID)), torch.tensor([1, 3])
    mask = torch.zeros(2, N, dtype=torch.bool)
    d = changed_positions(m, ids, labels, N - 1, mask=mask)
    assert torch.all(d > 1e-6)                                 # the last token reaches the first


@pytest.mark.parametrize("order", ["raster", "random"])
@pytest.mark.parametrize("sampling", [dict(), dict(cfg_scale=2.5, top_k=6, top_p=0.9, temperature=0.8)])
def test_kv_cached_sampling_equals_uncached(order, sampling):
    m = tiny(order).double()
    labels = torch.tensor([0, 1, 4, NCLS])                     # NCLS = the null class: unconditional
    a = m.generate(labels, use_cache=True, generator=torch.Generator().manual_seed(7), **sampling)
    b = m.generate(labels, use_cache=False, generator=torch.Generator().manual_seed(7), **sampling)
    c = m.generate(labels, use_cache=True, generator=torch.Generator().manual_seed(8), **sampling)
    assert a.shape == (4, *GRID) and a.dtype == torch.long
    assert torch.equal(a, b)
    assert not torch.equal(a, c)                               # the seed matters: the test can tell


@pytest.mark.parametrize("order", ["raster", "random"])
def test_greedy_generation_is_the_teacher_forced_argmax(order):
    """Each greedy token is the argmax of the teacher-forced logits on the generated sequence."""
    m = tiny(order).double()
    labels = torch.tensor([1, 2])
    g = torch.Generator().manual_seed(0)
    ids = m.generate(labels, temperature=0, generator=g)
    if order == "random":                                      # regenerate the same sigma
        perm = m.random_orders(2, torch.Generator().manual_seed(0))
        logits = m(ids, labels, perm=perm)
    else:
        logits = m(ids, labels)
    assert torch.equal(logits.argmax(-1), ids.flatten(1))


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_masked_one_step_greedy_equals_one_pass_argmax(cfg_scale):
    m = tiny("masked")
    labels = torch.tensor([0, 2, 4])
    out = m.generate(labels, temperature=0, steps=1, cfg_scale=cfg_scale)
    all_masked = torch.ones(3, N, dtype=torch.bool)
    dummy = torch.zeros(3, *GRID, dtype=torch.long)
    logits = m(dummy, labels, mask=all_masked)
    if cfg_scale != 1.0:
        logits = cfg_logits(logits, m(dummy, torch.full((3,), NCLS), mask=all_masked), cfg_scale)
    assert torch.equal(out.flatten(1), logits.argmax(-1))
    assert m.last_forward_passes == 1


@pytest.mark.parametrize("choice_temperature", [0.0, 4.5])
def test_masked_decoding_follows_the_cosine_schedule(choice_temperature):
    m, T = tiny("masked"), 5
    seen = []
    hook = m.tok_embed.register_forward_hook(lambda mod, inp, out: seen.append((inp[0] == m.mask_id).sum(1)))
    ids = m.generate(torch.tensor([1, 2]), steps=T, choice_temperature=choice_temperature,
                     generator=torch.Generator().manual_seed(0))
    hook.remove()
    expected = [N] + [max(1, math.floor(N * math.cos(math.pi / 2 * (t + 1) / T))) for t in range(T - 1)]
    assert [int(s[0]) for s in seen] == expected and all(torch.all(s == s[0]) for s in seen)
    assert (ids != m.mask_id).all() and ids.max() < V and m.last_forward_passes == T


@pytest.mark.parametrize("order,passes", [("raster", N), ("random", N), ("masked", 4)])
def test_forward_passes_are_counted(order, passes):
    m = tiny(order)
    calls = []
    m.trunk.register_forward_hook(lambda *a: calls.append(1))
    m.generate(torch.tensor([0, 1]), steps=4, cfg_scale=2.0)
    assert len(calls) == passes == m.last_forward_passes


def test_masked_loss_scores_only_the_masked_tokens():
    m = tiny("masked")
    ids, labels = torch.randint(0, V, (4, *GRID)), torch.tensor([0, 1, 2, 3])
    loss, met = m.loss(ids, labels, generator=torch.Generator().manual_seed(1))
    mask = m.random_mask(4, torch.Generator().manual_seed(1))
    logits = m(ids, labels, mask=mask)
    expected = F.cross_entropy(logits[mask], ids.flatten(1)[mask])
    assert torch.allclose(loss, expected, atol=1e-6) and met["tokens"] == mask.sum()
    n = mask.sum(1).float()
    assert torch.all(n >= 1) and torch.all(n <= N)


def test_class_tokens_null_and_label_dropout():
    assert torch.equal(class_tokens(None, 3, 7, 0.0, False, torch.device("cpu")), torch.full((3,), 7))
    lab = torch.zeros(20000, dtype=torch.long)
    dropped = (class_tokens(lab, 20000, 7, 0.25, True, torch.device("cpu")) == 7).float().mean()
    assert abs(dropped.item() - 0.25) < 0.02
    assert torch.equal(class_tokens(lab, 20000, 7, 0.25, False, torch.device("cpu")), lab)  # eval: no dropout
    with pytest.raises(ValueError):
        class_tokens(torch.tensor([8]), 1, 7, 0.0, False, torch.device("cpu"))


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        ARTransformer(vocab_size=V, grid=GRID, order="zigzag")
    with pytest.raises(ValueError):
        tiny("raster")(torch.zeros(1, 4, 4, dtype=torch.long))


@pytest.mark.parametrize("order", ["raster", "random", "masked"])
def test_loss_falls_on_a_fixed_batch(order):
    m = tiny(order, class_dropout=0.0).train()
    ids, labels = torch.randint(0, V, (8, *GRID)), torch.arange(8) % NCLS
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        loss, _ = m.loss(ids, labels, generator=torch.Generator().manual_seed(step % 4))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > math.log(V) - 0.3                       # starts near chance
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]


# ---- the training wrapper, with a tiny fake VQ tokenizer -----------------------------------------
class FakeVQ(nn.Module):
    """Nearest-code VQ of a 1x1-conv latent on a (3, 4) grid, random codebook; has BatchNorm and a
    train-mode side effect so the tests can see the wrapper keeps it frozen."""

    codebook_size, grid, embed_dim = V, GRID, 4

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(1, 4, 1)
        self.bn = nn.BatchNorm2d(4)
        self.codebook = nn.Parameter(torch.randn(V, 4))
        self.dec = nn.Conv2d(4, 1, 1)

    def encode(self, images):
        z = self.bn(self.enc(F.interpolate(images, size=GRID, mode="area")))     # (B, C, h, w)
        d = torch.cdist(z.permute(0, 2, 3, 1).flatten(1, 2), self.codebook[None])
        return d.argmin(-1).view(images.shape[0], *GRID)

    def decode_ids(self, ids):
        return self.dec(self.codebook[ids].permute(0, 3, 1, 2))


def test_wrapper_freezes_the_tokenizer_and_trains_the_generator():
    tok = FakeVQ()
    model = GenerativeModel(tok, tiny("raster")).train()
    assert not tok.training and not any(p.requires_grad for p in tok.parameters())
    stats = tok.bn.running_mean.clone()
    images, labels = torch.randn(4, 1, 6, 8), torch.tensor([0, 1, 2, 3])
    loss, metrics = GenerativeTask().loss(model, (images, labels))
    loss.backward()
    assert torch.equal(tok.bn.running_mean, stats)             # eval mode: BN statistics untouched
    assert all(p.grad is None for p in tok.parameters())
    assert all(p.grad is not None for p in model.generator.parameters())
    assert set(metrics) == {"loss", "nll", "acc"}
    assert "generator.pos_embed" in model.no_weight_decay()


@pytest.mark.parametrize("order", ["raster", "masked"])
def test_task_eval_metrics_sum_token_nll(order):
    model = GenerativeModel(FakeVQ(), tiny(order)).eval()
    task = GenerativeTask()
    images, labels = torch.randn(3, 1, 6, 8), torch.tensor([0, 1, 2])
    sums = task.eval_metrics(model, (images, labels))
    again = task.eval_metrics(model, (images, labels))
    assert all(torch.equal(torch.as_tensor(sums[k]), torch.as_tensor(again[k])) for k in sums)  # deterministic
    ids = model.tokenizer.encode(images)
    mask = model.generator.random_mask(3, torch.Generator().manual_seed(0)) if order == "masked" else None
    logits = model.generator(ids, labels, mask=mask)
    nll = F.cross_entropy(logits.detach().transpose(1, 2), ids.flatten(1), reduction="none")
    w = torch.ones_like(nll) if mask is None else mask.float()
    assert torch.allclose(sums["nll_sum"].float(), (nll * w).sum(), rtol=1e-5)
    assert sums["tokens"] == w.sum() and sums["count"] == 3
    summary = task.summarize({k: float(v) for k, v in sums.items()})
    assert math.isclose(summary["nll"], float((nll * w).sum() / w.sum()), rel_tol=1e-5)


def test_wrapper_generates_images_and_restores_mode():
    model = GenerativeModel(FakeVQ(), tiny("random")).train()
    imgs = model.generate(torch.tensor([1, 2]), cfg_scale=1.5, generator=torch.Generator().manual_seed(0))
    assert imgs.shape == (2, 1, *GRID) and model.training and not model.tokenizer.training
