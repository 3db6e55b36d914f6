"""HF transformers CLIPModel -> vitkit CLIP, with HF as the oracle (fp32, eval, atol 1e-5).

Every HF model is tiny, random, jittered (so zero biases and unit norms cannot hide a misplaced
tensor), written by ``save_pretrained`` and read back by ``load_clip`` from the files on disk.
"""
import json

import pytest
import torch

from vitkit.models.text import ByteTokenizer
from vitkit.weights.clip import HF_CLIP, clip_meta, load_clip
from vitkit.weights.io import load_weights_file, save_weights
from weights_helpers import jitter_

TOL = 1e-5


def hf_clip(transformers, eos_token_id=ByteTokenizer.eot, act="quick_gelu", vocab_size=ByteTokenizer.vocab_size,
            seed=0):
    torch.manual_seed(seed)
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=32, hidden_act=act,
                         eos_token_id=eos_token_id, bos_token_id=ByteTokenizer.sot, pad_token_id=ByteTokenizer.pad),
        vision_config=dict(image_size=28, patch_size=7, num_channels=1, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, hidden_act=act),
        projection_dim=16)
    return jitter_(transformers.CLIPModel(cfg), seed=seed).eval()


def _compare(hf, model, x, ids):
    with torch.no_grad():
        out = hf(input_ids=ids, pixel_values=x)
        img, txt, scale = model(x, ids)
        hf_hidden = hf.vision_model(pixel_values=x, output_hidden_states=True).hidden_states
        ours_hidden = model.backbone.forward_intermediates(x)["hidden_states"]
    assert len(hf_hidden) == len(ours_hidden) == 3
    assert max((a - b).abs().max().item() for a, b in zip(hf_hidden, ours_hidden)) < TOL  # pre-LN'd input + blocks
    assert (out.image_embeds - img).abs().max().item() < TOL
    assert (out.text_embeds - txt).abs().max().item() < TOL
    assert (out.logits_per_image - scale * img @ txt.t()).abs().max().item() < TOL * 10  # logits ~ 14 x unit
    assert (out.logits_per_text - scale * txt @ img.t()).abs().max().item() < TOL * 10


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_hf_clip_parity_eos_pooling(transformers, tmp_path, act):
    """transformers >= PR #24773: pooled at the first eos_token_id (here the byte tokenizer's eot)."""
    hf = hf_clip(transformers, act=act)
    hf.save_pretrained(tmp_path)
    model = load_clip(tmp_path)
    cfg = model.backbone.cfg
    assert (cfg.act, cfg.norm_pre, cfg.patch_bias, cfg.norm_eps) == (act, True, False, 1e-5)
    assert model.text.cfg.eot_id == ByteTokenizer.eot and model.text.cfg.context_length == 32
    ids = ByteTokenizer(32)(["a handwritten 7.", "the digit zero", "x" * 50])   # the last one truncated
    _compare(hf, model, torch.randn(3, 1, 28, 28), ids)
    assert not model.training


def test_hf_clip_parity_legacy_argmax_pooling(transformers, tmp_path):
    """Old configs (eos_token_id == 2): HF pools at the highest id; random ids make the two rules differ."""
    hf = hf_clip(transformers, eos_token_id=2, seed=1)
    hf.save_pretrained(tmp_path)
    model = load_clip(tmp_path)
    assert model.text.cfg.eot_id is None
    ids = torch.randint(3, 259, (4, 20))
    assert (ids.argmax(-1) != ids.shape[1] - 1).any()
    _compare(hf, model, torch.randn(4, 1, 28, 28), ids)


