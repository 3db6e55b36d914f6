"""Downloads through huggingface_hub from a stand-in hub on 127.0.0.1 (``hub`` fixture, hub_server.py).

huggingface_hub does every request (model info, tree listing, HEAD and GET of each file); vitkit only
chooses which files (``hub.select_files``) and reads them safely. Nothing here leaves the machine.
"""
import os
import pickle

import pytest
import torch

pytest.importorskip("huggingface_hub", reason="hub ids need huggingface_hub (pip install 'vitkit[hf]')")

import vitkit  # noqa: E402
from vitkit.weights import hub as vhub  # noqa: E402
from weights_helpers import hf_vit  # noqa: E402

TOL = 1e-5


def _nano_kw():
    return dict(img_size=32, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0, num_classes=10)


def test_download_cache_then_offline(transformers, hub, tmp_path, monkeypatch):
    hf = hf_vit(transformers)
    hf.save_pretrained(tmp_path / "src")
    pp = b'{"do_resize": true, "size": {"height": 32, "width": 32}, "image_mean": [0.5, 0.5, 0.5], ' \
         b'"image_std": [0.5, 0.5, 0.5], "resample": 2}'
    sha = hub.add_folder("org/tiny-vit", tmp_path / "src", **{
        "preprocessor_config.json": pp, "pytorch_model.bin": b"not needed", "tf_model.h5": b"not needed",
        "README.md": b"# a card"})
    model = vitkit.create_model("vit_base_patch16_224", **_nano_kw(), pretrained="hf:org/tiny-vit").eval()
    # only what vitkit reads was fetched: config, preprocessing, and the safetensors (not the pickle, not TF)
    assert sorted(hub.downloads()) == ["org/tiny-vit/config.json", "org/tiny-vit/model.safetensors",
                                       "org/tiny-vit/preprocessor_config.json"]
    folder = vhub.resolve("hf:org/tiny-vit", download=False)
    assert folder.parent.name == "snapshots" and folder.name == sha
    assert str(folder).startswith(os.environ["HF_HUB_CACHE"])
    # transformers reading the same cached files is the oracle
    ref = transformers.ViTForImageClassification.from_pretrained(folder).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (ref(x).logits - model(x)).abs().max() < TOL
    pc = model.pretrained_cfg
    assert (pc.repo, pc.revision, pc.source) == ("org/tiny-vit", sha, f"hf:org/tiny-vit@{sha}")
    assert pc.mean == (0.5, 0.5, 0.5) and pc.crop_mode == "squash" and pc.input_size == (3, 32, 32)
    assert pc.interpolation == "bilinear" and len(pc.label_names) == 10

    # offline: from the cache, no request at all; the commit pins the same bytes
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(hub.log)
    again = vitkit.create_model("vit_base_patch16_224", **_nano_kw(), pretrained="hf:org/tiny-vit").eval()
    pinned = vitkit.create_model("vit_base_patch16_224", **_nano_kw(), pretrained=f"hf:org/tiny-vit@{sha}").eval()
    assert len(hub.log) == n
    with torch.no_grad():
        assert torch.equal(again(x), model(x)) and torch.equal(pinned(x), model(x))
    # offline and not cached: today's clear one-line error
    with pytest.raises(FileNotFoundError) as e:
        vitkit.create_model("vit_base_patch16_224", **_nano_kw(), pretrained="hf:org/not-cached")
    msg = str(e.value)
    assert "\n" not in msg and "HF_HUB_OFFLINE is set, so nothing is downloaded" in msg
    assert "models--org--not-cached" in msg


def test_missing_repo_and_revision_are_one_line_errors(hub):
    hub.add_repo("org/empty", {"README.md": b"# nothing to load"})
    cases = [("hf:org/absent", FileNotFoundError, "no repository org/absent on http://127.0.0.1:"),
             ("hf:org/empty@v9", FileNotFoundError, "has no revision 'v9'"),
             ("hf:org/empty", ValueError, "has no weights file vitkit reads")]
    for spec, exc, match in cases:
        with pytest.raises(exc) as e:
            vitkit.create_model("vit_nano_patch4_28", pretrained=spec)
        assert "\n" not in str(e.value) and match in str(e.value), str(e.value)
    assert not hub.downloads()


class _Payload:
    """Unpickling this calls os.system: what a malicious pytorch_model.bin would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_code_running_pickle_runs_nothing(hub, tmp_path):
    marker = tmp_path / "payload_ran"
    payload = pickle.dumps({"cls_token": torch.zeros(1, 1, 64), "x": _Payload(marker)})
    pickle.loads(pickle.dumps(_Payload(tmp_path / "probe")))  # the payload is real: plain pickle runs it
    assert (tmp_path / "probe").exists()
    hub.add_repo("evil/pickle", {"config.json": b"{}", "pytorch_model.bin": payload})
    with pytest.raises(ValueError) as e:
        vitkit.create_model("vit_nano_patch4_28", pretrained="hf:evil/pickle")
    msg = str(e.value)
    assert "\n" not in msg and "refused" in msg and "weights_only=True" in msg and "posix.system" in msg, msg
    assert not marker.exists()
    assert "evil/pickle/pytorch_model.bin" in hub.downloads()  # it was fetched, and read safely


def test_select_files_prefers_safetensors():
    sel = vhub.select_files
    assert sel(["model.safetensors", "pytorch_model.bin", "config.json", "flax_model.msgpack"]) == \
        ["config.json", "model.safetensors"]
    assert sel(["pytorch_model.bin", "config.json", "tf_model.h5", "vocab.json"]) == \
        ["config.json", "vocab.json", "pytorch_model.bin"]
    assert sel(["model.safetensors.index.json", "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors", "pytorch_model-00001-of-00002.bin"]) == \
        ["model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert sel(["ViT-B_16.npz", "README.md"]) == ["ViT-B_16.npz"]
