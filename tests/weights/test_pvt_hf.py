"""PVT's default sources: transformers' ``PvtForImageClassification`` files (Zetatech/pvt-{size}-224).

The files are written by transformers itself (``save_pretrained``, its on-disk names) with each size's
published structure (depths from whai362/PVT classification/pvt.py; transformers' conversion script
``convert_pvt_to_pytorch.py`` names the repositories) at small widths, served under the repository id
by the stand-in hub, and loaded by ``create_model(name, pretrained=True)``: logits, the final tokens and
every stage agree with transformers to 1e-5. The full published sizes are checked on the meta device.
"""
import json
import warnings

import pytest
import torch

pytest.importorskip("huggingface_hub", reason="hub ids need huggingface_hub (pip install 'vitkit[hf]')")

import vitkit  # noqa: E402
from vitkit.weights import get_format, load_weights  # noqa: E402
from vitkit.weights.pvt import to_hf_names  # noqa: E402
from vitkit.weights.sources import SOURCES  # noqa: E402
from weights_helpers import jitter_  # noqa: E402

TOL = 1e-5
DEPTHS = {"tiny": (2, 2, 2, 2), "small": (3, 4, 6, 3), "medium": (3, 4, 18, 3), "large": (3, 8, 27, 3)}
SMALL = dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), img_size=64)  # 64 px: maps 16, 8, 4, 2
LABELS = {i: f"class {i}" for i in range(5)}


def hf_pvt(transformers, depths, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = transformers.PvtConfig(image_size=64, hidden_sizes=list(SMALL["embed_dims"]),
                                 num_attention_heads=list(SMALL["num_heads"]), depths=list(depths),
                                 num_labels=5, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}, **kw)
    return jitter_(transformers.PvtForImageClassification(cfg), seed=seed).eval()


def serve(hub, transformers, tmp_path, size):
    hf = hf_pvt(transformers, DEPTHS[size])
    hf.save_pretrained(tmp_path / size)
    # convert_pvt_checkpoint saves PvtImageProcessor(size=config.image_size) beside the weights
    transformers.PvtImageProcessor(size=224).save_pretrained(tmp_path / size)
    hub.add_folder(SOURCES[f"pvt_{size}"].repo, tmp_path / size)
    return hf


@pytest.mark.parametrize("size", list(DEPTHS))
def test_zetatech_pvt_loads_by_default(hub, transformers, tmp_path, size):
    name = f"pvt_{size}"
    assert SOURCES[name].repo == f"Zetatech/pvt-{size}-224" and SOURCES[name].format == "hf-pvt"
    hf = serve(hub, transformers, tmp_path, size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default source builds transformers' function: no eps warning
        model = vitkit.create_model(name, pretrained=True, **SMALL, num_classes=5).eval()
    assert model.cfg.depths == DEPTHS[size]
    assert (model.cfg.norm_eps, model.cfg.conv_norm_eps) == (1e-6, 1e-6)
    assert all(m.eps == 1e-6 for m in model.modules() if isinstance(m, torch.nn.LayerNorm))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = hf(x, output_hidden_states=True)
        ours = model.forward_intermediates(x)
        assert (out.logits - model(x)).abs().max() < TOL
    assert (hf.pvt(x).last_hidden_state - ours["features"]).abs().max() < TOL
    # every stage's output: transformers' hidden state after each stage's last block
    ends = [sum(DEPTHS[size][:i + 1]) - 1 for i in range(4)]
    for i, (k, mine) in enumerate(zip(ends, ours["stages"])):
        theirs = out.hidden_states[k]
        if i < 3:
            theirs = theirs.transpose(1, 2).reshape(mine.shape)
        assert (theirs - mine).abs().max() < TOL, i
    pc = model.pretrained_cfg
    assert pc.repo == f"Zetatech/pvt-{size}-224" and pc.citation == SOURCES[name].citation and pc.format == "hf-pvt"
    assert pc.label_names == tuple(LABELS.values()) and pc.mean == (0.485, 0.456, 0.406)
    assert pc.interpolation == "bicubic" and pc.input_size == (3, 224, 224) and pc.crop_mode == "squash"
    assert sorted(hub.downloads()) == sorted(f"{SOURCES[name].repo}/{f}" for f in
                                             ("config.json", "model.safetensors", "preprocessor_config.json"))


def test_fine_tuning_head_and_the_authors_eps(hub, transformers, tmp_path):
    """Another number of classes loads the checkpoint, then a zero head; a model left at PVT's own 1e-5
    in the patch/SR norms loads with a warning that names the field (its outputs differ)."""
    serve(hub, transformers, tmp_path, "tiny")
    tuned = vitkit.create_model("pvt_tiny", pretrained=True, **SMALL, num_classes=3)
    assert tuned.head.weight.shape == (3, 64) and not tuned.head.weight.any()
    assert tuned.pretrained_cfg.num_classes == 3 and tuned.pretrained_cfg.label_names is None
    authors = vitkit.create_model("pvt_tiny", **SMALL, num_classes=5)
    assert authors.cfg.conv_norm_eps == 1e-5
    with pytest.warns(UserWarning, match="conv_norm_eps"):
        load_weights(authors, "hf:Zetatech/pvt-tiny-224")
    heads = vitkit.create_model("pvt_tiny", embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 2, 4), img_size=64,
                                num_classes=5, conv_norm_eps=1e-6)
    with pytest.warns(UserWarning, match="num_heads"):  # heads change no shape, only the function
        load_weights(heads, "hf:Zetatech/pvt-tiny-224")


