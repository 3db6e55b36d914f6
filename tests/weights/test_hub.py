"""``hf:org/name`` resolves from the local Hugging Face cache only; nothing is downloaded."""
import pytest
import torch

pytest.importorskip("huggingface_hub", reason="hub ids need huggingface_hub (pip install 'vitkit[hf]')")

import vitkit  # noqa: E402
from vitkit.weights import export, hub, load_weights  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _fake_cache(root, repo: str, files_from) -> None:
    """The hub cache layout: models--org--name/{refs/main, snapshots/<commit>/<files>}."""
    base = root / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    for f in files_from.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(COMMIT)


def test_absent_repo_says_where_files_go(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as e:
        vitkit.create_model("vit_nano_patch4_28", pretrained="hf:google/vit-base-patch16-224")
    msg = str(e.value)
    assert "\n" not in msg and "HF_HUB_OFFLINE is set, so nothing is downloaded" in msg
    assert str(tmp_path / "cache" / "models--google--vit-base-patch16-224") in msg
    with pytest.raises(ValueError, match="not a hub id"):
        hub.resolve("hf:no-slash")


def test_cached_repo_loads_offline(tmp_path, monkeypatch):
    model = vitkit.create_model("vit_nano_patch4_28", num_classes=3)
    export(model, tmp_path / "src", to="hf")
    _fake_cache(tmp_path / "cache", "someone/tiny-vit", tmp_path / "src")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub.resolve("hf:someone/tiny-vit") == tmp_path / "cache" / "models--someone--tiny-vit" / "snapshots" / COMMIT
    back = vitkit.create_model("vit_nano_patch4_28", num_classes=3, pretrained="hf:someone/tiny-vit")
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
    fresh = vitkit.create_model("vit_nano_patch4_28", num_classes=3)
    assert "HF" in load_weights(fresh, f"hf:someone/tiny-vit@{COMMIT}").format
