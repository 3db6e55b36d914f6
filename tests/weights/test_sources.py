"""Every default source (weights/sources.py) through the default path: a random-weight file with that
repository's key names is served under the repository's id by the stand-in hub (hub_server.py), and
``create_model(name, pretrained=True)`` (``load_pretrained`` for MAE and CLIP) downloads and loads it.

Where the names come from:
- transformers-layout repositories (google/, microsoft/, facebook/, openai/): the files are written by
  transformers' own classes (``save_pretrained``) with the repository's published structure, small widths
  so the test is fast; outputs agree with transformers to 1e-5. The full published sizes are checked on the
  meta device: transformers builds the class with the published config (cited in sources.py) and every
  tensor maps onto the registered vitkit model with the same shape.
- timm repositories (timm/): timm is not installed here; the names are those of timm's
  ``VisionTransformer`` (vision_transformer.py) / ``VisionTransformerDistilled`` (deit.py), which
  test_timm.py checks against data/timm_vit_tiny_patch16_224.json; the config.json is timm's hub format
  (``architecture``, ``num_classes``, ``pretrained_cfg``) with the published pretrained_cfg values.
Large models (ViT-L, ViT-H, ViT-B) are served at small widths (the key names do not depend on width);
their full shapes are checked on the meta device only.
"""
import json

import pytest
import torch

pytest.importorskip("huggingface_hub", reason="hub ids need huggingface_hub (pip install 'vitkit[hf]')")

import vitkit  # noqa: E402
from vitkit.weights import get_format  # noqa: E402
from vitkit.weights.io import save_weights  # noqa: E402
from vitkit.weights.sources import (SOURCES, download, load_pretrained, pretrained_names,  # noqa: E402
                                    resolve_pretrained)
from weights_helpers import jitter_  # noqa: E402

TOL = 1e-5
SMALL_VIT = dict(embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0)

# the pretrained_cfg of timm's published config.json files (vit_*_augreg_in21k_ft_in1k: mean/std 0.5,
# crop_pct 0.9, bicubic; deit_*.fb_in1k: ImageNet mean/std): huggingface.co/timm/<tag>/blob/main/config.json
TIMM_PCFG = {"vit": {"mean": [0.5] * 3, "std": [0.5] * 3},
             "deit": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}


def _timm_repo(hub, name: str, num_classes: int) -> dict:
    """A timm-layout file for the registered ``name`` at small width: timm's names, timm's hub config."""
    model = jitter_(vitkit.create_model(name, **SMALL_VIT, num_classes=num_classes))
    sd, rest = get_format("timm").from_vitkit(model.state_dict())
    assert not rest
    family = "deit" if name.startswith("deit") else "vit"
    cfg = {"architecture": name, "num_classes": num_classes, "num_features": 32, "global_pool": "token",
           "pretrained_cfg": {"tag": SOURCES[name].repo.split(".", 1)[1], "input_size": [3, 224, 224],
                              "fixed_input_size": True, "interpolation": "bicubic", "crop_pct": 0.9,
                              "crop_mode": "center", "num_classes": num_classes, "first_conv": "patch_embed.proj",
                              "classifier": ["head", "head_dist"] if "distilled" in name else "head",
                              **TIMM_PCFG[family]}}
    path = hub.tmp / f"{name}.safetensors"
    save_weights(path, sd)
    hub.add_repo(SOURCES[name].repo, {"config.json": json.dumps(cfg).encode(), "model.safetensors": path.read_bytes(),
                                      "pytorch_model.bin": b"the pickle copy: not fetched", "README.md": b"# card"})
    return model.state_dict()


@pytest.fixture
def served(hub, tmp_path):
    hub.tmp = tmp_path
    return hub


TIMM_NAMES = [n for n in pretrained_names("model") if SOURCES[n].format == "timm"]


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_timm_sources_load_by_default(served, name):
    classes = SOURCES[name].overrides.get("num_classes", 1000)
    want = _timm_repo(served, name, classes)
    model = vitkit.create_model(name, **SMALL_VIT, pretrained=True)
    assert sorted(served.downloads()) == [f"{SOURCES[name].repo}/config.json", f"{SOURCES[name].repo}/model.safetensors"]
    got = model.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert model.cfg.norm_eps == 1e-6 and model.cfg.distilled == ("distilled" in name)
    pc = model.pretrained_cfg
    assert pc.repo == SOURCES[name].repo and pc.revision and pc.citation == SOURCES[name].citation
    assert pc.crop_pct == 0.9 and pc.crop_mode == "center" and pc.interpolation == "bicubic"
    assert pc.resize_size() == 248 and pc.input_size == (3, 224, 224)
    json.dumps(pc.to_dict())


