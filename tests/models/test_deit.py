"""DeiT: the distillation token, the second head, and the eval-mode average."""
import pytest
import torch

from vitkit import create_model, list_models
from vitkit.models import ViTConfig, VisionTransformer

NANO = "deit_nano_distilled_patch4_28"


def test_distillation_token_and_both_heads_exist():
    m = create_model(NANO)
    assert m.num_prefix_tokens == 2 and m.dist_token.shape == (1, 1, 64)
    assert m.pos_embed.weight.shape == (1, 2 + 49, 64)            # the table covers both prefix tokens
    assert m.head.weight.shape == m.head_dist.weight.shape == (10, 64)
    assert {"cls_token", "dist_token", "pos_embed.weight"} <= m.no_weight_decay()
    x = torch.randn(2, 1, 28, 28)
    assert m.forward_features(x).shape == (2, 51, 64)
    cls, dist = m(x)                                              # training mode: both heads
    assert cls.shape == dist.shape == (2, 10) and not torch.allclose(cls, dist)
    (cls.sum() + dist.sum()).backward()
    assert m.dist_token.grad is not None and m.head_dist.weight.grad is not None


def test_eval_output_is_the_mean_of_the_two_heads():
    m = create_model(NANO).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        f = m.forward_features(x)
        want = (m.head(f[:, 0]) + m.head_dist(f[:, 1])) / 2
        assert torch.allclose(m(x), want, atol=1e-6)
        assert torch.allclose(m.forward_head(f, pre_logits=True), (f[:, 0] + f[:, 1]) / 2)
    m.train()
    cls, dist = m.forward_head(f)
    assert torch.allclose((cls + dist) / 2, want, atol=1e-6)
    m.set_distilled_training(False)       # e.g. fine-tuning with Classify: one tensor in training mode too
    assert torch.allclose(m.forward_head(f), want, atol=1e-6)
    with pytest.raises(ValueError, match="distillation head"):
        create_model("vit_nano_patch4_28").set_distilled_training(True)


def test_tokens_order_and_intermediates():
    m = create_model(NANO, depth=2).eval()
    with torch.no_grad():
        out = m.forward_intermediates(torch.randn(1, 1, 28, 28), return_attention=True)
    h0 = out["hidden_states"][0]
    assert torch.allclose(h0[0, 0], m.cls_token[0, 0] + m.pos_embed.weight[0, 0])
    assert torch.allclose(h0[0, 1], m.dist_token[0, 0] + m.pos_embed.weight[0, 1])
    assert out["attentions"][0].shape == (1, 4, 51, 51)


def test_reset_classifier_zeroes_both_heads_and_config_checks():
    m = create_model(NANO)
    m.reset_classifier(3)
    assert m.head_dist.weight.shape == (3, 64) and not m.head_dist.weight.any() and not m.head.weight.any()
    with pytest.raises(ValueError, match="distilled"):
        ViTConfig(distilled=True, class_token=False, global_pool="avg")
    for pos in ("learn2d", "sincos", "rel"):  # every position option covers two prefix tokens
        y = create_model(NANO, depth=1, pos_embed=pos).eval()(torch.randn(1, 1, 28, 28))
        assert y.shape == (1, 10)


def test_deit_variants_are_registered_with_paper_sizes():
    names = list_models("deit_*_224")
    assert set(names) == {f"deit_{s}_{d}patch16_224" for s in ("tiny", "small", "base")
                          for d in ("", "distilled_")}
    # DeiT Table 1: Ti 5.7M / S 22M / B 86M; the distilled ones add one token (D) and one head (D*1000 + 1000).
    for size, dim, count in (("tiny", 192, 5.7e6), ("small", 384, 22.0e6), ("base", 768, 86.6e6)):
        plain = sum(p.numel() for p in create_model(f"deit_{size}_patch16_224", device="meta").parameters())
        dist = create_model(f"deit_{size}_distilled_patch16_224", device="meta")
        assert isinstance(dist, VisionTransformer) and dist.cfg.distilled
        assert abs(plain - count) / count < 0.01
        assert sum(p.numel() for p in dist.parameters()) - plain == 2 * dim + 1000 * dim + 1000
