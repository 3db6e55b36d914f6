"""Swin: the model API on a tiny config, patch merging's documented order, the published sizes, and
parity with HF transformers' SwinForImageClassification from weights written by ``save_pretrained``."""
import dataclasses
import os

import pytest
import torch
from safetensors.torch import load_file

from vitkit.models import SwinConfig, SwinTransformer, create_model, list_models
from vitkit.models.swin import PatchMerging


def _nano(**kw) -> SwinTransformer:
    return create_model("swin_nano_patch2_window4_28", **kw)


def test_registered_with_timm_names():
    names = set(list_models("swin_*"))
    assert {"swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224", "swin_base_patch4_window7_224",
            "swin_large_patch4_window7_224", "swin_nano_patch2_window4_28"} <= names


@pytest.mark.parametrize("name,dim,depths,heads,millions", [
    ("swin_tiny_patch4_window7_224", 96, (2, 2, 6, 2), (3, 6, 12, 24), 28.3),
    ("swin_small_patch4_window7_224", 96, (2, 2, 18, 2), (3, 6, 12, 24), 49.6),
    ("swin_base_patch4_window7_224", 128, (2, 2, 18, 2), (4, 8, 16, 32), 87.8),
    ("swin_large_patch4_window7_224", 192, (2, 2, 18, 2), (6, 12, 24, 48), 196.5),
])
def test_published_sizes(name, dim, depths, heads, millions):
    m = create_model(name, device="meta")
    c = m.cfg
    assert (c.embed_dim, c.depths, c.num_heads, c.window_size, c.patch_size, c.img_size) == (dim, depths, heads, 7, 4, 224)
    assert m.num_features == dim * 8 and m.input_size == (3, 224, 224)
    assert abs(sum(p.numel() for p in m.parameters()) / 1e6 - millions) < 0.1  # timm's counts (1000 classes)