def test_every_hf_key_is_mapped_from_the_files(transformers, tmp_path):
    hf_clip(transformers).save_pretrained(tmp_path)
    sd = load_weights_file(tmp_path / "model.safetensors")            # the on-disk names
    assert "vision_model.pre_layrnorm.weight" in sd and "text_model.encoder.layers.1.self_attn.q_proj.bias" in sd
    mapped, unmapped, ignored, _ = HF_CLIP.to_vitkit(sd)
    assert unmapped == [] and ignored == []
    model = load_clip(tmp_path)
    assert set(mapped) == set(model.state_dict())
    q, k, v = (sd[f"vision_model.encoder.layers.0.self_attn.{n}_proj.weight"] for n in "qkv")
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, torch.cat([q, k, v]))
    assert torch.equal(model.backbone.cls_token.flatten(), sd["vision_model.embeddings.class_embedding"])


def test_hf_tokenizer_is_attached(transformers, tmp_path):
    """A folder with HF's CLIP BPE tokenizer: strings are tokenized like HF (pad = eos, first-eos pooling)."""
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,")
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tok = transformers.CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    hf = hf_clip(transformers, eos_token_id=tok.eos_token_id, vocab_size=len(vocab))
    folder = tmp_path / "model"
    hf.save_pretrained(folder)
    tok.save_pretrained(folder)
    model = load_clip(folder)
    texts = ["a cat", "the digit 7."]
    ids = tok(texts, padding="max_length", max_length=32, return_tensors="pt")["input_ids"]
    assert torch.equal(model.tokenize(texts), ids)
    with torch.no_grad():
        ref = hf.get_text_features(input_ids=ids)
        ref = getattr(ref, "pooler_output", ref)
        assert (model.encode_text(texts) - ref).abs().max().item() < TOL


def test_hub_id_from_the_local_cache(transformers, tmp_path, monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = tmp_path / "cache" / "models--someone--tiny-clip"
    hf = hf_clip(transformers)
    hf.save_pretrained(base / "snapshots" / commit)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    model = load_clip("hf:someone/tiny-clip")
    assert torch.equal(model.logit_scale, hf.logit_scale)
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set, so nothing is downloaded"):
        load_clip("hf:someone/absent-clip")


def test_run_folder_round_trip_and_errors(tmp_path):
    from vitkit.tasks.clip import make_clip
    model = make_clip("vit_mnist_patch7_28", embed_dim=16, image_args=dict(embed_dim=32, depth=1, num_heads=2),
                      templates=["a {}."]).eval()
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "vit_mnist_patch7_28", **clip_meta(model)}))
    save_weights(run / "model.safetensors", model.state_dict())
    back = load_clip(run)
    assert back.templates == ("a {}.",)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x, ["one", "two"]), back(x, ["one", "two"])))
    with pytest.raises(ValueError, match="without EMA"):
        torch.save({"format": 1, "ema": None}, run / "train_state.pt")  # a run trained without EMA
        load_clip(run, weights="ema")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="not a CLIP config"):
        load_clip(tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_clip(tmp_path / "missing")


def test_vit_clip_options_and_their_defaults():
    """Defaults leave every existing ViT as it was; the CLIP options add/remove exactly their tensors."""
    from vitkit.models import create_model
    from vitkit.models.resnet import ResNetConfig
    from vitkit.models.vit import ViTConfig
    plain = create_model("vit_nano_patch4_28")
    keys = set(plain.state_dict())
    assert "patch_embed.proj.bias" in keys and not any(k.startswith("norm_pre") for k in keys)
    assert type(plain.blocks[0].mlp.act).__name__ == "GELU"
    clip = create_model("vit_nano_patch4_28", act="quick_gelu", norm_pre=True, patch_bias=False)
    assert set(clip.state_dict()) == (keys - {"patch_embed.proj.bias"}) | {"norm_pre.weight", "norm_pre.bias"}
    x = torch.linspace(-3, 3, 7)
    assert torch.allclose(clip.blocks[0].mlp.act(x), x * torch.sigmoid(1.702 * x))
    with pytest.raises(ValueError, match="quick_gelu"):
        ViTConfig(act="swish")
    with pytest.raises(ValueError, match="hybrid"):
        ViTConfig(hybrid=ResNetConfig(), patch_bias=False)
