"""Batch transforms on tensors: identities, known shifts and rotations, per-sample randomness."""
import pytest
import torch

from vitkit.data import build, eval_transform, train_transform
from vitkit.data.transforms import (Compose, Normalize, RandomAffine, RandomElastic, RandomErasing, RandomHorizontalFlip,
                                    RandomResizedCrop, Resize, affine)


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=_g(seed))


def test_random_affine_with_zero_params_is_identity():
    x = _rand(5, 3, 13, 17)
    torch.testing.assert_close(RandomAffine()(x, generator=_g()), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(affine(x), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("tx,ty", [(3, -2), (-4, 1), (0, 3)])
def test_integer_translate_matches_roll_on_padded_interior(tx, ty):
    x = torch.zeros(2, 3, 20, 24)
    x[..., 5:15, 5:19] = _rand(2, 3, 10, 14)  # zero border wider than the shift
    out = affine(x, translate=(tx, ty))
    torch.testing.assert_close(out, torch.roll(x, shifts=(ty, tx), dims=(-2, -1)), atol=1e-5, rtol=0)


def test_per_sample_translate():
    x = torch.zeros(2, 1, 12, 12)
    x[..., 4:8, 4:8] = 1.0
    out = affine(x, translate=torch.tensor([[2.0, 0.0], [0.0, -3.0]]))
    torch.testing.assert_close(out[0], torch.roll(x[0], 2, -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], torch.roll(x[1], -3, -2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("hw", [(10, 10), (9, 9)])
def test_rotate_90_is_counter_clockwise_rot90(hw):
    x = _rand(2, 2, *hw)
    torch.testing.assert_close(affine(x, angle=90.0), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_rotation_stays_rigid_on_non_square_images():
    x = _rand(1, 1, 10, 16)
    torch.testing.assert_close(affine(x, angle=180.0), x.flip(-1).flip(-2), atol=1e-5, rtol=0)
    y = torch.zeros(1, 1, 10, 16)
    y[..., 2:8, 5:11] = _rand(1, 1, 6, 6)  # a centred square patch turns in place
    torch.testing.assert_close(affine(y, angle=90.0)[..., 2:8, 5:11], torch.rot90(y[..., 2:8, 5:11], 1, (-2, -1)),
                               atol=1e-5, rtol=0)


def test_scale_zooms_about_the_centre():
    x = torch.zeros(1, 1, 16, 16)
    x[..., 6:10, 6:10] = 1.0  # a 4x4 square at the centre
    out = affine(x, scale=2.0)
    assert out.sum().item() == pytest.approx(64.0, abs=1e-3)  # area x4
    torch.testing.assert_close(out[..., 5:11, 5:11], torch.ones(1, 1, 6, 6), atol=1e-5, rtol=0)  # inside
    border = torch.ones(16, 16, dtype=torch.bool)
    border[3:13, 3:13] = False
    assert out[0, 0][border].abs().max() < 1e-6  # the 8x8 square (with a bilinear edge) stays centred


def test_random_affine_draws_per_sample_and_follows_the_generator():
    x = _rand(1, 1, 12, 12).expand(6, 1, 12, 12)
    t = RandomAffine(rotate=30, translate=0.1, scale=(0.8, 1.2), shear=10)
    a, b, c = t(x, generator=_g(1)), t(x, generator=_g(1)), t(x, generator=_g(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len({tuple(s.flatten().tolist()) for s in a}) == 6


def test_normalize():
    x = _rand(4, 3, 5, 5)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(Normalize(mean, std)(x), expected)
    with pytest.raises(ValueError):
        Normalize((0.1, 0.2), (1, 1))(x)


def test_resize():
    x = _rand(2, 1, 8, 8)
    assert Resize(8)(x) is x
    assert Resize((16, 12))(x).shape == (2, 1, 16, 12)
    torch.testing.assert_close(Resize(5)(torch.full((1, 3, 8, 8), 0.7)), torch.full((1, 3, 5, 5), 0.7))
    assert Resize(4)(x[0]).shape == (1, 4, 4)  # a single image works too


def test_random_resized_crop_full_box_is_identity_and_sizes():
    x = _rand(3, 2, 10, 10)
    full = RandomResizedCrop(10, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(full(x, generator=_g()), x, atol=1e-5, rtol=0)
    out = RandomResizedCrop((6, 8), scale=(0.2, 0.5))(x, generator=_g())
    assert out.shape == (3, 2, 6, 8)


def test_horizontal_flip():
    x = _rand(8, 1, 4, 5)
    assert torch.equal(RandomHorizontalFlip(1.0)(x), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(0.0)(x), x)
    out = RandomHorizontalFlip(0.5)(x, generator=_g(3))
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)]
    assert any(flipped) and not all(flipped)


def test_random_erasing_fills_one_box():
    x = torch.ones(16, 2, 20, 20)
    out = RandomErasing(p=1.0, scale=(0.05, 0.2), value=(0.25, 0.5))(x, generator=_g())
    for o in out:
        box = o[0] != 1
        rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert box.sum() == h * w  # one solid rectangle
        assert 0.03 * 400 <= box.sum() <= 0.25 * 400
        assert torch.all(o[0][box] == 0.25) and torch.all(o[1][box] == 0.5)
    assert torch.equal(RandomErasing(p=0.0)(x), x)


def test_compose_passes_generator():
    x = _rand(4, 1, 9, 9)
    t = Compose([RandomAffine(rotate=20), RandomHorizontalFlip(0.5)])
    assert torch.equal(t(x, generator=_g(4)), t(x, generator=_g(4)))


@pytest.fixture(scope="module")
def digits():
    return build("digits")


def test_train_transform_defaults_equal_eval_transform(digits):
    x = _rand(4, 1, 8, 8)
    torch.testing.assert_close(train_transform(digits)(x), eval_transform(digits)(x))
    out = eval_transform(digits, img_size=16)(x)
    assert out.shape == (4, 1, 16, 16)
    torch.testing.assert_close(eval_transform(digits)(x), (x - digits.mean[0]) / digits.std[0])


def test_train_transform_with_augmentation(digits):
    x = _rand(4, 1, 8, 8)
    t = train_transform(digits, img_size=(12, 16), hflip=0.5, rotate=10, translate=0.1, scale=(0.9, 1.1),
                        shear=5, erase=0.5)
    assert t(x, generator=_g()).shape == (4, 1, 12, 16)
    assert train_transform(digits, img_size=16, random_resized_crop=0.5)(x).shape == (4, 1, 16, 16)


def test_train_transform_unknown_key(digits):
    with pytest.raises(TypeError, match="'rotation'.*'rotate'"):
        train_transform(digits, rotation=10)


# ---------------------------------------------------------------- elastic distortion (Simard et al. 2003)
def test_random_elastic_with_zero_alpha_is_identity():
    x = _rand(3, 1, 28, 28)
    torch.testing.assert_close(RandomElastic(alpha=0.0)(x, generator=_g()), x, atol=1e-5, rtol=0)


def test_random_elastic_displaces_by_a_smooth_field_of_the_papers_size():
    """On a ramp image x(i, j) = j, bilinear sampling is exact, so output - input is the x-displacement
    field d = alpha * (G_sigma * u) itself: it must be smooth (neighbours nearly equal) and of the size
    the formula gives: std(u) = 1/sqrt(3), and a normalised Gaussian of std sigma shrinks i.i.d. noise by
    sqrt(sum g^2) ~ 1 / (2 sqrt(pi) sigma) in 2-D, so rms(d) ~ alpha / (sqrt(3) 2 sqrt(pi) sigma)."""
    h = w = 64
    ramp = torch.arange(w, dtype=torch.float32).expand(8, 1, h, w).contiguous()
    alpha, sigma = 34.0, 4.0
    d = (RandomElastic(alpha, sigma)(ramp, generator=_g()) - ramp)[..., 12:-12, 12:-12]  # away from the zero fill
    expected = alpha / (3 ** 0.5 * 2 * torch.pi ** 0.5 * sigma)  # 1.38 px
    assert 0.6 * expected < d.pow(2).mean().sqrt().item() < 1.4 * expected
    step = (d[..., :, 1:] - d[..., :, :-1]).abs().mean() / d.abs().mean()
    assert step < 0.3  # smooth: a one-pixel step changes d by a small fraction of its size (i.i.d. noise: ~1)


def test_random_elastic_draws_per_sample_and_follows_the_generator():
    x = _rand(1, 1, 28, 28).expand(4, 1, 28, 28).contiguous()
    a = RandomElastic()(x, generator=_g(1))
    torch.testing.assert_close(a, RandomElastic()(x, generator=_g(1)))
    assert not torch.allclose(a[0], a[1])
    with pytest.raises(ValueError, match="alpha"):
        RandomElastic(alpha=-1)


def test_train_transform_takes_elastic(digits):
    t = train_transform(digits, elastic=34, elastic_sigma=4)
    assert any(isinstance(s, RandomElastic) for s in t.transforms)
    with pytest.raises(TypeError, match="elastic_sigma"):
        train_transform(digits, elastic=34, elastic_sigma=0)
