"""Attention rollout against hand-computed examples and an independent numpy reference."""
import numpy as np
import pytest
import torch

from vitkit.viz import attention_rollout, discard_lowest, fuse_heads, rollout_to_image


def _one_head(*mats):
    """Square matrices -> list of (B=1, heads=1, N, N) attention tensors."""
    return [torch.tensor(m, dtype=torch.float64)[None, None] for m in mats]


def _reference(attns, p, fusion="mean"):
    """Straight from the paper, in numpy: fuse, 0.5 A + 0.5 I, renormalise, multiply later blocks on the left."""
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}[fusion]
    out = []
    for b in range(attns[0].shape[0]):
        mats = []
        for a in attns:
            f = fuse(a[b].numpy(), axis=0)
            f = 0.5 * f + 0.5 * np.eye(f.shape[0])
            mats.append(f / f.sum(1, keepdims=True))
        r = np.linalg.multi_dot(mats[::-1]) if len(mats) > 1 else mats[0]
        m = r[0, p:] if p > 0 else r.mean(0)
        out.append(m / m.max())
    return np.stack(out)


UNIFORM = np.full((4, 4), 0.25)
CLS_TO_PATCH1 = np.array([[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)


def test_hand_computed_two_blocks_class_token():
    # block 1 uniform: A_hat1 = diag 0.625, off-diagonal 0.125.
    # block 2: class token attends only to patch 1, the rest to themselves: A_hat2 row 0 = [.5, .5, 0, 0].
    # R = A_hat2 @ A_hat1, row 0 = .5 * [.625, .125, .125, .125] + .5 * [.125, .625, .125, .125]
    #   = [.375, .375, .125, .125] -> patches [.375, .125, .125] -> / .375 = [1, 1/3, 1/3].
    # (The wrong order A_hat1 @ A_hat2 would give [1, 2/7, 2/7].)
    maps = attention_rollout(_one_head(UNIFORM, CLS_TO_PATCH1), num_prefix_tokens=1)
    assert maps.shape == (1, 3)
    torch.testing.assert_close(maps, torch.tensor([[1.0, 1 / 3, 1 / 3]], dtype=torch.float64))


def test_hand_computed_two_blocks_gap():
    # Same blocks, no prefix token: rows of R are [.375, .375, .125, .125] and rows 1..3 of A_hat1;
    # column means [.1875, .3125, .25, .25] -> / .3125 = [.6, 1, .8, .8].
    maps = attention_rollout(_one_head(UNIFORM, CLS_TO_PATCH1), num_prefix_tokens=0)
    torch.testing.assert_close(maps, torch.tensor([[0.6, 1.0, 0.8, 0.8]], dtype=torch.float64))


def test_identity_attention_gives_zero_class_map_not_nan():
    # Every token attends only to itself -> R = I: the class token gets nothing from the patches.
    eye = torch.eye(5).expand(2, 3, 5, 5)
    maps = attention_rollout([eye, eye, eye], num_prefix_tokens=1)
    assert maps.shape == (2, 4) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all()
    assert torch.equal(maps, torch.zeros(2, 4))
    # With global average pooling every patch row of I contributes equally: a flat map of ones.
    torch.testing.assert_close(attention_rollout([eye, eye], num_prefix_tokens=0), torch.ones(2, 5))


def test_matches_reference_on_random_attention_prefix_and_gap():
    g = torch.Generator().manual_seed(0)
    attns = [torch.randn(2, 4, 10, 10, generator=g, dtype=torch.float64).softmax(-1) for _ in range(3)]
    for p in (0, 1, 2):
        for fusion in ("mean", "max", "min"):
            got = attention_rollout(attns, num_prefix_tokens=p, head_fusion=fusion)
            want = _reference(attns, p, fusion)
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
            assert got.amax(-1).allclose(torch.ones(2, dtype=torch.float64))
    # a stacked (L, B, H, N, N) tensor is the same as the list
    torch.testing.assert_close(attention_rollout(torch.stack(attns), 1), attention_rollout(attns, 1))


def test_head_fusion_hand_computed_and_different():
    # One block, class + 2 patches; the heads disagree on the class token's row.
    a = np.eye(3)[None].repeat(2, 0)
    a[0, 0] = [0.2, 0.8, 0.0]
    a[1, 0] = [0.6, 0.2, 0.2]
    attn = [torch.tensor(a)[None]]  # (1, 2, 3, 3)
    # Adding 0.5 I only touches column 0 and renormalising scales the row, so the patch ratios
    # are those of the fused row: mean [.5, .1] -> [1, .2]; max [.8, .2] -> [1, .25]; min [.2, 0] -> [1, 0].
    mean = attention_rollout(attn, 1, head_fusion="mean")
    mx = attention_rollout(attn, 1, head_fusion="max")
    mn = attention_rollout(attn, 1, head_fusion="min")
    torch.testing.assert_close(mean, torch.tensor([[1.0, 0.2]], dtype=torch.float64))
    torch.testing.assert_close(mx, torch.tensor([[1.0, 0.25]], dtype=torch.float64))
    torch.testing.assert_close(mn, torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    assert not torch.allclose(mean, mx)
    with pytest.raises(ValueError, match="head_fusion"):
        attention_rollout(attn, 1, head_fusion="median")


def test_discard_keeps_diagonal_even_when_smallest():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 6, 6, generator=g) + 0.1
    a.diagonal(dim1=-2, dim2=-1).fill_(1e-4)  # the diagonal is the smallest weight of every row
    out = discard_lowest(a, 0.5)  # k = floor(0.5 * 6) = 3 weights dropped per row
    assert torch.equal(out.diagonal(dim1=-2, dim2=-1), a.diagonal(dim1=-2, dim2=-1))
    assert ((out == 0).sum(-1) == 3).all()
    eye = torch.eye(6, dtype=torch.bool)
    kept = a.masked_fill(eye | (out == 0), float("inf"))  # off-diagonal survivors
    dropped = a.masked_fill(out != 0, -float("inf"))
    assert (kept.amin(-1) >= dropped.amax(-1)).all()  # every survivor beats every dropped weight
    # a ratio near 1 leaves only the diagonal: never more than N - 1 dropped
    torch.testing.assert_close(discard_lowest(a, 0.99), torch.diag_embed(a.diagonal(dim1=-2, dim2=-1)))
    assert torch.equal(discard_lowest(a, 0.0), a)
    with pytest.raises(ValueError):
        discard_lowest(a, 1.0)


def test_discard_in_rollout_hand_computed():
    # Class row [.05, .45, .3, .2] (its own weight the smallest); ratio .5 drops 2 of 4: .2 and .3.
    a = np.eye(4)
    a[0] = [0.05, 0.45, 0.3, 0.2]
    attn = _one_head(a)
    torch.testing.assert_close(attention_rollout(attn, 1), torch.tensor([[1.0, 2 / 3, 4 / 9]], dtype=torch.float64))
    torch.testing.assert_close(attention_rollout(attn, 1, discard_ratio=0.5), torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))


def test_input_checks():
    with pytest.raises(ValueError, match="empty"):
        attention_rollout([], 1)
    with pytest.raises(ValueError, match="block 1"):
        attention_rollout([torch.eye(5).expand(1, 1, 5, 5), torch.eye(4).expand(1, 1, 4, 4)], 1)
    with pytest.raises(ValueError, match="no patches"):
        attention_rollout([torch.eye(2).expand(1, 1, 2, 2)], 2)
    assert fuse_heads(torch.eye(3)[None]).shape == (1, 3, 3)  # already fused passes through


def test_rollout_to_image_raster_order_and_range():
    maps = torch.zeros(2, 4)
    maps[0, 1] = 1.0  # patch (row 0, col 1): the top-right quadrant of a 2x2 grid
    maps[1] = 0.5
    img = rollout_to_image(maps, 2, (8, 8))
    assert img.shape == (2, 8, 8)
    assert img.min() >= 0 and img.max() <= 1
    top_right = img[0, :4, 4:].sum()
    assert top_right > img[0, :4, :4].sum() and top_right > img[0, 4:, 4:].sum()
    assert img[0, 1, 6] == 1.0  # far from the other cells, the corner is exactly the cell's value
    torch.testing.assert_close(img[1], torch.full((8, 8), 0.5))
    # non-square grid
    assert rollout_to_image(torch.rand(3, 6), (2, 3), (4, 9)).shape == (3, 4, 9)
    with pytest.raises(ValueError, match="2x2"):
        rollout_to_image(torch.rand(1, 5), 2, 8)
