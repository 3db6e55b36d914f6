"""Issue 18: a new user fine-tunes a pretrained ViT from the hub on a folder of their own photos, then
predicts with class names, on the command line only.

The hub is a stand-in on 127.0.0.1 (tests/weights/hub_server.py) serving a ViT-Ti/16 written by HF
transformers itself (random weights at ViT-Ti's published sizes); the photos are mixed: RGB JPEG,
grayscale PNG and RGBA PNG, of several sizes, none 224x224.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.cli import main

sys.path.insert(0, str(Path(__file__).parents[1] / "weights"))  # hub_server.py

pytestmark = pytest.mark.slow
CLASSES = ("cat", "dog", "tulip")


def _photo(path: Path, cls: int, i: int, size: tuple[int, int], mode: str) -> None:
    """A synthetic photo: a class-coloured disc on noise, at ``size`` (W, H), in ``mode``."""
    rng = np.random.default_rng(100 * cls + i)
    w, h = size
    yy, xx = np.mgrid[:h, :w]
    disc = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) < (min(w, h) / 3) ** 2
    img = rng.integers(0, 80, (h, w, 3)).astype(np.uint8)
    img[disc] = np.array([(200, 40, 40), (40, 200, 40), (40, 40, 200)][cls], dtype=np.uint8)
    im = Image.fromarray(img)
    if mode == "L":
        im = im.convert("L")
    elif mode == "RGBA":
        im = im.convert("RGBA")
        im.putalpha(200)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    kinds = [((320, 240), "RGB", "jpg"), ((180, 260), "L", "png"), ((300, 300), "RGBA", "png"), ((640, 480), "RGB", "jpg")]
    for c, name in enumerate(CLASSES):
        for i in range(8):
            size, mode, ext = kinds[i % len(kinds)]
            _photo(root / name / f"{i}.{ext}", c, i, size, mode)
    return root


@pytest.fixture
def hub(tmp_path, monkeypatch):
    from hub_server import StandInHub
    with StandInHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        yield server


def test_fine_tune_a_hub_vit_on_mixed_photos_then_predict_with_class_names(photos, hub, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    labels = {0: "tabby cat", 1: "golden retriever", 2: "tulip"}  # a hub classifier's own class names
    config = transformers.ViTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3,
                                    intermediate_size=768, image_size=224, patch_size=16, id2label=labels,
                                    label2id={v: k for k, v in labels.items()})
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "vit-tiny")
    pp = {"do_resize": True, "size": {"height": 224, "width": 224}, "image_mean": [0.5, 0.5, 0.5],
          "image_std": [0.5, 0.5, 0.5], "resample": 2}
    hub.add_folder("org/vit-tiny", tmp_path / "vit-tiny", **{"preprocessor_config.json": json.dumps(pp).encode()})

    run = tmp_path / "run"
    code = main(["train", "--model", "vit_tiny_patch16_224", "--init", "hf:org/vit-tiny", "--data",
                 f"imagefolder:{photos}", "--epochs", "1", "--batch-size", "4", "--threads", "1", "--workers", "1",
                 "--out", str(run), "--no-report"])  # no --img-size: the model's own 224
    out, err = capsys.readouterr()
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["input_size"] == [3, 224, 224] and config["classes"] == list(CLASSES)
    assert config["mean"] == [0.5, 0.5, 0.5] and config["pretrained_cfg"]["repo"] == "org/vit-tiny"
    assert config["eval_crop"]["crop_mode"] == "squash"  # the checkpoint's own preprocessing, kept for eval

    code = main(["predict", str(run), str(photos / "tulip" / "1.png"), str(photos / "cat" / "0.jpg"), "--topk", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        ranked = line.split(": ", 1)[1].split(", ")
        assert len(ranked) == 2 and all(r.split(" ")[0] in CLASSES and r.endswith("%") for r in ranked), line
    code = main(["eval", str(run), "--json"])
    result = json.loads(capsys.readouterr().out)
    last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"epoch"' in x][-1]
    assert code == 0 and result["test_acc"] == last["test_acc"] and result["test_count"] == last["test_count"]

    # the hub classifier itself, before any fine-tuning: its own class names and preprocessing
    photo = photos / "cat" / "3.jpg"
    assert main(["predict", "hf:org/vit-tiny", str(photo), "--topk", "3"]) == 0
    line = capsys.readouterr().out.strip()
    got = {r.rsplit(" ", 1)[0]: float(r.rsplit(" ", 1)[1].rstrip("%")) for r in line.split(": ", 1)[1].split(", ")}
    assert set(got) == set(labels.values())
    hf = transformers.ViTForImageClassification.from_pretrained(tmp_path / "vit-tiny").eval()
    pixels = transformers.ViTImageProcessor(**pp)(Image.open(photo).convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        want = hf(pixels).logits.softmax(-1)[0]
    for i, name in labels.items():  # PIL's resize vs ours: ~1/255 per pixel, a fraction of a point here
        assert abs(got[name] - 100 * want[i].item()) < 1.0, (name, got, want)