def test_vitkit_to_transformers_names(transformers, tmp_path):
    """The table's other direction: a vitkit PVT written with transformers' names loads strictly into
    PvtForImageClassification and gives the same logits; and back, bit for bit."""
    model = jitter_(vitkit.create_model("pvt_small", **SMALL, num_classes=5, conv_norm_eps=1e-6)).eval()
    fmt = get_format("hf-pvt")
    theirs, rest = fmt.from_vitkit(model.state_dict())
    assert not rest
    hf = hf_pvt(transformers, DEPTHS["small"], seed=1)
    hf.load_state_dict(to_hf_names(theirs, 5), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (hf(x).logits - model(x)).abs().max() < TOL
    back, unmapped, ignored, _ = fmt.to_vitkit(to_hf_names(theirs, 5))
    assert not unmapped and not ignored
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items()) and set(back) == set(model.state_dict())


@pytest.mark.parametrize("size", list(DEPTHS))
def test_published_sizes_on_meta(transformers, size):
    """transformers' PvtForImageClassification at the published config (PvtConfig defaults: widths
    64-512, heads 1/2/5/8, sr 8/4/2/1, mlp 8/8/4/4, 224 px, 1000 classes; the size's depths) maps onto
    the registered vitkit model, every tensor with its shape, and vitkit's writes exactly its keys."""
    with torch.device("meta"):
        hf = transformers.PvtForImageClassification(transformers.PvtConfig(depths=list(DEPTHS[size])))
    hf_sd = hf.state_dict()
    fmt = get_format("hf-pvt")
    ours, unmapped, ignored, _ = fmt.to_vitkit(hf_sd)
    assert not unmapped and not ignored
    model = vitkit.create_model(f"pvt_{size}", device="meta")
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.items()} == want
    back, rest = fmt.from_vitkit(model.state_dict())
    assert not rest and {k: tuple(v.shape) for k, v in to_hf_names(back, 1000).items()} == \
        {k: tuple(v.shape) for k, v in hf_sd.items()}
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in hf.parameters())


def test_a_config_vitkit_cannot_compute_is_refused(hub, transformers, tmp_path):
    hf = hf_pvt(transformers, DEPTHS["tiny"], hidden_act="relu")
    hf.save_pretrained(tmp_path / "relu")
    with pytest.raises(ValueError, match="hidden_act 'relu'"):
        load_weights(vitkit.create_model("pvt_tiny", **SMALL, num_classes=5), tmp_path / "relu")
    cfg = json.loads((tmp_path / "relu" / "config.json").read_text())
    cfg.update(hidden_act="gelu", strides=[7, 2, 2, 2])
    with pytest.raises(ValueError, match="overlaps"):
        get_format("hf-pvt").config_fields(cfg)
