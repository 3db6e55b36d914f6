"""DINOv2 (HF ``Dinov2Model``) and DINOv2 with registers (``Dinov2WithRegistersModel``) -> vitkit's ViT with
layer scale and register tokens, transformers as the oracle (fp32, eval).

Checkpoints are written by ``save_pretrained`` (the on-disk names: ``encoder.layer.{i}.layer_scale1.lambda1``,
``embeddings.register_tokens``, as transformers' convert_dinov2_with_registers_to_hf.py names them), read back by
vitkit; every hidden state, the normed tokens and the pooled class token agree to 1e-5, at the checkpoint's own
resolution and at another one (HF resamples the table at run time, vitkit once at load: the same bicubic).
"""
import pytest
import torch

import vitkit
from vitkit.weights import from_checkpoint, load_weights
from weights_helpers import jitter_

TOL = 1e-5


def _hf(transformers, registers: bool, seed: int = 0):
    torch.manual_seed(seed)
    kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=56, patch_size=14, mlp_ratio=2)
    if registers:
        model = transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(num_register_tokens=4, **kw))
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**kw))
    return jitter_(model, seed=seed).eval()


@pytest.mark.parametrize("registers", [False, True])
def test_dinov2_parity_from_save_pretrained(transformers, tmp_path, registers):
    hf = _hf(transformers, registers)
    hf.save_pretrained(tmp_path)
    model = from_checkpoint(tmp_path).eval()
    cfg = model.cfg
    assert (cfg.layer_scale, cfg.reg_tokens, cfg.norm_eps, cfg.num_classes) == (1.0, 4 if registers else 0, 1e-6, 0)
    assert model.num_prefix_tokens == 1 + cfg.reg_tokens and model.pos_embed.weight.shape == (1, 1 + 16, 32)
    assert "DINOv2" in load_weights(model, tmp_path).format
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        out = hf(x, output_hidden_states=True)
        inter = model.forward_intermediates(x)
        pooled = model(x)  # no head: the normed class token, as HF's pooler_output
    assert len(out.hidden_states) == len(inter["hidden_states"]) == 3
    for a, b in zip(out.hidden_states, inter["hidden_states"], strict=True):
        assert (a - b).abs().max() < TOL
    assert (out.last_hidden_state - inter["features"]).abs().max() < TOL
    assert (out.pooler_output - pooled).abs().max() < TOL


@pytest.mark.parametrize("registers", [False, True])
def test_dinov2_at_another_resolution(transformers, tmp_path, registers):
    """A 4x4 table used at 6x6 (84 px): vitkit resamples once at load, HF at every call, both bicubic."""
    hf = _hf(transformers, registers, seed=1)
    hf.save_pretrained(tmp_path)
    name = "vit_small_patch14_reg4_dinov2" if registers else "vit_small_patch14_dinov2"
    model = vitkit.create_model(name, img_size=84, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0,
                                pretrained=tmp_path).eval()
    assert model.pos_embed.weight.shape == (1, 1 + 36, 32)
    x = torch.randn(1, 3, 84, 84)
    with torch.no_grad():
        assert (hf(x).last_hidden_state - model.forward_features(x)).abs().max() < TOL


def test_layer_scale_and_registers_are_config_fields():
    model = vitkit.create_model("vit_base_patch14_reg4_dinov2", device="meta")
    sd = model.state_dict()
    assert sd["reg_token"].shape == (1, 4, 768) and sd["blocks.11.ls2.gamma"].shape == (768,)
    assert sd["pos_embed.weight"].shape == (1, 1 + 37 * 37, 768)  # the registers have no position
    plain = vitkit.create_model("vit_nano_patch4_28")
    assert not any(".ls" in k or k == "reg_token" for k in plain.state_dict())
    scaled = vitkit.create_model("vit_nano_patch4_28", layer_scale=1e-5, reg_tokens=2)
    assert torch.all(scaled.blocks[0].ls1.gamma == 1e-5) and scaled.num_prefix_tokens == 3
    with torch.no_grad():
        assert scaled(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="register tokens"):
        vitkit.create_model("vit_nano_patch4_28", reg_tokens=1, pos_embed_where="every", device="meta")
