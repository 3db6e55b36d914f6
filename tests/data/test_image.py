"""load_image: channel conversion, resizing and errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.data import ImageLoadError, load_image


def _save(path, arr, mode=None):
    Image.fromarray(arr, mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def test_rgb_to_gray_and_back(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    p = _save(tmp_path / "c.png", rgb)
    x = load_image(p)
    assert x.shape == (3, 6, 7) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    g = load_image(p, in_chans=1)
    luma = torch.from_numpy(np.array(Image.open(p).convert("L"))).float() / 255
    assert g.shape == (1, 6, 7)
    torch.testing.assert_close(g[0], luma)


def test_gray_to_rgb(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    p = _save(tmp_path / "digit.png", gray)
    assert load_image(p).shape == (1, 4, 5)  # natural channel count
    x = load_image(p, in_chans=3)
    assert x.shape == (3, 4, 5) and torch.equal(x[0], x[2])
    torch.testing.assert_close(x[1], torch.from_numpy(gray).float() / 255)


def test_rgba_composites_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[1, 1] = (0, 0, 0, 0)      # fully transparent -> white
    p = _save(tmp_path / "a.png", rgba)
    x = load_image(p, in_chans=3)
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(x[:, 1, 1], torch.ones(3))
    assert load_image(p, in_chans=1).shape == (1, 2, 2)
    assert load_image(p, in_chans=4)[3, 1, 1] == 0.0


def test_resize_on_load(tmp_path):
    p = _save(tmp_path / "a.png", np.full((10, 20), 128, dtype=np.uint8))
    x = load_image(p, in_chans=1, size=(5, 8))
    assert x.shape == (1, 5, 8)
    torch.testing.assert_close(x, torch.full((1, 5, 8), 128 / 255))


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really" + bytes(range(256)))
    with pytest.raises(ImageLoadError, match="bad.png") as info:
        load_image(bad)
    assert isinstance(info.value, ValueError) and "replace or delete" in str(info.value)
    with pytest.raises(ValueError, match="in_chans"):
        load_image(_save(tmp_path / "ok.png", np.zeros((2, 2), np.uint8)), in_chans=2)
