"""EfficientViT's default sources: timm's ``efficientvit_b{0,1,2,3}.r224_in1k`` files.

timm does not import here; ``timm_ports.EfficientVit`` is its module tree (names, shapes, forward) and
writes the file: its ``state_dict()`` in a ``model.safetensors`` with timm's hub ``config.json``
(``default_cfgs`` of timm's efficientvit_mit.py: crop_pct 0.95, ImageNet mean/std, bicubic), served
under the repository id by the stand-in hub. ``create_model(name, pretrained=True)`` loads it and gives
the port's logits to 1e-5 (small widths, each size's published depths); the full published sizes map
onto the registered models tensor for tensor on the meta device.
"""
import json

import pytest
import torch

pytest.importorskip("huggingface_hub", reason="hub ids need huggingface_hub (pip install 'vitkit[hf]')")

import vitkit  # noqa: E402
from timm_ports import (EFFICIENTVIT_ARGS, EfficientVit, assert_port_round_trip, randomize_,  # noqa: E402
                        timm_hub_config)
from vitkit.weights import get_format, load_weights  # noqa: E402
from vitkit.weights.io import save_weights  # noqa: E402
from vitkit.weights.sources import SOURCES  # noqa: E402

TOL = 1e-5
FMT = get_format("timm-efficientvit")
SIZES = list(EFFICIENTVIT_ARGS)


def small_args(size: str) -> dict:
    """The size's published depths at small widths (head_dim 8, so the attention stages have 3 / 6 heads)."""
    return dict(widths=(8, 16, 16, 24, 48), depths=EFFICIENTVIT_ARGS[size]["depths"], head_dim=8,
                head_widths=(64, 80))


def port(size: str, eps: float = 1e-5, seed: int = 0, num_classes: int = 5) -> EfficientVit:
    torch.manual_seed(seed)
    return randomize_(EfficientVit(**small_args(size), num_classes=num_classes, eps=eps), seed).eval()


def serve(hub, tmp_path, size: str, model: EfficientVit) -> None:
    name = f"efficientvit_{size}"
    path = tmp_path / f"{name}.safetensors"
    save_weights(path, model.state_dict())
    cfg = timm_hub_config(name, "r224_in1k", num_classes=5, num_features=48, global_pool="avg", crop_pct=0.95,
                          pool_size=[7, 7], first_conv="stem.in_conv.conv", classifier="head.classifier.4",
                          license="apache-2.0")
    hub.add_repo(SOURCES[name].repo, {"config.json": json.dumps(cfg).encode(), "model.safetensors": path.read_bytes(),
                                      "pytorch_model.bin": b"the pickle copy: not fetched", "README.md": b"# card"})


@pytest.mark.parametrize("size", SIZES)
def test_timm_efficientvit_loads_by_default(hub, tmp_path, size):
    name = f"efficientvit_{size}"
    src = SOURCES[name]
    assert src.repo == f"timm/{name}.r224_in1k" and src.format == "timm-efficientvit"
    theirs = port(size)
    serve(hub, tmp_path, size, theirs)
    model = vitkit.create_model(name, pretrained=True, **small_args(size), num_classes=5, img_size=64).eval()
    assert sorted(hub.downloads()) == [f"{src.repo}/config.json", f"{src.repo}/model.safetensors"]
    assert model.cfg.attn_eps == 1e-5 and model.cfg.norm_eps == 1e-5
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = theirs(x)
        got = model(x)
        assert (want - got).abs().max() < TOL
        # the stem and every stage, as timm's forward_intermediates returns them
        maps = model.forward_intermediates(x)["stages"]
        h = theirs.stem(x)
        assert (h - maps[0]).abs().max() < TOL
        for i, stage in enumerate(theirs.stages):
            h = stage(h)
            assert (h - maps[i + 1]).abs().max() < TOL, i
        # the fused inference copy of the loaded model computes the same function
        assert ((model.fuse()(x) - want).abs().max() / want.abs().max()) < 1e-4
    pc = model.pretrained_cfg
    assert pc.repo == src.repo and pc.revision and pc.citation == src.citation
    assert (pc.crop_pct, pc.crop_mode, pc.interpolation, pc.input_size) == (0.95, "center", "bicubic", (3, 224, 224))
    assert pc.resize_size() == 235 and pc.mean == (0.485, 0.456, 0.406)


def test_attention_eps_is_the_one_difference():
    """timm's LiteMLA adds 1e-5 to its denominator, mit-han-lab's 1e-15: vitkit's attn_eps says which, and
    with the same eps the port and vitkit agree either way."""
    x = torch.randn(2, 3, 64, 64)
    for eps in (1e-5, 1e-15):
        theirs = port("b1", eps=eps)
        model = vitkit.create_model("efficientvit_b1", **small_args("b1"), num_classes=5, img_size=64, attn_eps=eps)
        ours, rest, _, _ = FMT.to_vitkit(theirs.state_dict())
        assert not rest
        model.load_state_dict(ours, strict=True)
        with torch.no_grad():
            assert (theirs(x) - model.eval()(x)).abs().max() < TOL
    assert vitkit.create_model("efficientvit_b1", device="meta").cfg.attn_eps == 1e-15  # the official default


def test_vitkit_to_timm_names_and_back():
    """The other direction: a vitkit EfficientViT written with timm's names loads strictly into the port
    (same logits), and maps back bit for bit."""
    torch.manual_seed(0)
    model = randomize_(vitkit.create_model("efficientvit_b2", **small_args("b2"), num_classes=5, img_size=64,
                                           attn_eps=1e-5), seed=3).eval()
    assert_port_round_trip(FMT, model, port("b2", seed=1), torch.randn(2, 3, 64, 64), TOL)


@pytest.mark.parametrize("size", SIZES)
def test_published_sizes_on_meta(size):
    """timm's efficientvit_{size} (its model_args) and the registered vitkit model hold the same tensors."""
    with torch.device("meta"):
        theirs = EfficientVit(**EFFICIENTVIT_ARGS[size])
    model = vitkit.create_model(f"efficientvit_{size}", device="meta")
    ours, unmapped, ignored, _ = FMT.to_vitkit(theirs.state_dict())
    assert not unmapped and not ignored
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in model.state_dict().items()}
    back, rest = FMT.from_vitkit(model.state_dict())
    assert not rest and {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def test_detection_and_what_is_refused(tmp_path):
    theirs = port("b0")
    save_weights(tmp_path / "model.safetensors", theirs.state_dict())
    from vitkit.weights import read_checkpoint
    assert read_checkpoint(tmp_path / "model.safetensors").format.name == "timm-efficientvit"
    # vitkit's own EfficientViT files stay vitkit's
    save_weights(tmp_path / "own.safetensors", vitkit.create_model("efficientvit_nano_28").state_dict())
    assert read_checkpoint(tmp_path / "own.safetensors").format.name == "vitkit"
    # timm's EfficientViT-L is another architecture
    cfg = timm_hub_config("efficientvit_l1", "r224_in1k", num_classes=5, num_features=48, global_pool="avg")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="EfficientVitLarge"):
        load_weights(vitkit.create_model("efficientvit_b0", **small_args("b0"), num_classes=5), tmp_path)