def test_timm_full_sizes_on_meta():
    """The registered sizes hold timm's layout at full width (names and shapes), checked without memory."""
    timm = get_format("timm")
    for name in TIMM_NAMES:
        model = vitkit.create_model(name, device="meta", **SOURCES[name].overrides)
        sd, rest = timm.from_vitkit(model.state_dict())
        assert not rest, name
        back, unmapped, _, _ = timm.to_vitkit(sd)
        assert not unmapped and {k: v.shape for k, v in back.items()} == \
            {k: v.shape for k, v in model.state_dict().items()}, name
    huge = vitkit.create_model("vit_huge_patch14_224", device="meta", num_classes=0)
    assert huge.pos_embed.weight.shape == (1, 1 + 16 * 16, 1280) and len(huge.blocks) == 32
    assert "dist_token" in vitkit.create_model("deit_base_distilled_patch16_224", device="meta").state_dict()


def test_google_vit_base(served, transformers, tmp_path):
    """google/vit-base-patch16-224: ViTForImageClassification (transformers' names), its preprocessor file."""
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                 image_size=32, patch_size=16, num_labels=5,
                                 id2label={i: f"class {i}" for i in range(5)})
    hf = jitter_(transformers.ViTForImageClassification(cfg)).eval()
    hf.save_pretrained(tmp_path / "g")
    pp = {"do_normalize": True, "do_resize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "size": 224}
    served.add_folder("google/vit-base-patch16-224", tmp_path / "g",
                      **{"preprocessor_config.json": json.dumps(pp).encode()})
    model = vitkit.create_model("vit_base_patch16_224", **SMALL_VIT, img_size=32, num_classes=5,
                                pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (hf(x).logits - model(x)).abs().max() < TOL
    pc = model.pretrained_cfg
    assert pc.label_names == tuple(f"class {i}" for i in range(5)) and pc.crop_mode == "squash"
    assert pc.resize_size() == (224, 224) and pc.mean == (0.5, 0.5, 0.5) and pc.interpolation == "bilinear"
    # fine-tuning: another number of classes loads the checkpoint's head, then a zero head
    tuned = vitkit.create_model("vit_base_patch16_224", **SMALL_VIT, img_size=32, num_classes=3, pretrained=True)
    assert tuned.head.weight.shape == (3, 32) and not tuned.head.weight.any()
    assert torch.equal(tuned.blocks[1].mlp.fc1.weight, model.blocks[1].mlp.fc1.weight)
    assert tuned.pretrained_cfg.label_names is None and tuned.pretrained_cfg.num_classes == 3
    # full size on meta: transformers' ViT-B/16 (published config: 768, 12 layers, 12 heads, 1000 labels)
    with torch.device("meta"):
        full = transformers.ViTForImageClassification(transformers.ViTConfig(num_labels=1000))
    _meta_shapes_match(full.state_dict(), "vit_base_patch16_224")


def _meta_shapes_match(hf_sd, name, **overrides):
    from vitkit.weights import detect_format
    fmt = detect_format(hf_sd)
    ours, unmapped, _, _ = fmt.to_vitkit(hf_sd)
    assert not unmapped, unmapped[:4]
    want = {k: tuple(v.shape) for k, v in vitkit.create_model(name, device="meta", **overrides).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.items() if k in want} == want
    assert set(want) <= set(ours)


SWIN = {"tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24)), "small": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
        "base": (128, (2, 2, 18, 2), (4, 8, 16, 32))}  # transformers convert_swin_timm_to_pytorch.get_swin_config


@pytest.mark.parametrize("size", list(SWIN))
def test_microsoft_swin(served, transformers, tmp_path, size):
    name = f"swin_{size}_patch4_window7_224"
    torch.manual_seed(0)
    # small: 36 px, P=2, window 4, 3 stages (as tests/models/test_swin.py); the names do not depend on size
    cfg = transformers.SwinConfig(image_size=36, patch_size=2, embed_dim=16, depths=[2, 2, 2], num_heads=[2, 2, 4],
                                  window_size=4, num_labels=4)
    hf = jitter_(transformers.SwinForImageClassification(cfg)).eval()
    hf.save_pretrained(tmp_path / "s")
    served.add_folder(SOURCES[name].repo, tmp_path / "s")
    model = vitkit.create_model(name, pretrained=True, img_size=36, patch_size=2, window_size=4, embed_dim=16,
                                depths=(2, 2, 2), num_heads=(2, 2, 4), num_classes=4).eval()
    x = torch.randn(2, 3, 36, 36)
    with torch.no_grad():
        assert (hf(x).logits - model(x)).abs().max() < TOL
    dim, depths, heads = SWIN[size]
    with torch.device("meta"):
        full = transformers.SwinForImageClassification(transformers.SwinConfig(
            embed_dim=dim, depths=list(depths), num_heads=list(heads), window_size=7, num_labels=1000))
    _meta_shapes_match(full.state_dict(), name)


@pytest.mark.parametrize("name", [n for n in pretrained_names("model") if SOURCES[n].format == "hf-dinov2"])
def test_facebook_dinov2(served, transformers, tmp_path, name):
    registers = "reg4" in name
    torch.manual_seed(0)
    kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=28, patch_size=14)
    if registers:
        hf = transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(**kw))
    else:
        hf = transformers.Dinov2Model(transformers.Dinov2Config(**kw))
    hf = jitter_(hf).eval()
    hf.save_pretrained(tmp_path / "d")
    pp = {"crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_normalize": True,
          "do_resize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
          "resample": 3, "size": {"shortest_edge": 256}}  # BitImageProcessor of convert_dinov2*_to_hf.py
    served.add_folder(SOURCES[name].repo, tmp_path / "d", **{"preprocessor_config.json": json.dumps(pp).encode()})
    model = vitkit.create_model(name, pretrained=True, img_size=28, embed_dim=32, depth=2, num_heads=4).eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert (hf(x).last_hidden_state - model.forward_features(x)).abs().max() < TOL
    pc = model.pretrained_cfg
    assert (pc.crop_mode, pc.resize_size(), pc.input_size, pc.crop_pct, pc.interpolation) == \
        ("center", 256, (3, 224, 224), 0.875, "bicubic")
    size = "small" if "small" in name else "base"
    full_kw = dict(image_size=518, patch_size=14, **({"hidden_size": 384, "num_attention_heads": 6} if size == "small"
                                                      else {}))
    with torch.device("meta"):
        full = (transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(**full_kw)) if registers
                else transformers.Dinov2Model(transformers.Dinov2Config(**full_kw)))
    _meta_shapes_match(full.state_dict(), name)


