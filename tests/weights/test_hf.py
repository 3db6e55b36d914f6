"""HF transformers ViT / ViT-MAE <-> vitkit, with HF itself as the oracle.

Every HF checkpoint here is written to disk by ``save_pretrained`` (the names real checkpoints
have), read back by vitkit, and compared in fp32 eval mode: logits and every block's hidden state.
"""
import json

import pytest
import torch

import vitkit
from vitkit.models.vit import ViTConfig, VisionTransformer
from vitkit.weights import export, from_checkpoint, load_weights, read_checkpoint
from weights_helpers import hf_vit, jitter_

TOL = 1e-5


def _max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def _compare(hf_model, model, x, **hf_kw):
    """(max |logits diff|, max |hidden-state diff| over embeddings + every block)."""
    with torch.no_grad():
        out = hf_model(x, output_hidden_states=True, **hf_kw)
        inter = model.forward_intermediates(x)
        logits = model.forward_head(inter["features"])
    assert len(out.hidden_states) == len(inter["hidden_states"]) == model.cfg.depth + 1
    return (out.logits - logits).abs().max().item(), _max_diff(out.hidden_states, inter["hidden_states"])


# (image size, patch, channels, classes): patch 16 at 224 and patch 4 at 32, 1 and 3 channels,
# 1000- and 10-class heads. Narrow and shallow (D=32, 2 blocks) so the 224 case is quick on a CPU.
SHAPES = [(224, 16, 3, 1000), (224, 16, 1, 10), (32, 4, 1, 10), (32, 4, 3, 1000)]


@pytest.mark.parametrize("img,patch,chans,classes", SHAPES, ids=[f"p{p}_{i}_c{c}_k{k}" for i, p, c, k in SHAPES])
def test_hf_classifier_parity_from_save_pretrained(transformers, tmp_path, img, patch, chans, classes):
    hf = hf_vit(transformers, image_size=img, patch_size=patch, num_channels=chans, num_labels=classes)
    hf.save_pretrained(tmp_path)
    model = from_checkpoint(tmp_path).eval()
    cfg = model.cfg
    assert (cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.num_classes) == (img, patch, chans, classes)
    assert cfg.norm_eps == 1e-12 and cfg.num_heads == 4 and cfg.global_pool == "token"
    x = torch.randn(2, chans, img, img)
    d_logits, d_hidden = _compare(hf, model, x)
    assert d_logits < TOL and d_hidden < TOL


def test_hf_mean_pooling_parity(transformers, tmp_path):
    """HF has no mean-pooling head: pool HF's last_hidden_state (after the final norm) ourselves."""
    hf = hf_vit(transformers, num_labels=10, qkv_bias=False)
    hf.save_pretrained(tmp_path)
    model = from_checkpoint(tmp_path, global_pool="avg").eval()
    assert not model.cfg.qkv_bias
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = hf(x, output_hidden_states=True)
        last = hf.vit.layernorm(out.hidden_states[-1])
        want = hf.classifier(last[:, 1:].mean(dim=1))
        inter = model.forward_intermediates(x)
    assert _max_diff(out.hidden_states, inter["hidden_states"]) < TOL
    assert (model.forward_head(inter["features"]) - want).abs().max() < TOL


def test_hf_pooler_is_pre_logits(transformers, tmp_path):
    """ViTModel's pooler (Linear + tanh on the class token) loads as vitkit's pre-logits layer."""
    hf = hf_vit(transformers, cls=transformers.ViTModel, pooler_output_size=24)
    hf.save_pretrained(tmp_path)
    model = from_checkpoint(tmp_path).eval()
    assert model.cfg.pre_logits and model.cfg.pre_logits_dim == 24 and model.cfg.num_classes == 0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = hf(x, output_hidden_states=True)
        inter = model.forward_intermediates(x)
        pooled = model(x)
    assert _max_diff(out.hidden_states, inter["hidden_states"]) < TOL
    assert (out.last_hidden_state - inter["features"]).abs().max() < TOL
    assert (out.pooler_output - pooled).abs().max() < TOL


def test_hf_in_memory_names_load_too(transformers, tmp_path):
    """transformers 5 renames keys in memory (layers.N.attention.q_proj); a torch.save of that loads."""
    hf = hf_vit(transformers)
    assert any(".q_proj." in k for k in hf.state_dict())
    torch.save(hf.state_dict(), tmp_path / "weights.pth")
    hf.save_pretrained(tmp_path / "disk")
    ref = from_checkpoint(tmp_path / "disk")
    model = VisionTransformer(ref.cfg)
    report = load_weights(model, tmp_path / "weights.pth")
    assert "in-memory" in report.format
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_mae_encoder_parity(transformers, tmp_path):
    """ViTMAEModel with no masking (mask_ratio 0, identity shuffle) is a plain ViT encoder."""
    torch.manual_seed(0)
    cfg = transformers.ViTMAEConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                    image_size=32, patch_size=4, mask_ratio=0.0, decoder_hidden_size=16,
                                    decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                                    decoder_intermediate_size=32)
    pre = jitter_(transformers.ViTMAEForPreTraining(cfg)).eval()
    pre.save_pretrained(tmp_path)
    enc = pre.vit
    model = from_checkpoint(tmp_path).eval()
    report = load_weights(model, tmp_path)
    assert report.ignored and all(k.startswith("decoder.") for k in report.ignored)  # the decoder, reported
    x = torch.randn(2, 3, 32, 32)
    noise = torch.arange(64.0).expand(2, -1)  # argsort = identity: tokens keep their order
    with torch.no_grad():
        out = enc(x, noise=noise, output_hidden_states=True)
        inter = model.forward_intermediates(x)
    assert _max_diff(out.hidden_states, inter["hidden_states"]) < TOL
    assert (out.last_hidden_state - inter["features"]).abs().max() < TOL

    # MAE's stored table is fixed 2D sin-cos: a vitkit sin-cos encoder checks it and needs no table.
    # (Jittering moved it, so write a fresh encoder. transformers 5.23 skips the table's sin-cos init
    # when the patch projection was initialised first and leaves zeros; run HF's own initialiser.)
    fresh = transformers.ViTMAEModel(cfg)
    fresh.embeddings.patch_embeddings.projection._is_hf_initialized = False
    fresh.embeddings.initialize_weights()
    assert fresh.embeddings.position_embeddings.abs().max() > 0.5
    fresh.save_pretrained(tmp_path / "fresh")
    sincos = VisionTransformer(ViTConfig(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0,
                                         num_classes=0, pos_embed="sincos", norm_eps=1e-12))
    rep = load_weights(sincos, tmp_path / "fresh")
    assert any("sin-cos" in n for n in rep.notes)


