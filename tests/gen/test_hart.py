import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitkit.gen.ar import ARTransformer
from vitkit.gen.hart import HART, ResidualDiffusionHead, cosine_alphas_cumprod, estimate_residual_scale
from vitkit.gen.task import GenerativeModel, GenerativeTask
from vitkit.gen.var import VAR

V, C, NCLS = 12, 4, 5
SCALES = (1, 2, 3)


class FakeHybrid(nn.Module):
    """A tiny hybrid tokenizer (HART's interface): multi-scale residual VQ of a 1x1-conv latent with a
    random codebook; the residual is the latent minus the discrete f_hat."""

    def __init__(self, scales=SCALES):
        super().__init__()
        self.scales, self.codebook_size, self.embed_dim, self.side = tuple(scales), V, C, scales[-1]
        self.enc, self.dec = nn.Conv2d(1, C, 1), nn.Conv2d(C, 1, 1)
        self.codebook = nn.Parameter(torch.randn(V, C))

    def _up(self, ids):
        return F.interpolate(self.codebook[ids].permute(0, 3, 1, 2), size=(self.side,) * 2, mode="bilinear")

    def encode_hybrid(self, images):
        f = self.enc(F.interpolate(images, size=(self.side,) * 2, mode="area"))
        f_hat, ids_list = torch.zeros_like(f), []
        for s in self.scales:
            r = F.interpolate(f - f_hat, size=(s, s), mode="area").permute(0, 2, 3, 1)
            ids_list.append(torch.cdist(r.flatten(1, 2), self.codebook[None]).argmin(-1).view(-1, s, s))
            f_hat = f_hat + self._up(ids_list[-1])
        return ids_list, f - f_hat

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

    def decode_latent(self, f):
        return self.dec(f)

    def code_vectors(self, ids):
        return self.codebook[ids]


def tiny(**kw):
    torch.manual_seed(0)
    var = dict(vocab_size=V, scales=SCALES, embed_dim=C, num_classes=NCLS, dim=32, depth=2, num_heads=4)
    return HART(var=var, head_width=32, head_depth=2, **kw).eval()


def test_cosine_schedule_values():
    ab = cosine_alphas_cumprod(1000)
    assert ab.shape == (1000,) and torch.all(ab[1:] < ab[:-1])
    assert abs(ab[0].item() - (1 - 4.1e-5)) < 1e-5 and ab[-1] < 1e-5   # Nichol & Dhariwal: ~1 -> ~0
    f = lambda t: torch.cos(torch.tensor((t / 1000 + 0.008) / 1.008 * torch.pi / 2)) ** 2  # noqa: E731
    assert torch.allclose(ab[499], f(500) / f(0), atol=1e-5)       # eq. 17 before the beta clip matters


def test_residual_head_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    head = ResidualDiffusionHead(C, 8, width=64, depth=2)
    cond = torch.randn(64, 8)
    x0 = torch.tanh(cond[:, :C] * 2) + 0.1 * cond[:, C:]           # residual tokens, a function of the condition
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3)
    losses = []
    for step in range(200):
        loss = head.loss(x0, cond, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert 0.7 < losses[0] < 1.3                                    # eps = 0 at init: MSE ~ E[eps^2] = 1
    assert sum(losses[-20:]) / 20 < 0.3 * losses[0]


@pytest.mark.parametrize("eta,steps", [(1.0, 8), (0.0, 8), (0.5, 3), (1.0, 1)])
def test_sampler_returns_the_point_mass_under_the_exact_eps(eta, steps):
    """For data = a single point x*, the optimal eps(x_t, t) = (x_t - sqrt(ab_t) x*) / sqrt(1 - ab_t);
    any correct DDPM / DDIM update then lands exactly on x*."""
    target = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.double)   # float64: 1 / sqrt(ab_999) ~ 640

    class Oracle(ResidualDiffusionHead):
        def forward(self, x, t, cond):
            ab = self.alphas_cumprod[t][:, None]
            return (x - ab.sqrt() * target) / (1 - ab).sqrt()

    head = Oracle(C, 8, width=16, depth=1).double()
    out = head.sample(torch.randn(5, 8, dtype=torch.double), steps=steps, eta=eta, clip_x0=None,
                      generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, target.expand(5, -1), atol=1e-9)
    assert head.sampling_timesteps(8) == [999, 856, 714, 571, 428, 285, 143, 0]   # round(999 - 999 i / 7)


