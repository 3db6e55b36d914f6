import math

import pytest
import torch
import torch.nn.functional as F

from vitkit.layers import (Learned2dPosEmbed, PatchEmbed, RelativePositionBias, relative_position_index,
                           resample_pos_embed, sincos_2d)


def test_patch_embed_is_a_strided_conv_over_patches():
    pe = PatchEmbed(img_size=8, patch_size=4, in_chans=2, embed_dim=5)
    x = torch.randn(1, 2, 8, 8)
    tokens = pe(x)
    assert tokens.shape == (1, 4, 5)
    # token 1 is the top-right patch (raster order): a Linear on its flattened pixels
    patch = x[0, :, 0:4, 4:8].reshape(-1)
    expected = pe.proj.weight.reshape(5, -1) @ patch + pe.proj.bias
    assert torch.allclose(tokens[0, 1], expected, atol=1e-5)


def test_patch_embed_rejects_indivisible_size_naming_both_numbers():
    with pytest.raises(ValueError, match=r"30.*divisible.*4"):
        PatchEmbed(img_size=30, patch_size=4)


def test_resample_same_size_is_identity():
    pe = torch.randn(1, 1 + 49, 16)
    assert torch.equal(resample_pos_embed(pe, (7, 7), num_prefix_tokens=1), pe)


def test_resample_matches_explicit_bicubic_resize_and_keeps_prefix():
    pe = torch.randn(1, 2 + 6 * 4, 8)
    out = resample_pos_embed(pe, (9, 5), old_size=(6, 4), num_prefix_tokens=2)
    assert out.shape == (1, 2 + 45, 8)
    assert torch.equal(out[:, :2], pe[:, :2])
    grid = pe[0, 2:].reshape(6, 4, 8).permute(2, 0, 1)[None]           # (1, D, 6, 4)
    ref = F.interpolate(grid, size=(9, 5), mode="bicubic", align_corners=False)
    assert torch.allclose(out[0, 2:], ref[0].permute(1, 2, 0).reshape(45, 8), atol=1e-6)


def test_sincos_2d_layout_x_then_y():
    pos = sincos_2d((3, 4), 16)
    assert pos.shape == (12, 16)
    # token (row 1, col 2) -> x=2 in the first half, y=1 in the second half
    t = pos[1 * 4 + 2]
    assert math.isclose(t[0].item(), math.sin(2.0), abs_tol=1e-6)   # first x frequency is 1
    assert math.isclose(t[4].item(), math.cos(2.0), abs_tol=1e-6)
    assert math.isclose(t[8].item(), math.sin(1.0), abs_tol=1e-6)
    assert math.isclose(t[12].item(), math.cos(1.0), abs_tol=1e-6)


def test_learned_2d_concatenates_x_and_y_halves():
    pe = Learned2dPosEmbed((3, 4), 8, num_prefix_tokens=1)
    torch.nn.init.normal_(pe.col)
    torch.nn.init.normal_(pe.row)
    table = pe.table((3, 4))[0]
    assert torch.equal(table[1 + 2 * 4 + 3], torch.cat([pe.col[3], pe.row[2]]))
    assert torch.equal(table[0], pe.prefix[0, 0])


def test_relative_index_depends_only_on_offset():
    idx = relative_position_index((3, 3))
    coords = [(i, j) for i in range(3) for j in range(3)]
    seen = {}
    for a, (ya, xa) in enumerate(coords):
        for b, (yb, xb) in enumerate(coords):
            key = (ya - yb, xa - xb)
            assert seen.setdefault(key, idx[a, b].item()) == idx[a, b].item()
    assert len(set(seen.values())) == len(seen) == 25


def test_relative_bias_shapes_and_prefix_rows():
    rpb = RelativePositionBias((2, 2), num_heads=3, num_prefix_tokens=1)
    torch.nn.init.normal_(rpb.table)
    b = rpb((2, 2))
    assert b.shape == (3, 5, 5)
    assert torch.equal(b[:, 0, 1], rpb.table[9])      # prefix -> patch row of the table
    small = rpb((1, 2))                               # smaller grid reuses trained offsets
    assert torch.equal(small[:, 1:, 1:], b[:, 1:3, 1:3])
    with pytest.raises(ValueError, match="larger"):
        rpb((3, 3))
