"""HF transformers ViTMAEForPreTraining -> vitkit MAE (encoder and decoder), with HF itself as the oracle.

Every checkpoint is written by ``save_pretrained`` (on-disk names) or rewritten from it, and the same
``noise`` goes to both models, so loss, logits (pred) and mask must agree to 1e-5.
"""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from weights_helpers import hf_vit

from vitkit.tasks.mae import num_keep
from vitkit.weights.mae import load_hf_mae

TOL = 1e-5


def hf_mae(transformers, *, image_size=16, patch_size=4, num_channels=3, seed=0, **kw):
    """A random HF ViTMAEForPreTraining (hidden 32, 2 layers; decoder 16, 1 layer), like a trained one:
    HF's own sin-cos tables (transformers 5.23 leaves zeros in a fresh model: its initialiser is run
    here), every other parameter jittered so zero biases and unit norms hide nothing. Eval mode."""
    torch.manual_seed(seed)
    kw = {**dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                 decoder_intermediate_size=48), **kw}
    cfg = transformers.ViTMAEConfig(image_size=image_size, patch_size=patch_size, num_channels=num_channels, **kw)
    model = transformers.ViTMAEForPreTraining(cfg)
    emb = model.vit.embeddings
    emb.patch_embeddings.projection._is_hf_initialized = False
    emb.initialize_weights()
    model.decoder.initialize_weights(emb.patch_embeddings.num_patches)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith(("position_embeddings", "decoder_pos_embed")):
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def outputs_equal(hf, mae, x, noise):
    with torch.no_grad():
        ref = hf(pixel_values=x, noise=noise)
        loss, pred, mask = mae.eval()(x, noise)
    assert torch.equal(mask, ref.mask)
    assert (pred - ref.logits).abs().max() < TOL
    assert abs(loss.item() - ref.loss.item()) < TOL
    return ref


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_mae_equals_hf(transformers, tmp_path, norm_pix_loss):
    hf = hf_mae(transformers, norm_pix_loss=norm_pix_loss)
    hf.save_pretrained(tmp_path)
    mae = load_hf_mae(tmp_path)
    assert mae.norm_pix_loss is norm_pix_loss and mae.mask_ratio == 0.75
    x, noise = torch.randn(3, 3, 16, 16), torch.rand(3, 16)
    ref = outputs_equal(hf, mae, x, noise)
    assert ref.mask.sum(1).tolist() == [12.0] * 3 and ref.loss > 0.1
    # the oracle can fail: another noise gives another mask and other predictions
    with torch.no_grad():
        _, pred2, mask2 = mae(x, torch.rand(3, 16))
    assert not torch.equal(mask2, ref.mask) and (pred2 - ref.logits).abs().max() > 1e-2


def test_mae_equals_hf_on_grey_digits_size(transformers, tmp_path):
    """28x28 single-channel, P=7 (16 patches), mask ratio 0.6, the decoder with 2 blocks."""
    hf = hf_mae(transformers, image_size=28, patch_size=7, num_channels=1, mask_ratio=0.6,
                decoder_num_hidden_layers=2)
    hf.save_pretrained(tmp_path)
    outputs_equal(hf, load_hf_mae(tmp_path), torch.randn(2, 1, 28, 28), torch.rand(2, 16))


def test_keep_count_rule_vs_hf(transformers, tmp_path):
    """N=16, r=0.15: HF keeps int(16 * 0.85) = 13, vitkit's documented default round(13.6) = 14. A loaded
    checkpoint uses HF's rule ("floor") and equals HF; asked for "round", it keeps 14."""
    hf = hf_mae(transformers, mask_ratio=0.15)
    hf.save_pretrained(tmp_path)
    x, noise = torch.randn(2, 3, 16, 16), torch.rand(2, 16)
    ref = outputs_equal(hf, load_hf_mae(tmp_path), x, noise)
    assert (ref.mask == 0).sum(1).tolist() == [13, 13] == [num_keep(16, 0.15, "floor")] * 2
    with torch.no_grad():
        _, _, mask = load_hf_mae(tmp_path, keep_rule="round")(x, noise)
    assert (mask == 0).sum(1).tolist() == [14, 14] == [round(0.85 * 16)] * 2


def test_hub_and_in_memory_key_spellings(transformers, tmp_path):
    """transformers 5 writes the decoder blocks as ``decoder.decoder_encoder.layer.N``; hub checkpoints
    (facebook/vit-mae-*) have ``decoder.decoder_layers.N`` with the classic names; ``state_dict()`` in
    memory has ``q_proj``. All three load to the same model."""
    hf = hf_mae(transformers)
    hf.save_pretrained(tmp_path / "saved")
    stored = load_file(tmp_path / "saved" / "model.safetensors")
    assert any(k.startswith("decoder.decoder_encoder.layer.0.attention.attention.query") for k in stored)
    hub = {k.replace("decoder.decoder_encoder.layer.", "decoder.decoder_layers."): v for k, v in stored.items()}
    memory = {k: v.contiguous() for k, v in hf.state_dict().items()}
    assert "decoder.decoder_layers.0.attention.q_proj.weight" in memory
    x, noise = torch.randn(2, 3, 16, 16), torch.rand(2, 16)
    for name, sd in (("hub", hub), ("memory", memory)):
        (tmp_path / name).mkdir()
        shutil.copy(tmp_path / "saved" / "config.json", tmp_path / name / "config.json")
        save_file(sd, tmp_path / name / "model.safetensors")
        outputs_equal(hf, load_hf_mae(tmp_path / name), x, noise)


def test_clear_errors_for_other_checkpoints(transformers, tmp_path):
    hf_vit(transformers, image_size=16).save_pretrained(tmp_path / "vit")         # a ViT classifier
    with pytest.raises(ValueError, match="no MAE decoder"):
        load_hf_mae(tmp_path / "vit")

    hf = hf_mae(transformers)
    hf.vit.save_pretrained(tmp_path / "encoder")                                 # ViTMAEModel: no decoder
    with pytest.raises(ValueError, match="no MAE decoder"):
        load_hf_mae(tmp_path / "encoder")

    hf.save_pretrained(tmp_path / "other_type")                                  # decoder keys, another config
    cfg = json.loads((tmp_path / "other_type" / "config.json").read_text())
    (tmp_path / "other_type" / "config.json").write_text(json.dumps({**cfg, "model_type": "vit"}))
    with pytest.raises(ValueError, match="not HF ViTMAEForPreTraining"):
        load_hf_mae(tmp_path / "other_type")

    fresh = transformers.ViTMAEForPreTraining(hf.config)                        # zero tables (transformers 5.23)
    fresh.save_pretrained(tmp_path / "fresh")
    with pytest.raises(ValueError, match="not MAE's fixed 2D sin-cos table.*all zeros"):
        load_hf_mae(tmp_path / "fresh")

    save_file({"weight": torch.zeros(2, 2)}, tmp_path / "other.safetensors")   # vitkit's own layout
    with pytest.raises(ValueError, match="load_hf_mae reads HF ViTMAEForPreTraining"):
        load_hf_mae(tmp_path / "other.safetensors")
