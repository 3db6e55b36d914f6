"""The MAE reconstruction grid: its size, and what each row shows, read back pixel by pixel."""
import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.models.vit import ViTConfig, VisionTransformer
from vitkit.tasks.mae import MAE
from vitkit.viz.reconstruction import plot_reconstruction, reconstruct


def tiny_mae(norm_pix_loss=False, in_chans=3):
    vit = VisionTransformer(ViTConfig(img_size=16, patch_size=4, in_chans=in_chans, num_classes=0, embed_dim=32,
                                      depth=1, num_heads=2, pos_embed="sincos"))
    return MAE(vit, decoder_dim=16, decoder_depth=1, decoder_heads=2, norm_pix_loss=norm_pix_loss)


@pytest.mark.parametrize("in_chans,norm_pix_loss", [(3, False), (1, True)])
def test_grid_size_and_rows(tmp_path, in_chans, norm_pix_loss):
    torch.manual_seed(0)
    mae = tiny_mae(norm_pix_loss, in_chans).train()
    mean, std = [0.4] * in_chans, [0.2] * in_chans
    x = (torch.rand(3, in_chans, 16, 16) - 0.4) / 0.2
    noise = torch.rand(3, 16)
    out = plot_reconstruction(mae, x, tmp_path / "sub" / "recon.png", mean=mean, std=std, noise=noise, scale=2)
    assert mae.training                                            # mode given back
    img = Image.open(out)
    assert img.size == ((3 * (16 + 2) + 2) * 2, (4 * (16 + 2) + 2) * 2)   # (width, height)
    assert img.mode == ("RGB" if in_chans == 3 else "L")

    a = np.asarray(img).reshape(img.size[1], img.size[0], -1)[::2, ::2]   # undo the 2x enlargement
    tile = lambda row, col: a[2 + row * 18: 2 + row * 18 + 16, 2 + col * 18: 2 + col * 18 + 16]  # noqa: E731
    r = reconstruct(mae, x, noise)
    for col in range(3):
        pm = r["mask"][col, 0].numpy().astype(bool)                  # (16, 16) masked pixels
        assert pm.sum() == 12 * 16                                   # 12 of 16 patches of 4x4
        original, masked, pasted, raw = (tile(row, col) for row in range(4))
        expect = np.round((x[col] * 0.2 + 0.4).clamp(0, 1).permute(1, 2, 0).numpy() * 255)
        assert np.array_equal(original, expect.astype(np.uint8))
        assert (masked[pm] == 128).all() and np.array_equal(masked[~pm], original[~pm])   # grey where masked
        assert np.array_equal(pasted[~pm], original[~pm])           # visible patches pasted back
        assert np.array_equal(pasted[pm], raw[pm])                   # masked ones predicted
        assert not np.array_equal(raw[~pm], original[~pm])           # raw: the decoder's own guess everywhere


def test_norm_pix_prediction_is_mapped_back_with_patch_statistics():
    """A perfect normalised prediction (the target itself) reconstructs the image exactly."""
    mae = tiny_mae(norm_pix_loss=True)
    x = torch.randn(2, 3, 16, 16)
    target = mae.target(x)

    class Perfect(torch.nn.Module):  # MAE's interface, predicting the normalised target
        norm_pix_loss = True
        grid_of, patchify, unpatchify = mae.grid_of, mae.patchify, mae.unpatchify

        def forward(self, images, noise=None):
            return None, target, torch.ones(2, 16)

    r = reconstruct(Perfect(), x)
    assert torch.allclose(r["raw"], x, atol=1e-4)
