"""PVT: the published Tiny/Small configs (whai362/PVT classification/pvt.py; 13.2 M / 24.5 M parameters),
spatial reduction per stage, forward/backward on the digits config, API and input checks."""
import pytest
import torch

from vitkit.layers import SpatialReductionAttention
from vitkit.models import PyramidVisionTransformer, create_model, list_models


@pytest.mark.parametrize("name,depths,millions", [("pvt_tiny", (2, 2, 2, 2), 13.2), ("pvt_small", (3, 4, 6, 3), 24.5)])
def test_published_sizes(name, depths, millions):
    m = create_model(name, device="meta")
    c = m.cfg
    assert (c.embed_dims, c.depths, c.num_heads, c.sr_ratios, c.mlp_ratios, c.patch_size) == (
        (64, 128, 320, 512), depths, (1, 2, 5, 8), (8, 4, 2, 1), (8, 8, 4, 4), 4)
    n = sum(p.numel() for p in m.parameters())
    assert abs(n / 1e6 - millions) < 0.05, n
    attns = [b.attn for s in m.stages for b in s.blocks]
    assert all(isinstance(a, SpatialReductionAttention) for a in attns)
    assert [a.sr_ratio for a in attns] == [r for r, d in zip(c.sr_ratios, depths) for _ in range(d)]
    assert [s.grid_size for s in m.stages] == [(56, 56), (28, 28), (14, 14), (7, 7)]
    assert m.num_features == 512 and m.input_size == (3, 224, 224)


def test_registered():
    assert {"pvt_tiny", "pvt_small", "pvt_nano_patch2_28"} <= set(list_models("pvt_*"))


def test_forward_backward_and_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    m = create_model("pvt_nano_patch2_28").train()
    logits = m(torch.randn(3, 1, 28, 28))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_features_intermediates_head_and_reset():
    m = create_model("pvt_nano_patch2_28").eval()
    x = torch.randn(2, 1, 28, 28)
    feats = m.forward_features(x)
    assert feats.shape == (2, 1 + 49, m.num_features)                    # class token + 7x7
    out = m.forward_intermediates(x)
    assert out["stages"][0].shape == (2, 48, 14, 14) and torch.allclose(out["features"], feats)
    # stage 1 attends from 196 queries to 49 reduced keys (sr 2)
    a = m.stages[0].blocks[0].attn(torch.randn(2, 14, 14, 48), return_attention=True)[1]
    assert a.shape == (2, 1, 196, 49)
    assert torch.equal(m.forward_head(feats, pre_logits=True), feats[:, 0])
    assert torch.allclose(m.forward_head(feats), m(x), atol=1e-6)
    m.reset_classifier(4)
    assert m(x).shape == (2, 4) and torch.count_nonzero(m(x)) == 0
    assert m.no_weight_decay() == {"stages.0.pos_embed", "stages.1.pos_embed", "stages.1.cls_token"}


def test_input_checks_and_dynamic_size():
    m = create_model("pvt_nano_patch2_28").eval()
    with pytest.raises(ValueError, match="1 input channel"):
        m(torch.randn(1, 3, 28, 28))
    with pytest.raises(ValueError, match="28x28"):
        m(torch.randn(1, 1, 32, 32))
    dyn = create_model("pvt_nano_patch2_28", dynamic_img_size=True).eval()
    assert dyn(torch.randn(1, 1, 36, 20)).shape == (1, 10)                 # position tables resampled
    with pytest.raises(ValueError, match="divisible"):
        dyn(torch.randn(1, 1, 30, 28))                                     # total stride 4
    with pytest.raises(ValueError, match="sr ratio must be 1"):
        create_model("pvt_nano_patch2_28", sr_ratios=(2, 2))
    with pytest.raises(ValueError, match="same number"):
        create_model("pvt_nano_patch2_28", depths=(2,))
    assert isinstance(create_model("pvt_tiny", device="meta"), PyramidVisionTransformer)