def test_vitkit_to_hf_to_vitkit_is_bit_exact(transformers, tmp_path):
    model = jitter_(vitkit.create_model("vit_nano_patch4_28", num_classes=7, norm_eps=1e-12)).eval()
    export(model, tmp_path / "hf", to="hf")
    # the config.json is transformers' own
    hf_cfg = transformers.ViTConfig.from_pretrained(tmp_path / "hf")
    assert (hf_cfg.hidden_size, hf_cfg.num_hidden_layers, hf_cfg.num_attention_heads, hf_cfg.num_channels,
            hf_cfg.image_size, hf_cfg.patch_size, hf_cfg.num_labels, hf_cfg.layer_norm_eps) == \
        (64, 4, 4, 1, 28, 4, 7, 1e-12)
    hf, info = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf", output_loading_info=True)
    hf.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    x = torch.randn(2, 1, 28, 28)
    d_logits, d_hidden = _compare(hf, model, x)
    assert d_logits < TOL and d_hidden < TOL
    # back through HF's own writer, then into a fresh vitkit model: every tensor identical
    hf.save_pretrained(tmp_path / "hf2")
    back = vitkit.create_model("vit_nano_patch4_28", num_classes=7, pretrained=tmp_path / "hf2")
    assert back.cfg.norm_eps == 1e-12  # taken from the HF config.json
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_hf_export_refuses_what_hf_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="class token"):
        export(vitkit.create_model("vit_mnist_patch4_28"), tmp_path, to="hf")
    with pytest.raises(ValueError, match="pre-logits with a head"):
        export(vitkit.create_model("vit_nano_patch4_28", pre_logits=True), tmp_path, to="hf")


@pytest.mark.parametrize("new", [(384, 384), (224, 320)], ids=["384", "224x320"])
def test_pos_embed_resampling_matches_hf_interpolate(transformers, tmp_path, new):
    """A 224 checkpoint run at another size: vitkit resamples once at load, HF on every forward
    (interpolate_pos_encoding=True); same bicubic, align_corners=False."""
    hf = hf_vit(transformers, image_size=224, patch_size=16, num_labels=1000)
    hf.save_pretrained(tmp_path)
    model = vitkit.create_model("vit_tiny_patch16_224", embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0,
                                img_size=new, pretrained=tmp_path).eval()
    assert model.pos_embed.weight.shape[1] == 1 + (new[0] // 16) * (new[1] // 16)
    x = torch.randn(2, 3, *new)
    d_logits, d_hidden = _compare(hf, model, x, interpolate_pos_encoding=True)
    assert d_logits < 1e-4 and d_hidden < 1e-4
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_load_report_and_other_architecture_error(transformers, tmp_path):
    hf = hf_vit(transformers)
    hf.save_pretrained(tmp_path)
    wrong = vitkit.create_model("vit_nano_patch4_28")  # D=64, 1 channel, 28x28: another size
    with pytest.raises(ValueError) as e:
        load_weights(wrong, tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "does not fit" in msg and "shape mismatches" in msg
    assert ("patch_embed.proj.weight (stored as embeddings.patch_embeddings.projection.weight): "
            "checkpoint (32, 3, 4, 4) vs model (64, 1, 4, 4)") in msg
    assert "missing keys" in msg and "blocks.2.norm1.weight" in msg
    # not strict: what fits is loaded, the rest reported
    ok = vitkit.create_model("vit_nano_patch4_28", img_size=32, in_chans=3, embed_dim=32, depth=3, num_heads=4,
                             num_classes=5, norm_eps=1e-12)
    report = load_weights(ok, tmp_path, strict=False)
    assert any(k.startswith("blocks.2.") for k in report.missing)
    assert any(m.startswith("head.weight") for m in report.mismatched)
    assert torch.equal(ok.cls_token, hf.vit.embeddings.cls_token)


def test_config_json_round_trip(transformers, tmp_path):
    hf = hf_vit(transformers, image_size=32, patch_size=4, num_channels=1, num_labels=3)
    hf.config.id2label = {0: "cat", 1: "dog", 2: "eel"}
    hf.config.label2id = {"cat": 0, "dog": 1, "eel": 2}
    hf.save_pretrained(tmp_path / "a")
    from vitkit.weights import convert
    convert(tmp_path / "a", tmp_path / "b", to="hf")
    a, b = (json.loads((tmp_path / n / "config.json").read_text()) for n in "ab")
    for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size",
              "patch_size", "num_channels", "layer_norm_eps", "qkv_bias", "id2label", "architectures"):
        assert a[k] == b[k], k
    ck = read_checkpoint(tmp_path / "b")
    assert ck.format.name == "hf"