def test_forward_backward_and_every_parameter_gets_a_gradient():
    m = _nano(drop_path_rate=0.0).train()
    x = torch.randn(2, 1, 28, 28)
    logits = m(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_features_intermediates_and_head():
    m = _nano().eval()
    x = torch.randn(2, 1, 28, 28)
    feats = m.forward_features(x)
    assert feats.shape == (2, 4, 4, m.num_features)                      # 14 -> 7 -> 4 (odd map padded)
    out = m.forward_intermediates(x, return_attention=True)
    assert [tuple(t.shape) for t in out["stages"]] == [(2, 32, 14, 14), (2, 64, 7, 7), (2, 128, 4, 4)]
    assert torch.allclose(out["features"], feats, atol=1e-6)
    assert torch.allclose(m.norm(out["stages"][-1].permute(0, 2, 3, 1)), feats, atol=1e-6)
    # windows per block: 14 pads to 16 (4x4 windows), 7 pads to 8 (2x2), 4 is one window (unshifted)
    assert [tuple(a.shape[1:3]) for a in out["attentions"]] == [(16, 2), (16, 2), (4, 4), (4, 4), (1, 8), (1, 8)]
    pooled = m.forward_head(feats, pre_logits=True)
    assert pooled.shape == (2, m.num_features) and torch.allclose(pooled, feats.mean((1, 2)))
    assert torch.allclose(m.forward_head(feats), m(x), atol=1e-6)


def test_input_checks_and_dynamic_size():
    m = _nano().eval()
    with pytest.raises(ValueError, match="1 input channel"):
        m(torch.randn(1, 3, 28, 28))
    with pytest.raises(ValueError, match="28x28"):
        m(torch.randn(1, 1, 32, 32))
    dyn = _nano(dynamic_img_size=True).eval()
    assert dyn(torch.randn(1, 1, 36, 20)).shape == (1, 10)               # any multiple of P
    with pytest.raises(ValueError, match="divisible"):
        dyn(torch.randn(1, 1, 27, 28))


def test_weight_decay_groups_and_reset_classifier():
    m = _nano()
    nwd = m.no_weight_decay()
    assert nwd and all(n.endswith("attn.rel_pos.table") for n in nwd)
    assert len(nwd) == sum(m.cfg.depths)
    m.reset_classifier(3)
    assert m.head.out_features == 3 and not m.head.weight.any() and m.num_classes == 3
    m.reset_classifier(0)
    assert m(torch.randn(1, 1, 28, 28)).shape == (1, m.num_features)


def test_patch_merging_is_the_documented_2x2_concat():
    pm = PatchMerging(3, norm_eps=1e-5)
    x = torch.randn(2, 4, 6, 3)
    cat = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
    assert torch.allclose(pm(x), pm.reduction(pm.norm(cat)), atol=1e-6)
    odd = torch.randn(1, 5, 3, 3)                                        # padded to 6 x 4 with zeros
    padded = torch.zeros(1, 6, 4, 3)
    padded[:, :5, :3] = odd
    assert pm(odd).shape == (1, 3, 2, 6) and torch.allclose(pm(odd), pm(padded), atol=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="same"):
        SwinConfig(depths=(2, 2), num_heads=(3,))
    with pytest.raises(ValueError, match="divisible"):
        SwinConfig(embed_dim=96, num_heads=(5, 6, 12, 24))
    with pytest.raises(TypeError, match="unknown option"):
        _nano(window=3)


# ---------------------------------------------------------------- HF parity
@pytest.fixture(scope="module")
def transformers():
    tf = pytest.importorskip("transformers", reason="HF transformers (the oracle) is not installed")
    tf.logging.set_verbosity_error()
    tf.utils.logging.disable_progress_bar()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return tf


def _hf_swin(transformers, seed=0, **kw):
    """A random HF SwinForImageClassification with every parameter jittered (HF zero-inits the
    relative tables), so a misplaced tensor cannot hide behind a zero or a one."""
    torch.manual_seed(seed)
    model = transformers.SwinForImageClassification(transformers.SwinConfig(**kw)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def _parity(transformers, tmp_path, img_size, via_folder=True, **kw):
    import vitkit.weights.swin as hf_swin
    from vitkit.weights import load_weights

    hf = _hf_swin(transformers, image_size=img_size, **kw)
    hf.save_pretrained(tmp_path)
    disk = load_file(tmp_path / "model.safetensors")                     # the names real checkpoints use
    assert any(".attention.self.query." in k for k in disk)
    sd, unmapped, _, _ = hf_swin.HF_SWIN.to_vitkit(disk)
    assert not unmapped
    cfg = SwinConfig(**hf_swin.swin_config_from_hf(transformers.SwinConfig.from_pretrained(tmp_path).to_dict(),
                                                   has_head=True))
    ours = SwinTransformer(cfg).eval()
    ours.load_state_dict(sd, strict=True)
    back, rest = hf_swin.HF_SWIN.from_vitkit(ours.state_dict())
    back = hf_swin.to_hf_names(back, cfg.num_classes)
    assert not rest and set(back) == set(disk) and all(torch.equal(back[k], disk[k]) for k in disk)
    if via_folder:  # vitkit.load_weights on the folder: detected as hf-swin, loaded strictly
        assert load_weights(SwinTransformer(cfg).eval(), tmp_path).loaded == len(sd)

    x = torch.randn(1, kw.get("num_channels", 3), img_size, img_size)
    with torch.no_grad():
        want = hf(pixel_values=x).logits
        want_pooled = hf.swin(pixel_values=x).pooler_output                # O(1): normed, pooled features
        got_pooled = ours.forward_head(ours.forward_features(x), pre_logits=True)
        got = ours.forward_head(got_pooled[:, None, None])
    diff = (got - want).abs().max().item()
    pooled_diff = (got_pooled - want_pooled).abs().max().item()
    print(f"swin parity {img_size}px: max |logit diff| {diff:.2e} (logits up to {want.abs().max().item():.2f}), "
          f"max |pooled feature diff| {pooled_diff:.2e} (features up to {want_pooled.abs().max().item():.2f})")
    assert diff < 1e-5 and pooled_diff < 1e-4
    return ours


def test_hf_parity_tiny_config_that_needs_padding(transformers, tmp_path):
    """36 px, P=2, window 4: maps 18 (padded to 20), 9 (odd: merged from a padded map, padded to 12),
    5 (padded to 8, still shifted): padding in W-MSA, SW-MSA and merging."""
    _parity(transformers, tmp_path, 36, patch_size=2, embed_dim=16, depths=[2, 2, 2], num_heads=[2, 2, 4],
            window_size=4, num_labels=5)


def test_hf_parity_swin_tiny_224(transformers, tmp_path):
    kw = dict(patch_size=4, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
              num_labels=1000)
    ours = _parity(transformers, tmp_path, 224, via_folder=False, **kw)  # batch 1, eval, once
    registered = create_model("swin_tiny_patch4_window7_224", device="meta").cfg
    assert dataclasses.replace(registered, drop_path_rate=ours.cfg.drop_path_rate) == ours.cfg


def test_hf_swin_model_without_head_maps_to_pooled_features(transformers, tmp_path):
    """``SwinModel`` (no ``swin.`` prefix, no classifier): its pooler output is vitkit's pre-logits."""
    import vitkit.weights.swin as hf_swin

    torch.manual_seed(0)
    hf_cfg = transformers.SwinConfig(image_size=20, patch_size=2, embed_dim=8, depths=[2, 2], num_heads=[2, 2],
                                     window_size=3)
    hf = transformers.SwinModel(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(tmp_path)
    sd, unmapped, _, _ = hf_swin.HF_SWIN.to_vitkit(load_file(tmp_path / "model.safetensors"))
    assert not unmapped and not any(k.startswith("head.") for k in sd)
    ours = SwinTransformer(SwinConfig(**hf_swin.swin_config_from_hf(hf_cfg.to_dict(), has_head=False))).eval()
    ours.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 20, 20)
    with torch.no_grad():
        want, got = hf(pixel_values=x).pooler_output, ours(x)
    assert ours.num_classes == 0 and torch.allclose(got, want, atol=1e-5)