def test_facebook_mae_and_openai_clip(served, transformers, tmp_path):
    from test_clip_hf import ByteTokenizer, _compare, hf_clip
    from test_mae_hf import hf_mae, outputs_equal
    mae_hf = hf_mae(transformers)
    mae_hf.save_pretrained(tmp_path / "m")
    served.add_folder("facebook/vit-mae-base", tmp_path / "m")
    mae = load_pretrained("mae_vit_base_patch16")
    x, noise = torch.randn(2, 3, 16, 16), torch.rand(2, 16)
    outputs_equal(mae_hf, mae, x, noise)
    assert mae.pretrained_cfg.repo == "facebook/vit-mae-base"
    clip_hf = hf_clip(transformers)
    clip_hf.save_pretrained(tmp_path / "c")
    served.add_folder("openai/clip-vit-base-patch32", tmp_path / "c")
    clip = load_pretrained("clip_vit_base_patch32")
    _compare(clip_hf, clip, torch.randn(3, 1, 28, 28), ByteTokenizer(32)(["a 7", "zero", "x" * 50]))
    assert clip.pretrained_cfg.repo == "openai/clip-vit-base-patch32"
    with pytest.raises(ValueError, match="load_pretrained"):
        resolve_pretrained("mae_vit_base_patch16", True)


def test_no_default_source_and_download(served):
    with pytest.raises(ValueError, match="has no default pretrained source"):
        vitkit.create_model("vit_nano_patch4_28", pretrained=True)
    _timm_repo(served, "deit_tiny_patch16_224", 1000)
    folder = download("deit_tiny_patch16_224")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]


def test_cli_download_and_models_pretrained(served, capsys):
    """src/vitkit/cli/download.py's command functions (the CLI owner wires them into `vitkit`)."""
    from argparse import Namespace

    from vitkit.cli.common import CLIError
    from vitkit.cli.download import cmd_download, cmd_models_pretrained
    _timm_repo(served, "vit_tiny_patch16_224", 1000)
    assert cmd_download(Namespace(source="vit_tiny_patch16_224", json=True)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["repo"] == "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k" and len(out["revision"]) == 40
    assert out["files"] == ["config.json", "model.safetensors"]
    with pytest.raises(CLIError, match="no repository org/absent"):
        cmd_download(Namespace(source="hf:org/absent", json=False))
    assert cmd_models_pretrained(Namespace(pattern="*dinov2")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and "facebook/dinov2-with-registers-small" in "".join(lines)
