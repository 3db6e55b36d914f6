"""Every plot writes a PNG that PIL opens; the data behind the pictures is checked where it can be."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.viz import (
    confusion_matrix,
    image_grid,
    make_grid,
    patch_filter_components,
    plot_confusion,
    plot_curves,
    plot_patch_filters,
    plot_pos_embed_similarity,
    plot_rollout,
    pos_embed_similarity,
    read_metrics,
)
from vitkit.viz.pos_embed import similarity_mosaic


def _open(path, mode):
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.mode == mode
        return im.size


LOG_LINES = [
    '{"kind": "step", "epoch": 0, "step": 1, "loss": 2.3, "lr": 0.001}',
    '{"kind": "step", "epoch": 0, "step": 2, "loss": 2.0, "lr": 0.001, "grad_norm": 1.5}',
    "not json at all",
    "",
    "[1, 2, 3]",
    '{"kind": "step", "epoch": 0, "step": 3}',  # no loss
    '{"kind": "step", "epoch": 0, "step": "3", "loss": 1.0}',  # step is a string
    '{"kind": "config", "lr": 0.1}',  # a kind we do not plot
    '{"kind": "epoch", "epoch": 0, "train_loss": 1.9, "test_loss": 1.2, "test_acc": 0.61}',
    '{"epoch": 1, "step": 1, "loss": 1.1}',  # no kind, has step: a step line (counter restarted)
    '{"epoch": 1, "step": 2, "loss": 0.9}',
    '{"epoch": 1, "train_loss": 1.0, "test_loss": 0.8, "test_acc": 0.8, "train_acc": 0.75}',  # no kind: epoch
    '{"kind": "epoch", "train_loss": 0.5}',  # no epoch
    '{"kind": "step", "epoch": 1, "step": 3, "lo',  # truncated last line (a run that was killed)
]


def test_plot_curves_tolerates_malformed_lines(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text("\n".join(LOG_LINES))
    steps, epochs = read_metrics(log)
    assert [s["loss"] for s in steps] == [2.3, 2.0, 1.1, 0.9]
    assert [e["epoch"] for e in epochs] == [0, 1]
    out = plot_curves(log, tmp_path / "deep" / "er" / "curves.png")
    assert out == tmp_path / "deep" / "er" / "curves.png"
    _open(out, "RGBA")


def test_plot_curves_epochs_only_and_empty(tmp_path):
    log = tmp_path / "m.jsonl"
    log.write_text("\n".join(json.dumps({"kind": "epoch", "epoch": e, "train_loss": 1 / (e + 1)}) for e in range(3)))
    _open(plot_curves(log, tmp_path / "c.png"), "RGBA")  # no accuracy, no steps: still a picture
    bad = tmp_path / "bad.jsonl"
    bad.write_text("garbage\n{}\n")
    with pytest.raises(ValueError, match="no usable"):
        plot_curves(bad, tmp_path / "never.png")


def test_plot_confusion(tmp_path):
    cm = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    _open(plot_confusion(cm, ["zero", "one", "two"], tmp_path / "cm.png"), "RGBA")
    _open(plot_confusion(cm.numpy(), None, tmp_path / "cmn.png", normalize=True), "RGBA")
    with pytest.raises(ValueError, match="class names"):
        plot_confusion(cm, ["a"], tmp_path / "x.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_rollout(tmp_path, channels):
    images = torch.randn(2, channels, 16, 16)
    maps = torch.rand(2, 4, 4)  # patch-grid maps are resized to the image
    out = plot_rollout(images, maps, tmp_path / "r" / "rollout.png", titles=["a", "b"], mean=[0.5] * channels, std=0.25)
    _open(out, "RGBA")
    with pytest.raises(ValueError, match="channels"):
        plot_rollout(torch.rand(1, 2, 8, 8), torch.rand(1, 8, 8), tmp_path / "x.png")


def test_image_grid_is_pixel_exact(tmp_path):
    imgs = torch.rand(5, 3, 4, 6)
    out = image_grid(imgs, nrow=3, out_png=tmp_path / "g" / "grid.png", padding=2, pad_value=1.0)
    size = _open(out, "RGB")
    assert size == (3 * (6 + 2) + 2, 2 * (4 + 2) + 2)  # (W, H): 3 columns, 2 rows
    px = np.asarray(Image.open(out))
    # image 4 sits at row 1, column 1: top-left pixel at y = 2 + 6, x = 2 + 8
    np.testing.assert_array_equal(px[8:12, 10:16], (imgs[4].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
    assert (px[0] == 255).all() and (px[-8:, -8:] == 255).all()  # padding and the empty sixth slot

    # un-normalisation: (x - .5) / .25 comes back to x; one channel gives a gray ("L") PNG
    gray = torch.rand(4, 1, 5, 5)
    out = image_grid((gray - 0.5) / 0.25, nrow=2, out_png=tmp_path / "gray.png", mean=0.5, std=0.25, scale=2)
    _open(out, "L")
    px = np.asarray(Image.open(out))
    np.testing.assert_allclose(px[4:14:2, 4:14:2], gray[0, 0].numpy() * 255, atol=1.0)
    assert make_grid(gray, nrow=10, padding=0).shape == (1, 5, 20)


def test_pos_embed_similarity(tmp_path):
    gh, gw, d = 3, 4, 16
    e = torch.randn(gh * gw, d)
    sim = pos_embed_similarity(e[None])
    torch.testing.assert_close(sim.diagonal(), torch.ones(gh * gw))
    torch.testing.assert_close(sim, torch.nn.functional.cosine_similarity(e[:, None], e[None], dim=-1))
    mosaic = similarity_mosaic(sim, (gh, gw))
    assert mosaic.shape == (gh * (gh + 1) - 1, gw * (gw + 1) - 1)
    r, c = 1, 2  # tile of position 1 * gw + 2, at (r * (gh + 1), c * (gw + 1))
    np.testing.assert_allclose(mosaic[r * 4 : r * 4 + gh, c * 5 : c * 5 + gw], sim[r * gw + c].view(gh, gw).numpy())
    assert np.isnan(mosaic[gh, :]).all()  # gutter between tile rows
    _open(plot_pos_embed_similarity(e, (gh, gw), tmp_path / "pe.png"), "RGBA")
    with pytest.raises(ValueError, match="class"):
        plot_pos_embed_similarity(torch.randn(gh * gw + 1, d), (gh, gw), tmp_path / "x.png")


def test_patch_filters(tmp_path):
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(3 * 4 * 4, generator=g)
    direction /= direction.norm()
    # 32 filters spread mostly along one planted direction, plus small noise
    w = (torch.randn(32, 1, generator=g) * 5.0 * direction + 0.1 * torch.randn(32, 48, generator=g)).view(32, 3, 4, 4)
    comps = patch_filter_components(w, 5)
    assert comps.shape == (5, 3, 4, 4)
    flat = comps.flatten(1)
    torch.testing.assert_close(flat @ flat.T, torch.eye(5), atol=1e-5, rtol=0)
    assert abs(float(flat[0] @ direction)) > 0.99
    _open(plot_patch_filters(w, tmp_path / "f.png", num_components=5), "RGBA")
