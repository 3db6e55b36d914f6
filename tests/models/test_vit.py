import pytest
import torch

from vitkit import create_model, list_models
from vitkit.models import ViTConfig, VisionTransformer

NANO = "vit_nano_patch4_28"


def _x(b=2):
    return torch.randn(b, 1, 28, 28)


@pytest.mark.parametrize("pos", ["learn", "learn2d", "sincos", "rel", "none"])
@pytest.mark.parametrize("where", [None, "every", "every_shared"])
@pytest.mark.parametrize("pool", ["token", "avg"])
def test_every_position_option_and_pooling_builds_and_trains(pos, where, pool):
    m = create_model(NANO, depth=2, pos_embed=pos, pos_embed_where=where, global_pool=pool,
                     class_token=pool == "token")
    y = m(_x())
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    y.pow(2).sum().backward()
    for n, p in m.named_parameters():
        if n.startswith("head."):
            continue  # zero-initialised head: upstream grads flow after the first step
        assert p.grad is not None, n


def _features(m, x):
    return m.forward_features(x)


def test_options_that_should_differ_do():
    x = _x()
    outs = {}
    for pos in ["learn", "learn2d", "sincos", "rel", "none"]:
        torch.manual_seed(0)
        m = create_model(NANO, depth=2, pos_embed=pos).eval()
        outs[pos] = _features(m, x)
    keys = list(outs)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            assert not torch.allclose(outs[a], outs[b], atol=1e-4), (a, b)
    torch.manual_seed(0)
    tok = create_model(NANO, depth=2).eval()
    avg = create_model(NANO, depth=2, global_pool="avg").eval()
    avg.load_state_dict(tok.state_dict())
    f = tok.forward_features(x)
    assert torch.allclose(tok.forward_head(f, pre_logits=True), f[:, 0])
    assert torch.allclose(avg.forward_head(f, pre_logits=True), f[:, 1:].mean(1))


def test_position_where_semantics():
    x = _x()
    m = create_model(NANO, depth=3, pos_embed="learn", pos_embed_where="every").eval()
    assert len(m.pos_embed) == 3
    shared = create_model(NANO, depth=3, pos_embed="learn", pos_embed_where="every_shared").eval()
    assert not isinstance(shared.pos_embed, torch.nn.ModuleList)
    # "every" with all tables equal to the shared one computes the same function as "every_shared"
    sd = shared.state_dict()
    for i in range(3):
        m.pos_embed[i].weight.data.copy_(shared.pos_embed.weight.data)
    for k, v in sd.items():
        if not k.startswith("pos_embed"):
            m.state_dict()[k].copy_(v)
    assert torch.allclose(m(x), shared(x), atol=1e-5)
    inp = create_model(NANO, depth=3, pos_embed="learn").eval()
    inp.load_state_dict(sd)
    assert not torch.allclose(inp.forward_features(x), shared.forward_features(x), atol=1e-4)
    with pytest.raises(ValueError, match="relative"):
        create_model(NANO, pos_embed="rel", pos_embed_where="input")


def test_token_pool_needs_class_token():
    with pytest.raises(ValueError, match="class_token"):
        create_model(NANO, class_token=False, global_pool="token")


def test_pre_logits_is_linear_tanh_and_reset_classifier_zero_inits():
    m = create_model(NANO, pre_logits=True, pre_logits_dim=32).eval()
    f = m.forward_features(_x())
    pl = m.forward_head(f, pre_logits=True)
    assert pl.shape == (2, 32) and pl.abs().max() <= 1.0
    assert torch.allclose(pl, torch.tanh(m.pre_logits[0](f[:, 0])))
    m.reset_classifier(3)
    assert m.head.out_features == 3 and m.head.weight.abs().sum() == 0 and m.head.bias.abs().sum() == 0
    assert torch.equal(m(_x()), torch.zeros(2, 3))
    m.reset_classifier(0)
    assert m(_x()).shape == (2, 32)


def test_forward_intermediates_and_num_features():
    m = create_model(NANO).eval()
    x = _x()
    out = m.forward_intermediates(x, return_attention=True)
    assert len(out["hidden_states"]) == m.cfg.depth + 1
    assert len(out["attentions"]) == m.cfg.depth
    assert out["attentions"][0].shape == (2, 4, 50, 50)
    assert torch.allclose(out["features"], m.forward_features(x), atol=1e-5)
    assert torch.allclose(m.norm(out["hidden_states"][-1]), out["features"], atol=1e-6)
    assert out["features"].shape[-1] == m.num_features
    assert "attentions" not in m.forward_intermediates(x)