def test_sampler_guidance_formula():
    """With cond/uncond eps constant, one DDIM step (ab_prev = 1) returns x0 from eps_u + s (eps_c - eps_u)."""
    class Const(ResidualDiffusionHead):
        def forward(self, x, t, cond):
            return cond[:, :C].expand_as(x)                         # eps = a function of the condition only

    head = Const(C, C, width=16, depth=1)
    c, u = torch.full((2, C), 0.3), torch.full((2, C), -0.1)
    g = torch.Generator().manual_seed(0)
    x = head.sample(c, u, cfg_scale=2.0, steps=1, clip_x0=None, generator=g)
    noise = torch.randn(2, C, generator=torch.Generator().manual_seed(0))
    ab = head.alphas_cumprod[999]
    eps = u + 2.0 * (c - u)
    assert torch.allclose(x, (noise - (1 - ab).sqrt() * eps) / ab.sqrt(), atol=1e-4)


def test_hart_loss_trains_both_parts_and_generation_shapes():
    m, tok = tiny().train(), FakeHybrid()
    model = GenerativeModel(tok, m).train()
    images, labels = torch.randn(4, 1, 6, 6), torch.tensor([0, 1, 2, 3])
    loss, metrics = model(images, labels)
    loss.backward()
    assert {"loss", "nll", "acc", "tokens", "diff"} <= set(metrics)
    assert torch.allclose(loss, metrics["nll"] + metrics["diff"])
    assert m.head.out.weight.grad.abs().sum() > 0 and m.var.trunk.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert m.var.word_embed.weight.grad is not None                 # the head's condition trains word_embed too
    ids, f_hat, residual = m.generate(tok, labels, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert [x.shape for x in ids] == [(4, s, s) for s in SCALES]
    assert f_hat.shape == residual.shape == (4, C, 3, 3) and torch.isfinite(residual).all()
    assert m.last_forward_passes == len(SCALES) and m.last_head_passes == 8
    assert model.generate(labels[:2]).shape == (2, 1, 3, 3)


def test_hart_cached_equals_uncached_and_residual_depends_on_the_tokens():
    m, tok = tiny().double(), FakeHybrid().double()
    labels = torch.tensor([0, 3, NCLS])
    a = m.generate(tok, labels, cfg_scale=1.5, top_k=6, generator=torch.Generator().manual_seed(1))
    b = m.generate(tok, labels, cfg_scale=1.5, top_k=6, use_cache=False, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0]))
    assert torch.allclose(a[1], b[1]) and torch.allclose(a[2], b[2], atol=1e-8)
    # the head's condition includes each position's discrete token (as HART): change one, the condition moves
    h = torch.randn(1, 9, 32, dtype=torch.double)
    ids = torch.zeros(1, 3, 3, dtype=torch.long)
    ids2 = ids.clone()
    ids2[0, 1, 1] = 5
    d = (m.head_condition(h, tok, ids) - m.head_condition(h, tok, ids2)).abs().amax(-1)
    assert d[0, 4] > 0 and (d[0, torch.arange(9) != 4] == 0).all()


def test_residual_scale_and_checks():
    tok = FakeHybrid()
    images = torch.randn(16, 1, 6, 6)
    s = estimate_residual_scale(tok, images)
    assert abs(s - tok.encode_hybrid(images)[1].std().item()) < 1e-6
    m = tiny(residual_scale=s)
    r = torch.randn(2, C, 3, 3)
    assert torch.allclose(m.residual_tokens(r), r.flatten(2).transpose(1, 2) / s)
    with pytest.raises(ValueError):
        m.residual_tokens(torch.randn(2, C, 4, 4))
    with pytest.raises(ValueError):
        tiny(residual_scale=0.0)


def test_eval_is_deterministic_and_reports_the_residual_loss():
    model, task = GenerativeModel(FakeHybrid(), tiny()).eval(), GenerativeTask()
    batch = (torch.randn(3, 1, 6, 6), torch.tensor([0, 1, 2]))
    a, b = task.eval_metrics(model, batch), task.eval_metrics(model, batch)
    assert all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a)
    out = task.summarize({k: float(v) for k, v in a.items()})
    assert {"loss", "nll", "acc", "diff"} <= set(out) and abs(out["loss"] - out["nll"] - out["diff"]) < 1e-5


