"""Intensity jitter and Gaussian blur against their formulas; contrastive views: shapes, independence, seeds."""
import math

import pytest
import torch

from vitkit.data.transforms import RandomGaussianBlur, RandomIntensityJitter, gaussian_kernel1d
from vitkit.tasks.contrastive import TwoViews


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=_g(seed))


def _fit_factor(y, x):
    """Least-squares c per sample with y = c x: (B, 1, 1, 1)."""
    return ((y * x).sum((1, 2, 3)) / (x * x).sum((1, 2, 3))).view(-1, 1, 1, 1)


# ---- intensity jitter -----------------------------------------------------------------------------
def test_brightness_scales_each_sample_by_one_factor_in_range():
    x = _rand(16, 2, 5, 5) * 0.5 + 0.1  # in [0.1, 0.6]: b x stays in [0, 1], no clamping
    out = RandomIntensityJitter(brightness=0.6, contrast=0.0, p=1.0)(x, generator=_g())
    ratio = (out / x).flatten(1)
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5, rtol=0)  # one factor per sample
    factors = ratio[:, 0]
    assert (factors >= 0.4 - 1e-6).all() and (factors <= 1.6 + 1e-6).all()
    assert factors.std() > 0.05  # per sample, not per batch


def test_contrast_blends_with_the_mean_grey_level():
    x = _rand(16, 1, 6, 6) * 0.4 + 0.3  # away from the clamp limits
    out = RandomIntensityJitter(brightness=0.0, contrast=0.5, p=1.0)(x, generator=_g())
    mean = x.mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(out.mean((1, 2, 3), keepdim=True), mean, atol=1e-5, rtol=0)  # mean kept
    c = _fit_factor(out - mean, x - mean)  # out - mean = c (x - mean), one c per sample
    torch.testing.assert_close(out, c * (x - mean) + mean, atol=1e-5, rtol=0)
    assert (c >= 0.5 - 1e-5).all() and (c <= 1.5 + 1e-5).all() and c.std() > 0.05


def test_rgb_contrast_uses_luma():
    x = _rand(4, 3, 5, 5) * 0.4 + 0.3
    out = RandomIntensityJitter(brightness=0.0, contrast=0.5, p=1.0)(x, generator=_g())
    luma = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).mean((1, 2)).view(4, 1, 1, 1)
    c = _fit_factor(out - luma, x - luma)
    torch.testing.assert_close(out, c * (x - luma) + luma, atol=1e-5, rtol=0)


def test_jitter_clamps_and_leaves_unchosen_samples_untouched():
    x = _rand(64, 1, 4, 4)
    out = RandomIntensityJitter(brightness=0.9, contrast=0.9, p=0.5)(x, generator=_g())
    assert out.min() >= 0 and out.max() <= 1
    same = (out == x).flatten(1).all(1)
    assert 10 < same.sum() < 54  # about half the samples, bit for bit
    assert torch.equal(RandomIntensityJitter(p=0.0)(x, generator=_g()), x)
    y = _rand(4, 1, 4, 4) * 3 - 1  # normalised-like values: clamp=None keeps them outside [0, 1]
    assert RandomIntensityJitter(clamp=None, p=1.0)(y, generator=_g()).min() < 0


# ---- Gaussian blur ----------------------------------------------------------------------------------
def test_gaussian_kernel_equals_the_formula():
    for sigma in (0.5, 1.3):
        want = [math.exp(-t * t / (2 * sigma * sigma)) for t in range(-3, 4)]
        want = [w / sum(want) for w in want]
        got = gaussian_kernel1d(torch.tensor([sigma], dtype=torch.float64), 7)[0]
        torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), atol=1e-12, rtol=0)
    identity = torch.tensor([0, 0, 1, 0, 0.0], dtype=torch.float64)
    assert torch.equal(gaussian_kernel1d(torch.tensor([0.0]), 5)[0], identity)


def test_blur_of_a_point_is_the_2d_gaussian():
    sigma = 0.8
    x = torch.zeros(1, 1, 15, 15)
    x[..., 7, 7] = 1.0
    out = RandomGaussianBlur(sigma=(sigma, sigma), p=1.0, kernel_size=5)(x, generator=_g())
    g = [math.exp(-t * t / (2 * sigma * sigma)) for t in range(-2, 3)]
    g = [v / sum(g) for v in g]
    want = torch.zeros(15, 15)
    for i in range(5):
        for j in range(5):
            want[5 + i, 5 + j] = g[i] * g[j]
    torch.testing.assert_close(out[0, 0], want, atol=1e-6, rtol=0)


def test_blur_keeps_constants_and_unchosen_samples():
    c = torch.full((3, 2, 9, 9), 0.7)
    torch.testing.assert_close(RandomGaussianBlur((0.5, 2.0), p=1.0)(c, generator=_g()), c, atol=1e-6, rtol=0)
    x = _rand(32, 1, 9, 9)
    out = RandomGaussianBlur((0.5, 2.0), p=0.5)(x, generator=_g())
    same = (out == x).flatten(1).all(1)
    assert 4 < same.sum() < 28
    assert torch.equal(RandomGaussianBlur(p=0.0)(x, generator=_g()), x)


def test_blur_sigma_is_per_sample():
    x = torch.zeros(2, 1, 41, 41)
    x[..., 20, 20] = 1.0  # the 19-tap kernel (sigma <= 3) stays inside
    out = RandomGaussianBlur(sigma=(0.3, 3.0), p=1.0)(x, generator=_g(3))
    assert not torch.allclose(out[0], out[1])  # same input, different blur
    torch.testing.assert_close(out.sum((1, 2, 3)), torch.ones(2), atol=1e-5, rtol=0)  # mass kept away from the border


# ---- two views ----------------------------------------------------------------------------------------
def test_views_shapes_differ_and_reproduce():
    x = _rand(8, 1, 28, 28) * 2 - 0.5
    views = TwoViews(mean=(0.13,), std=(0.31,))
    x1, x2 = views(x, generator=_g(0))
    assert x1.shape == x2.shape == x.shape
    assert (x1 - x2).abs().flatten(1).mean(1).min() > 1e-3  # every pair differs
    assert not torch.allclose(x1, x)
    y1, y2 = views(x, generator=_g(0))
    assert torch.equal(x1, y1) and torch.equal(x2, y2)
    z1, _ = views(x, generator=_g(1))
    assert not torch.allclose(x1, z1)
    torch.manual_seed(5)
    a = views(x)
    torch.manual_seed(5)
    b = views(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # global RNG when no generator
    s1, _ = TwoViews(size=20)(x, generator=_g())
    assert s1.shape == (8, 1, 20, 20)


def test_views_fill_with_black_in_pixel_units():
    mean, std = 0.13, 0.31
    black = torch.full((4, 1, 28, 28), (0.0 - mean) / std)  # an all-black digit, normalised
    x1, x2 = TwoViews(translate=0.2, mean=(mean,), std=(std,))(black, generator=_g())
    torch.testing.assert_close(x1, black, atol=1e-5, rtol=0)  # crops, shifts, jitter, blur of black stay black
    torch.testing.assert_close(x2, black, atol=1e-5, rtol=0)
    # without the statistics, the fill is 0 in normalised units: the border changes
    y1, _ = TwoViews(translate=0.2, crop_scale=(1.0, 1.0), jitter_p=0, blur_p=0)(black, generator=_g())
    assert (y1 - black).abs().max() > 0.1


def test_views_need_both_statistics():
    with pytest.raises(ValueError, match="both mean and std"):
        TwoViews(mean=(0.1,))