def test_no_weight_decay_names_tokens_and_tables():
    m = create_model(NANO, pos_embed="learn2d")
    assert m.no_weight_decay() == {"cls_token", "pos_embed.col", "pos_embed.row", "pos_embed.prefix"}
    r = create_model(NANO, pos_embed="rel", depth=2)
    assert r.no_weight_decay() == {"cls_token", "rel_pos.0.table", "rel_pos.1.table"}


def test_input_errors_name_the_expected_values():
    m = create_model(NANO)
    with pytest.raises(ValueError, match="1 input channel"):
        m(torch.randn(1, 3, 28, 28))
    with pytest.raises(ValueError, match="28x28"):
        m(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        m(torch.randn(1, 28, 28))
    with pytest.raises(ValueError, match=r"30.*divisible.*4"):
        create_model(NANO, img_size=30)


def test_dynamic_img_size_resamples_learned_embedding():
    m = create_model(NANO, dynamic_img_size=True).eval()
    y = m(torch.randn(2, 1, 36, 20))
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="divisible"):
        m(torch.randn(1, 1, 30, 28))


def test_create_at_new_size_and_resample_checkpoint():
    from vitkit.layers import resample_pos_embed
    small = create_model(NANO)
    big = create_model(NANO, img_size=36)
    sd = small.state_dict()
    sd["pos_embed.weight"] = resample_pos_embed(sd["pos_embed.weight"], big.grid_size, small.grid_size)
    big.load_state_dict(sd)
    assert torch.isfinite(big(torch.randn(1, 1, 36, 36))).all()


def test_hybrid_stem_patchifies_cnn_map_with_p1():
    m = create_model("vit_hybrid_nano_28").eval()
    assert m.grid_size == (14, 14)
    assert m.patch_embed.proj.kernel_size == (1, 1)
    x = _x()
    fmap = m.patch_embed.backbone.forward_features(x)
    assert fmap.shape[-2:] == (14, 14)
    assert m(x).shape == (2, 10)


def test_registry_errors():
    with pytest.raises(ValueError, match="did you mean"):
        create_model("vit_bass_patch16_224")
    with pytest.raises(TypeError, match="embed_dimm"):
        create_model(NANO, embed_dimm=3)
    from vitkit.models import register_model
    with pytest.raises(ValueError, match="already registered"):
        register_model(lambda **kw: None, name=NANO)


# Paper sizes: ViT Table 1 (B 86M, L 307M, H 632M) and DeiT Table 1 (Ti 5.7M, S 22M).
PAPER = {"vit_tiny_patch16_224": 5.7e6, "vit_small_patch16_224": 22.0e6, "vit_base_patch16_224": 86.6e6,
         "vit_large_patch16_224": 304.3e6, "vit_huge_patch14_224": 632e6, "vit_huge_patch16_224": 632e6}


@pytest.mark.parametrize("name,count", PAPER.items())
def test_paper_parameter_counts(name, count):
    m = create_model(name, device="meta")
    n = sum(p.numel() for p in m.parameters())
    assert abs(n - count) / count < 0.01, n


def test_base_exact_count_matches_timm_layout():
    m = create_model("vit_base_patch16_224", device="meta")
    assert sum(p.numel() for p in m.parameters()) == 86_567_656


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds(name):
    m = create_model(name, device="meta")
    assert sum(p.numel() for p in m.parameters()) > 0
    cfg = getattr(m, "cfg", None)
    small = sum(p.numel() for p in m.parameters()) < 5e6
    if small:  # run the small ones for real
        m = create_model(name).eval()
        x = torch.randn(2, *m.input_size)
        y = m(x)
        assert y.shape == (2, m.num_classes) and torch.isfinite(y).all()
        if hasattr(m, "forward_features") and isinstance(m, VisionTransformer):
            assert m.forward_features(x).shape[-1] == m.num_features


def test_config_roundtrips_through_dict():
    import dataclasses
    import json
    m = create_model("vit_hybrid_nano_28", pos_embed="sincos")
    d = json.loads(json.dumps(dataclasses.asdict(m.cfg)))
    cfg = ViTConfig(**d)
    assert cfg == m.cfg
    m2 = VisionTransformer(cfg)
    m2.load_state_dict(m.state_dict())