# ---- integration with the toolkit's real tokenizers (untrained, tiny) ------------------------------
@pytest.mark.parametrize("kind", ["ar", "var", "hart"])
def test_generators_with_the_real_tokenizers(kind):
    from vitkit.gen import HybridTokenizer, MultiScaleVQTokenizer, VQTokenizer
    torch.manual_seed(0)
    common = dict(in_chans=1, img_size=8, channels=(8, 8), embed_dim=4, codebook_size=16)  # 4x4 latent
    if kind == "ar":
        tok = VQTokenizer(**common)
        gen = ARTransformer(vocab_size=tok.codebook_size, grid=tok.grid, num_classes=3, order="random",
                            dim=32, depth=2, num_heads=4)
    else:
        tok = (MultiScaleVQTokenizer if kind == "var" else HybridTokenizer)(**common)
        var = dict(vocab_size=tok.codebook_size, scales=tok.scales, embed_dim=tok.embed_dim, num_classes=3,
                   dim=32, depth=2, num_heads=4)
        gen = VAR(**var) if kind == "var" else HART(var=var, head_width=32, head_depth=1)
    model = GenerativeModel(tok, gen).train()
    images, labels = torch.randn(2, 1, 8, 8), torch.tensor([0, 2])
    loss, _ = GenerativeTask().loss(model, (images, labels))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None for p in tok.parameters())
    assert model.generate(labels, cfg_scale=2.0, top_k=8).shape == images.shape
    if kind != "ar":   # the real step() and teacher_inputs() agree with the cached generation
        v = gen if kind == "var" else gen.var
        model.eval()
        ids = v.generate(tok, labels, temperature=0)
        assert torch.equal(v(tok.teacher_inputs(ids), labels).argmax(-1), v.flat_targets(ids))


# ---- HART's residual head as its code has it (issue 23, item 8): mit-han-lab/hart
# hart/modules/models/transformer/hart_transformer_t2i.py, HARTForT2I.forward and autoregressive_infer_cfg.
def test_head_condition_is_decoder_norm_of_h_plus_word_embed_of_the_code_vector():
    """``last_layer_cond = decoder_norm(last_layer_cond + word_embed(vae_quant_proxy[0].embedding(idx)))``:
    the token enters through the tokenizer's code vector and the transformer's own word_embed (no table
    of its own)."""
    m, tok = tiny(), FakeHybrid()
    h, ids = torch.randn(2, 9, 32), torch.randint(0, V, (2, 3, 3))
    direct = m.cond_norm(h + m.var.word_embed(tok.codebook[ids.flatten(1)]))
    assert torch.allclose(m.head_condition(h, tok, ids), direct, atol=1e-6)
    assert not any("token_embed" in k for k in m.state_dict())


def _captured_head_inputs(model, monkeypatch):
    """(x0, cond) of the first batch_mul copy the head's loss was called with."""
    seen = {}

    def spy(x0, cond, generator=None):
        n = x0.shape[0] // model.generator.cfg.batch_mul
        seen.update(x0=x0[:n].detach(), cond=cond[:n].detach())
        return x0.sum() * 0
    monkeypatch.setattr(model.generator.head, "loss", spy)
    return seen


@pytest.mark.parametrize("target", ["gt", "sampled"])
def test_residual_target(target, monkeypatch):
    """"gt" (vitkit's default): the ground-truth tokens condition the head, the target is the tokenizer's
    residual. "sampled" (HART's forward): tokens drawn from the transformer's own last-scale logits
    (``sample_with_top_k_top_p_(..., top_k=600, top_p=0.96)``, no gradient) condition it, and the target
    is what they leave: ``last_layer_gt - embedding(idx_sampled)`` with last_layer_gt the latent minus
    the coarser scales (here the last scale enters f_hat as ``tokenizer.step``'s h_K, through phi)."""
    from vitkit.gen.sampling import sample_logits
    torch.manual_seed(0)
    tok, m = FakeHybrid(), tiny(residual_target=target, residual_scale=0.5)
    model = GenerativeModel(tok, m).eval()                          # eval: the loss draws from a Generator seeded 0
    seen = _captured_head_inputs(model, monkeypatch)
    images, labels = torch.randn(4, 1, 6, 6), torch.tensor([0, 1, 2, 3])
    model(images, labels)
    ids_list, residual = tok.encode_hybrid(images)
    with torch.no_grad():
        h = m.var.forward_hidden(tok.teacher_inputs(ids_list), labels)[:, -9:]
        if target == "gt":
            ids, x0 = ids_list[-1], residual
        else:
            logits = m.var.head(h)
            ids = sample_logits(logits, 1.0, 600, 0.96, torch.Generator().manual_seed(0))[0].view(4, 3, 3)
            rest = residual + tok.step(None, 2, ids_list[-1])[0]        # the latent minus scales 1..K-1
            x0 = rest - tok.step(None, 2, ids)[0]
            assert not torch.equal(ids, ids_list[-1])                 # an untrained model samples other tokens
        cond = m.head_condition(h, tok, ids)
    assert torch.allclose(seen["x0"], (x0 / 0.5).flatten(2).transpose(1, 2).flatten(0, 1), atol=1e-5)
    assert torch.allclose(seen["cond"], cond.flatten(0, 1), atol=1e-5)
    with pytest.raises(ValueError, match="residual_target"):
        tiny(residual_target="teacher")
