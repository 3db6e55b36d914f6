"""timm vit_* key names. timm does not import on this machine, so its layout is test data:
data/timm_vit_tiny_patch16_224.json (keys and shapes of timm's vit_tiny_patch16_224 state dict,
written from timm's published vision_transformer.py)."""
import json
import re
from pathlib import Path

import pytest
import torch

import vitkit
from vitkit.weights import export, from_checkpoint, get_format, load_weights
from weights_helpers import jitter_

TIMM = get_format("timm")
LAYOUT = json.loads((Path(__file__).parent / "data" / "timm_vit_tiny_patch16_224.json").read_text())
TIMM_KEYS = {k: tuple(s) for k, s in LAYOUT["state_dict"]}


def _pattern(key: str) -> str:
    return re.sub(r"\.\d+\.", ".{i}.", key)


def test_timm_tiny_layout_maps_exactly():
    model = vitkit.create_model("vit_tiny_patch16_224", device="meta")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # vitkit -> timm: exactly timm's keys and shapes
    out, rest = TIMM.from_vitkit(model.state_dict())
    assert not rest
    assert {k: tuple(v.shape) for k, v in out.items()} == TIMM_KEYS
    # timm -> vitkit: every timm key is mapped, to exactly vitkit's keys and shapes
    sd = {k: torch.empty(s, device="meta") for k, s in TIMM_KEYS.items()}
    back, unmapped, ignored, _ = TIMM.to_vitkit(sd)
    assert not unmapped and not ignored
    assert {k: tuple(v.shape) for k, v in back.items()} == ours


# DINOv2 (layer scale, registers) loads from HF's layout (test_dinov2.py); timm's DINOv2 ports put the
# class token's position into the token itself (no_embed_class), another layout, refused by the timm table.
@pytest.mark.parametrize("name", [n for n in vitkit.list_models("vit_*") if not n.endswith("_dinov2")])
def test_every_registered_vit_maps_to_timm_and_back(name):
    """Coverage for every registered vit_*: no key left over either way, and (except the hybrid's
    stem, which timm names its own way) only key patterns from timm's published layout."""
    model = vitkit.create_model(name, device="meta")
    sd = model.state_dict()
    out, rest = TIMM.from_vitkit(sd)
    assert not rest
    patterns = {_pattern(k) for k in out if not k.startswith("patch_embed.backbone.")}
    assert patterns <= {_pattern(k) for k in TIMM_KEYS}
    if model.cfg.class_token and model.cfg.num_classes and model.cfg.hybrid is None:
        assert patterns == {_pattern(k) for k in TIMM_KEYS}
    back, unmapped, _, _ = TIMM.to_vitkit(out)
    assert not unmapped and {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in sd.items()}


@pytest.mark.parametrize("name,kw", [("vit_nano_patch4_28", {}), ("vit_mnist_patch4_28", {}),
                                     ("vit_nano_patch4_28", {"pre_logits": True, "pre_logits_dim": 32})],
                         ids=["cls", "gap-no-cls", "pre-logits"])
def test_timm_round_trip_is_exact(tmp_path, name, kw):
    model = jitter_(vitkit.create_model(name, **kw))
    export(model, tmp_path, to="timm")
    stored = load_weights_file_keys(tmp_path / "model.safetensors")
    assert "pos_embed" in stored and not any(k.startswith("pos_embed.") for k in stored)
    back = vitkit.create_model(name, **kw)
    report = load_weights(back, tmp_path)
    assert report.format.startswith("timm")
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_args"]["fc_norm"] is False and cfg["model_args"]["global_pool"] == model.cfg.global_pool
    rebuilt = from_checkpoint(tmp_path)  # the timm config.json alone rebuilds the same ViT
    assert rebuilt.cfg.num_heads == model.cfg.num_heads and rebuilt.cfg.global_pool == model.cfg.global_pool


def load_weights_file_keys(path):
    from vitkit.weights.io import load_weights_file
    return set(load_weights_file(path))


def test_timm_functions_vitkit_lacks_are_refused(tmp_path):
    model = vitkit.create_model("vit_mnist_patch4_28")
    out, _ = TIMM.from_vitkit(model.state_dict())
    fc = dict(out, **{"fc_norm.weight": out.pop("norm.weight"), "fc_norm.bias": out.pop("norm.bias")})
    torch.save(fc, tmp_path / "gap_fc_norm.pth")
    with pytest.raises(ValueError, match="normalises after average pooling"):
        load_weights(model, tmp_path / "gap_fc_norm.pth")
    ls = dict(TIMM.from_vitkit(model.state_dict())[0], **{"blocks.0.ls1.gamma": torch.ones(128)})
    torch.save(ls, tmp_path / "layer_scale.pth")
    with pytest.raises(ValueError, match=r"blocks\.0\.ls1\.gamma"):
        load_weights(model, tmp_path / "layer_scale.pth")


def test_timm_hub_folder_without_model_args(tmp_path):
    """timm's hub folders name the architecture and often carry no model_args: the name is enough."""
    model = jitter_(vitkit.create_model("vit_tiny_patch16_224", depth=2))
    export(model, tmp_path, to="timm")
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224", "num_classes": 1000,
                                                      "pretrained_cfg": cfg["pretrained_cfg"]}))
    rebuilt = from_checkpoint(tmp_path)  # heads from the registered vit_tiny_patch16_224, depth from the weights
    assert (rebuilt.cfg.num_heads, rebuilt.cfg.depth, rebuilt.cfg.norm_eps) == (3, 2, 1e-6)
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in model.state_dict().items())
