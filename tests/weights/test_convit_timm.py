"""ConViT's default sources: timm's ``convit_{tiny,small,base}.fb_in1k`` files.

timm does not import here; ``timm_ports.ConVit`` is its module tree (names, shapes, forward: GPSA's
``qk`` / ``v`` / ``pos_proj`` / ``gating_param``, r_ij rebuilt as timm's ``get_rel_indices``) and writes
the file: its ``state_dict()`` in a ``model.safetensors`` with timm's hub ``config.json`` (timm's
convit.py ``default_cfgs``: ImageNet mean/std, fixed input size, timm's default crop 0.875 bicubic),
served under the repository id by the stand-in hub. ``create_model(name, pretrained=True)`` loads it
and gives the port's logits and final tokens to 1e-5 (small widths, each size's heads); the full
published sizes map onto the registered models tensor for tensor on the meta device.
"""
import json

import pytest
import torch

pytest.importorskip("huggingface_hub", reason="hub ids need huggingface_hub (pip install 'vitkit[hf]')")

import vitkit  # noqa: E402
from timm_ports import CONVIT_ARGS, ConVit, assert_port_round_trip, randomize_, timm_hub_config  # noqa: E402
from vitkit.weights import get_format, read_checkpoint  # noqa: E402
from vitkit.weights.io import save_weights  # noqa: E402
from vitkit.weights.sources import SOURCES  # noqa: E402

TOL = 1e-5
FMT = get_format("timm-convit")
SIZES = list(CONVIT_ARGS)
PER_HEAD = 4  # small widths: 4 channels per head (timm's are 48)


def small_port(size: str, seed: int = 0) -> ConVit:
    """32 px, 8 px patches (a 4 x 4 grid), 3 blocks of which 2 GPSA, the size's heads."""
    torch.manual_seed(seed)
    heads = CONVIT_ARGS[size]["num_heads"]
    return randomize_(ConVit(img_size=32, patch_size=8, num_classes=5, embed_dim=PER_HEAD, depth=3, num_heads=heads,
                             local_up_to_layer=2), seed).eval()


def small_vitkit(size: str) -> dict:
    heads = CONVIT_ARGS[size]["num_heads"]
    return dict(img_size=32, patch_size=8, num_classes=5, embed_dim=PER_HEAD * heads, depth=3, num_heads=heads,
                local_up_to_layer=2)


@pytest.mark.parametrize("size", SIZES)
def test_timm_convit_loads_by_default(hub, tmp_path, size):
    name = f"convit_{size}"
    src = SOURCES[name]
    assert src.repo == f"timm/{name}.fb_in1k" and src.format == "timm-convit"
    theirs = small_port(size)
    path = tmp_path / f"{name}.safetensors"
    save_weights(path, theirs.state_dict())
    cfg = timm_hub_config(name, "fb_in1k", num_classes=5, num_features=PER_HEAD * CONVIT_ARGS[size]["num_heads"],
                          global_pool="token", fixed_input_size=True, first_conv="patch_embed.proj",
                          classifier="head", license="apache-2.0")
    hub.add_repo(src.repo, {"config.json": json.dumps(cfg).encode(), "model.safetensors": path.read_bytes(),
                            "pytorch_model.bin": b"the pickle copy: not fetched", "README.md": b"# card"})
    model = vitkit.create_model(name, pretrained=True, **small_vitkit(size)).eval()
    assert sorted(hub.downloads()) == [f"{src.repo}/config.json", f"{src.repo}/model.safetensors"]
    assert model.cfg.norm_eps == 1e-6
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (theirs(x) - model(x)).abs().max() < TOL
        assert (theirs.forward_features(x) - model.forward_features(x)).abs().max() < TOL
    pc = model.pretrained_cfg
    assert pc.repo == src.repo and pc.revision and pc.citation == src.citation
    assert (pc.crop_pct, pc.crop_mode, pc.interpolation, pc.input_size) == (0.875, "center", "bicubic", (3, 224, 224))
    assert pc.resize_size() == 256 and pc.std == (0.229, 0.224, 0.225)


def test_vitkit_to_timm_names_and_back():
    """The other direction: vitkit's fused GPSA qkv is written as timm's qk + v (the MHSA blocks keep
    qkv), loads strictly into the port (same logits), and maps back bit for bit."""
    torch.manual_seed(0)
    model = randomize_(vitkit.create_model("convit_small", **small_vitkit("small")), seed=2).eval()
    theirs = assert_port_round_trip(FMT, model, small_port("small", seed=1), torch.randn(2, 3, 32, 32), TOL)
    assert {"blocks.0.attn.qk.weight", "blocks.1.attn.v.weight", "blocks.2.attn.qkv.weight"} <= set(theirs)
    assert "blocks.0.attn.qkv.weight" not in theirs and "blocks.2.attn.qk.weight" not in theirs


@pytest.mark.parametrize("size", SIZES)
def test_published_sizes_on_meta(size):
    """timm's convit_{size} (its model_args: 12 blocks, 10 GPSA, 48 channels a head) and the registered
    vitkit model hold the same tensors."""
    with torch.device("meta"):
        theirs = ConVit(**CONVIT_ARGS[size])
    model = vitkit.create_model(f"convit_{size}", device="meta")
    ours, unmapped, ignored, _ = FMT.to_vitkit(theirs.state_dict())
    assert not unmapped and not ignored
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in model.state_dict().items()}
    back, rest = FMT.from_vitkit(model.state_dict())
    assert not rest and {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in theirs.parameters())


def test_detection_and_config(tmp_path):
    """timm ConViT files are told from timm ViT files (both have a bare pos_embed) and from vitkit's own
    ConViT files (both have gating_param); a config vitkit cannot express is refused."""
    save_weights(tmp_path / "convit.safetensors", small_port("tiny").state_dict())
    assert read_checkpoint(tmp_path / "convit.safetensors").format.name == "timm-convit"
    save_weights(tmp_path / "own.safetensors", vitkit.create_model("convit_nano_patch4_28").state_dict())
    assert read_checkpoint(tmp_path / "own.safetensors").format.name == "vitkit"
    vit, _ = get_format("timm").from_vitkit(vitkit.create_model("vit_nano_patch4_28").state_dict())
    save_weights(tmp_path / "vit.safetensors", vit)
    assert read_checkpoint(tmp_path / "vit.safetensors").format.name == "timm"
    cfg = timm_hub_config("convit_tiny", "fb_in1k", num_classes=1000, num_features=192, global_pool="avg")
    with pytest.raises(ValueError, match="class token"):
        FMT.config_fields(cfg)
    cfg.update(global_pool="token", model_args={"embed_dim": 32, "num_heads": 2, "depth": 4})
    assert FMT.config_fields(cfg) == {"norm_eps": 1e-6, "num_heads": 2, "depth": 4, "embed_dim": 64,
                                      "num_classes": 1000}
