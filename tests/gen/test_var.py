import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitkit.gen.sampling import cfg_logits
from vitkit.gen.var import VAR, block_causal_bias, guidance_scales, scale_levels
from vitkit.gen.task import GenerativeModel, GenerativeTask

V, C, NCLS = 12, 4, 5
SCALES = (1, 2, 3)


class FakeMultiScale(nn.Module):
    """A tiny multi-scale residual VQ (VAR's tokenizer) with a random codebook and 1x1-conv
    encoder/decoder, following the toolkit's tokenizer interface."""

    def __init__(self, scales=SCALES, codebook_size=V, embed_dim=C):
        super().__init__()
        self.scales, self.codebook_size, self.embed_dim = tuple(scales), codebook_size, embed_dim
        self.enc = nn.Conv2d(1, embed_dim, 1)
        self.dec = nn.Conv2d(embed_dim, 1, 1)
        self.codebook = nn.Parameter(torch.randn(codebook_size, embed_dim))
        self.side = self.scales[-1]

    def _up(self, ids):
        z = self.codebook[ids].permute(0, 3, 1, 2)
        return F.interpolate(z, size=(self.side, self.side), mode="bilinear", align_corners=False)

    def latent(self, images):
        return self.enc(F.interpolate(images, size=(self.side, self.side), mode="area"))

    def encode(self, images, return_latent=False):
        f = self.latent(images)
        f_hat, ids_list = torch.zeros_like(f), []
        for s in self.scales:
            r = F.interpolate(f - f_hat, size=(s, s), mode="area").permute(0, 2, 3, 1)
            ids = torch.cdist(r.flatten(1, 2), self.codebook[None]).argmin(-1).view(-1, s, s)
            ids_list.append(ids)
            f_hat = f_hat + self._up(ids)
        return (ids_list, f, f_hat) if return_latent else ids_list

    def step(self, f_hat, k, ids_k):
        f_hat = self._up(ids_k) if f_hat is None else f_hat + self._up(ids_k)
        if k + 1 == len(self.scales):
            return f_hat, None
        s = self.scales[k + 1]
        return f_hat, F.interpolate(f_hat, size=(s, s), mode="area").flatten(2).transpose(1, 2)

    def teacher_inputs(self, ids_list):
        f_hat, outs = None, []
        for k in range(len(self.scales) - 1):
            f_hat, nxt = self.step(f_hat, k, ids_list[k])
            outs.append(nxt)
        return torch.cat(outs, dim=1)

    def decode_latent(self, f_hat):
        return self.dec(f_hat)

    def decode_ids(self, ids_list):
        f_hat = None
        for k, ids in enumerate(ids_list):
            f_hat, _ = self.step(f_hat, k, ids)
        return self.decode_latent(f_hat)


def tiny(scales=SCALES, **kw):
    torch.manual_seed(0)
    return VAR(vocab_size=V, scales=scales, embed_dim=C, num_classes=NCLS, dim=32, depth=2, num_heads=4, **kw).eval()


def test_block_causal_bias_matches_brute_force():
    scales = (1, 2, 3)
    level = [0] + [1] * 4 + [2] * 9                            # written out by hand
    assert scale_levels(scales).tolist() == level
    expected = torch.empty(14, 14)
    for i in range(14):
        for j in range(14):
            expected[i, j] = 0.0 if level[j] <= level[i] else float("-inf")
    assert torch.equal(block_causal_bias(scales), expected)
    # spot checks: the start token sees only itself; scale 1 sees scales 0-1 incl. its own 4 tokens
    b = block_causal_bias(scales)
    assert torch.isfinite(b[0]).sum() == 1 and torch.isfinite(b[1]).sum() == 5 and torch.isfinite(b[13]).all()


def test_var_attention_is_block_causal_on_the_real_model():
    m = tiny()
    teacher, labels = torch.randn(2, 13, C), torch.tensor([1, 3])
    base = m(teacher, labels)
    for k in (1, 2):
        for p in range(*m.begin_ends[k]):                      # perturb one token of scale k
            t2 = teacher.clone()
            t2[:, p - m.first_l] += 1.0
            d = (m(t2, labels) - base).abs().amax(dim=(0, 2))
            lo, hi = m.begin_ends[k]
            assert torch.all(d[:lo] == 0), f"a token of scale {k} leaked into coarser scales"
            assert torch.all(d[lo:] > 1e-6), "a token must reach its own scale and every finer one"
    d = (m(teacher, torch.tensor([2, 4])) - base).abs().amax(dim=(0, 2))
    assert torch.all(d > 1e-6)                                 # the class token is seen by every scale


@pytest.mark.parametrize("sampling", [dict(), dict(cfg_scale=2.0, top_k=5, top_p=0.9),
                                      dict(cfg_scale=3.0, cfg_schedule="linear", temperature=0.7)])
