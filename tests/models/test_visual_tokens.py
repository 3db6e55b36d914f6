"""Visual Transformer: tokens are convex combinations of pixels (eqs. 1-2), the projector is a residual
read-back of the tokens (eq. 4), the model wires them as the paper does, API and input checks, and a
tiny VT learns the 8x8 digits."""
import dataclasses
import time

import pytest
import torch

from vitkit import create_model
from vitkit.models.visual_tokens import FilterTokenizer, Projector, RecurrentTokenizer, VTConfig
from vitkit.train import TrainConfig, fit
from vitkit.train.run import build_run


def _check_convex(tokens, weights, x):
    """weights (B, L, HW) are a softmax over the pixels and tokens = weights @ pixels."""
    assert (weights >= 0).all()
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:2]), atol=1e-6)
    assert torch.allclose(tokens, weights @ x, atol=1e-5)
    # a convex combination stays inside the pixels' range, channel by channel
    lo, hi = x.min(dim=1, keepdim=True).values, x.max(dim=1, keepdim=True).values
    assert (tokens >= lo - 1e-5).all() and (tokens <= hi + 1e-5).all()


def test_filter_tokenizer_pools_pixels_with_a_softmax_over_space(sdpa_path):
    torch.manual_seed(0)
    tok = FilterTokenizer(8, 4)
    torch.nn.init.normal_(tok.w_a.weight)                               # sharp enough to be far from uniform
    x = torch.randn(2, 12, 8)                                           # X: (B, HW, C)
    t, a = tok(x, return_attention=True)
    assert t.shape == (2, 4, 8) and a.shape == (2, 4, 12)
    _check_convex(t, a, x)
    # eq. 1 by hand: A = softmax_HW(X W_A) (attend's 1/sqrt(C) only rescales W_A); T = A^T X
    want_a = ((x @ tok.w_a.weight.T) * 8 ** -0.5).softmax(dim=1).transpose(1, 2)
    assert torch.allclose(a, want_a, atol=1e-6)
    assert torch.allclose(tok(x), t, atol=1e-5)                         # the SDPA path agrees
    assert a.max() > 0.3                                                # not a plain average pool


def test_recurrent_tokenizer_reads_its_filters_from_the_previous_tokens():
    torch.manual_seed(0)
    tok = RecurrentTokenizer(8)
    torch.nn.init.normal_(tok.w_tr.weight)
    x, t_in = torch.randn(2, 12, 8), torch.randn(2, 4, 8)
    t, a = tok(x, t_in, return_attention=True)
    assert t.shape == (2, 4, 8)
    _check_convex(t, a, x)
    w_r = t_in @ tok.w_tr.weight.T                                      # eq. 2: W_R = T_in W_{T->R}
    assert torch.allclose(a, ((x @ w_r.transpose(1, 2)) * 8 ** -0.5).softmax(dim=1).transpose(1, 2), atol=1e-6)
    assert not torch.allclose(tok(x, torch.randn(2, 4, 8)), t)          # other tokens in -> other filters


def test_projector_adds_a_softmax_read_of_the_tokens_to_every_pixel():
    torch.manual_seed(0)
    proj = Projector(8)
    x, t = torch.randn(2, 12, 8), torch.randn(2, 4, 8)
    out = proj(x, t)
    assert out.shape == x.shape
    q, k = x @ proj.w_q.weight.T, t @ proj.w_k.weight.T                 # eq. 4 by hand
    want = x + ((q @ k.transpose(1, 2)) * 8 ** -0.5).softmax(dim=-1) @ t
    assert torch.allclose(out, want, atol=1e-5)
    with torch.no_grad():
        proj.w_q.weight.zero_()                                         # uniform weights over the L tokens:
    assert torch.allclose(proj(x, t), x + t.mean(dim=1, keepdim=True), atol=1e-6)   # X + mean(T)