def test_kv_cached_sampling_equals_uncached(sampling):
    m, tok = tiny((1, 2, 3, 4)).double(), FakeMultiScale((1, 2, 3, 4)).double()
    labels = torch.tensor([0, 2, 4, NCLS])
    a, fa, ha = m.generate_latent(tok, labels, use_cache=True, generator=torch.Generator().manual_seed(3), **sampling)
    b, fb, hb = m.generate_latent(tok, labels, use_cache=False, generator=torch.Generator().manual_seed(3), **sampling)
    c = m.generate(tok, labels, generator=torch.Generator().manual_seed(4), **sampling)
    assert [x.shape for x in a] == [(4, s, s) for s in (1, 2, 3, 4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert torch.allclose(fa, fb) and torch.allclose(ha, hb, atol=1e-10)
    assert not all(torch.equal(x, y) for x, y in zip(a, c))    # another seed, other tokens


def test_greedy_generation_is_the_teacher_forced_argmax():
    """Scale-by-scale greedy tokens equal the argmax of one teacher-forced pass on them: the cache,
    the tokenizer's step and its teacher inputs agree."""
    m, tok = tiny(), FakeMultiScale()
    labels = torch.tensor([0, 1, 2])
    ids_list = m.generate(tok, labels, temperature=0)
    logits = m(tok.teacher_inputs(ids_list), labels)
    assert torch.equal(logits.argmax(-1), m.flat_targets(ids_list))


def test_one_forward_pass_per_scale():
    m, tok = tiny(), FakeMultiScale()
    calls = []
    m.trunk.register_forward_hook(lambda *a: calls.append(1))
    m.generate(tok, torch.tensor([0, 1]), cfg_scale=1.5)
    assert len(calls) == len(SCALES) == m.last_forward_passes


def test_start_scale_larger_than_one():
    m, tok = tiny((2, 3)), FakeMultiScale((2, 3))
    ids = m.generate(tok, torch.tensor([1]), temperature=0)
    assert [x.shape for x in ids] == [(1, 2, 2), (1, 3, 3)]
    assert torch.equal(m(tok.teacher_inputs(ids), torch.tensor([1])).argmax(-1), m.flat_targets(ids))


def test_guidance_schedules():
    assert guidance_scales(2.0, 3, "constant") == [2.0, 2.0, 2.0]
    assert guidance_scales(3.0, 5, "linear") == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert guidance_scales(3.0, 1, "linear") == [1.0]             # one scale: VAR's ratio 0 / 0; no guidance
    with pytest.raises(ValueError):
        guidance_scales(2.0, 3, "cosine")


# ---- the guidance ramp of the official code (issue 23, item 6) --------------------------------------
@pytest.mark.parametrize("K", [2, 3, 6, 10])
@pytest.mark.parametrize("var_cfg", [0.5, 1.5, 4.0])
def test_linear_ramp_is_vars_autoregressive_infer_cfg(K, var_cfg):
    """FoundationVision/VAR models/var.py ``autoregressive_infer_cfg`` (as HART's): at scale si,
    ``ratio = si / num_stages_minus_1; t = cfg * ratio; logits = (1 + t) * cond - t * uncond``. vitkit's
    cfg_scale is s = 1 + t at the last scale: VAR's cfg=1.5 is cfg_scale 2.5 here."""
    scales = guidance_scales(1.0 + var_cfg, K, "linear")
    cond, uncond = torch.randn(3, 7, V, dtype=torch.double), torch.randn(3, 7, V, dtype=torch.double)
    for si in range(K):
        t = var_cfg * (si / (K - 1))
        assert scales[si] == pytest.approx(1.0 + t)
        assert torch.allclose(cfg_logits(cond, uncond, scales[si]), (1 + t) * cond - t * uncond)
    assert scales[0] == 1.0 and torch.allclose(cfg_logits(cond, uncond, scales[0]), cond)  # none at the first
    assert scales[-1] == pytest.approx(1.0 + var_cfg)                                   # full at the last


def test_var_and_hart_guide_with_the_linear_ramp_by_default(monkeypatch):
    import vitkit.gen.var as var_module
    from vitkit.gen.hart import HART
    used = []

    def spy(cond, uncond, scale):
        used.append(scale)
        return cfg_logits(cond, uncond, scale)

    monkeypatch.setattr(var_module, "cfg_logits", spy)
    scales = (1, 2, 3, 4)
    m, tok = tiny(scales), FakeMultiScale(scales)
    m.generate(tok, torch.tensor([0, 1]), cfg_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert used == pytest.approx([1.0, 1.0 + 2 / 3, 1.0 + 4 / 3, 3.0])
    assert guidance_scales.__defaults__ == ("linear",)
    torch.manual_seed(0)
    hart = HART(var=dict(vocab_size=V, scales=scales, embed_dim=C, num_classes=NCLS, dim=32, depth=2, num_heads=4),
                head_width=16, head_depth=1).eval()
    head_scales = []
    sample = hart.head.sample
    monkeypatch.setattr(hart.head, "sample", lambda *a, **k: head_scales.append(a[2]) or sample(*a, **k))
    used.clear()
    tok.code_vectors = lambda ids: tok.codebook[ids]                 # HART's head reads the codebook
    hart.generate(tok, torch.tensor([0, 1]), cfg_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert used == pytest.approx([1.0, 1.0 + 2 / 3, 1.0 + 4 / 3, 3.0]) and head_scales == [3.0]


def test_shape_and_tokenizer_checks():
    m = tiny()
    with pytest.raises(ValueError):
        m(torch.randn(1, 12, C))
    with pytest.raises(ValueError):
        m.generate(FakeMultiScale((1, 2, 4)), torch.tensor([0]))


def test_var_learns_a_fixed_batch_through_the_wrapper():
    tok = FakeMultiScale()
    model = GenerativeModel(tok, tiny(class_dropout=0.0)).train()
    task = GenerativeTask()
    images, labels = torch.randn(8, 1, 6, 6), torch.arange(8) % NCLS
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(60):
        loss, metrics = task.loss(model, (images, labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]
    sums = task.eval_metrics(model.eval(), (images, labels))
    assert sums["tokens"] == 8 * 14 and sums["count"] == 8
    out = task.summarize({k: float(v) for k, v in sums.items()})
    assert out["acc"] > 0.5 and abs(out["loss"] - out["nll"]) < 1e-6
    imgs = model.generate(labels[:2], cfg_scale=2.0)
    assert imgs.shape == (2, 1, 3, 3)