def test_vt_modules_are_wired_as_in_the_paper():
    m = create_model("vt_resnet_nano_28").eval()
    mods = m.vt_modules
    assert isinstance(mods[0].tokenizer, FilterTokenizer) and isinstance(mods[1].tokenizer, RecurrentTokenizer)
    assert mods[0].projector is not None and mods[1].projector is None  # the last map would feed nothing
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        inter = m.forward_intermediates(x, return_attention=True)
        fmap = m.feature_map(x)
        assert fmap.shape == (2, 64, 14, 14) and torch.equal(inter["feature_maps"][0], fmap)
        pix = fmap.flatten(2).transpose(1, 2)
        hs = inter["hidden_states"]
        assert len(hs) == 3 and all(h.shape == (2, 8, 64) for h in hs)
        assert torch.allclose(hs[0], mods[0].tokenizer(pix), atol=1e-5)            # eq. 1 on the stem's map
        assert torch.allclose(hs[1], mods[0].blocks[0](hs[0]), atol=1e-5)          # transformer over tokens
        pix1 = mods[0].projector(pix, hs[1])                                         # eq. 4 updates the map
        assert torch.allclose(inter["feature_maps"][1], pix1.transpose(1, 2).reshape(2, 64, 14, 14), atol=1e-5)
        assert torch.allclose(hs[2], mods[1].blocks[0](mods[1].tokenizer(pix1, hs[1])), atol=1e-5)   # eq. 2
        assert torch.allclose(inter["features"], m.norm(hs[2]), atol=1e-6)
        logits = m(x)
        assert logits.shape == (2, 10)
        assert torch.allclose(logits, m.head(inter["features"].mean(1)), atol=1e-5)  # pooled tokens -> head
        assert len(inter["attentions"]) == 2 and inter["attentions"][0].shape == (2, 4, 8, 8)
    m.train()
    m(x).sum().backward()
    assert all(p.grad is not None for p in m.parameters())              # nothing unused (DDP-safe)


def test_vt_api_and_input_checks():
    m = create_model("vt_resnet_nano_28")
    assert m.num_features == 64 and m.num_prefix_tokens == 0 and m.no_weight_decay() == set()
    with pytest.raises(ValueError, match="1 input channel"):
        m(torch.randn(1, 3, 28, 28))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        m(torch.randn(1, 28, 28))
    assert m(torch.randn(1, 1, 20, 20)).shape == (1, 10)                # no position tables: any size
    m.reset_classifier(3)
    assert torch.equal(m.head.weight, torch.zeros(3, 64)) and torch.equal(m(torch.randn(2, 1, 28, 28)),
                                                                          torch.zeros(2, 3))
    m.reset_classifier(0)
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 64)                # pooled features
    with pytest.raises(ValueError, match="divisible"):
        create_model("vt_resnet_nano_28", num_heads=5)
    with pytest.raises(TypeError, match="valid"):
        create_model("vt_resnet_nano_28", tokens=4)
    cfg = create_model("vt_resnet_nano_8").cfg                          # config.json round trip (stem as a dict)
    assert VTConfig(**dataclasses.asdict(cfg)) == cfg


def test_vt_resnet18_layout():
    m = create_model("vt_resnet18_224").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert m.feature_map(x).shape == (1, 512, 14, 14)                # ResNet-18 up to stage 4: 14x14
        assert m.forward_features(x).shape == (1, 16, 512)               # L = 16 visual tokens
    assert m(x).shape == (1, 1000) and len(m.vt_modules) == 2


@pytest.mark.slow
def test_vt_learns_digits(tmp_path):
    torch.set_num_threads(1)
    cfg = TrainConfig(model="vt_resnet_nano_8", data="digits", epochs=5, batch_size=32, lr=2e-3, warmup_epochs=1,
                      out=str(tmp_path / "run"), num_threads=1, log_every=1000)
    model, task, loaders, bundle, meta = build_run(cfg)
    t0 = time.time()
    result = fit(model, task, loaders, cfg, meta)
    assert result["test_count"] == 359
    assert result["test_acc"] > 0.80, result
    assert time.time() - t0 < 60
