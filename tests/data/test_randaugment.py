"""RandAugment: every op gives a valid image, the PIL ops it follows agree, the draws are reproducible."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

from vitkit.data import RandAugment, rand_augment
from vitkit.data.randaugment import (RAND_INCREASING_OPS, RAND_OPS, apply_op, auto_contrast, brightness, color,
                                     contrast, equalize, posterize, rotate, sharpness, shear_x, solarize,
                                     solarize_add, translate_x_rel)

ALL_OPS = sorted(set(RAND_OPS) | set(RAND_INCREASING_OPS))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _uint8_image(h=24, w=20, seed=0):
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8))
    return np.asarray(small.resize((w, h), Image.BILINEAR)).copy()


def _tensor(arr):
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255


def _pil_result(arr_out):
    return _tensor(np.asarray(arr_out).copy())


@pytest.mark.parametrize("name", ALL_OPS)
@pytest.mark.parametrize("channels", [3, 1])
def test_every_op_gives_a_valid_image_at_every_magnitude(name, channels):
    x = _tensor(_uint8_image())[:channels]
    for m in (0.0, 4.5, 9.0, 10.0):
        y = apply_op(x, name, m, fill=(0.5,) * channels, interpolation="bicubic", generator=_gen(1))
        assert y.shape == x.shape and y.dtype == x.dtype
        assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1, (name, m)
        assert torch.equal(y, apply_op(x, name, m, fill=(0.5,) * channels, interpolation="bicubic",
                                       generator=_gen(1)))


def test_pixel_ops_agree_with_pil():
    arr = _uint8_image(seed=3)
    img, x = Image.fromarray(arr), _tensor(arr)
    exact = {"equalize": (equalize(x), ImageOps.equalize(img)),
             "posterize 2": (posterize(x, 2), ImageOps.posterize(img, 2)),
             "solarize 100": (solarize(x, 100), ImageOps.solarize(img, 100)),
             "invert": (1 - x, ImageOps.invert(img))}
    for name, (ours, theirs) in exact.items():
        torch.testing.assert_close(ours, _pil_result(theirs), atol=1e-6, rtol=0, msg=name)
    assert torch.equal(posterize(x, 0), torch.zeros_like(x))  # 0 bits (PosterizeIncreasing at M=10): black, as
    # PIL < 12 gave (PIL 13 refuses bits=0)
    lut = [min(255, i + 40) if i < 128 else i for i in range(256)] * 3  # timm's solarize_add
    torch.testing.assert_close(solarize_add(x, 40), _pil_result(img.point(lut)), atol=1e-6, rtol=0)
    close = {"autocontrast": (auto_contrast(x), ImageOps.autocontrast(img)),
             "color 1.6": (color(x, 1.6), ImageEnhance.Color(img).enhance(1.6)),
             "contrast 0.4": (contrast(x, 0.4), ImageEnhance.Contrast(img).enhance(0.4)),
             "brightness 1.5": (brightness(x, 1.5), ImageEnhance.Brightness(img).enhance(1.5)),
             "sharpness 1.8": (sharpness(x, 1.8), ImageEnhance.Sharpness(img).enhance(1.8))}
    for name, (ours, theirs) in close.items():  # PIL rounds to uint8 (its grey / smoothed image too); ours is float
        diff = (ours - _pil_result(theirs)).abs()
        assert diff.max() <= 1.5 / 255 and diff.mean() <= 0.6 / 255, name


def test_geometric_ops_move_pixels_as_pil_does():
    x = _tensor(_uint8_image(16, 16))
    fill = torch.full((3,), 0.5)
    rot90_ccw = torch.rot90(x, 1, dims=(1, 2))  # PIL's rotate turns counter-clockwise
    torch.testing.assert_close(rotate(x, 90.0, fill), rot90_ccw, atol=1e-5, rtol=0)
    shifted = translate_x_rel(x, 0.25, fill)  # PIL: output(u) = input(u + 4): content moves left, fill on the right
    torch.testing.assert_close(shifted[:, :, :12], x[:, :, 4:], atol=1e-5, rtol=0)
    assert torch.allclose(shifted[:, :, 12:], torch.tensor(0.5))
    arr = _uint8_image(16, 16, seed=4)
    ours = shear_x(_tensor(arr), 0.25, fill)
    theirs = Image.fromarray(arr).transform((16, 16), Image.AFFINE, (1, 0.25, 0, 0, 1, 0), resample=Image.BILINEAR,
                                            fillcolor=(128, 128, 128))
    assert (ours - _pil_result(theirs)).abs().mean() < 0.02  # PIL samples at the same points, rounds to uint8


def test_rand_augment_strings_follow_timm():
    deit = rand_augment("rand-m9-mstd0.5-inc1", fill=(0.4, 0.5, 0.6), interpolation="bicubic")
    assert (deit.num_ops, deit.magnitude, deit.magnitude_std, deit.prob) == (2, 9.0, 0.5, 0.5)
    assert deit.ops == RAND_INCREASING_OPS and deit.fill == (0.4, 0.5, 0.6) and deit.interpolation == "bicubic"
    paper = rand_augment("rand-m9-n2-p1")  # Cubuk et al.: N=2, M=9, every chosen op applied
    assert (paper.num_ops, paper.magnitude, paper.prob, paper.ops) == (2, 9.0, 1.0, RAND_OPS)
    assert rand_augment("rand-mstd101").magnitude_std == float("inf")  # timm: > 100 means uniform in [0, M]
    assert rand_augment("rand").magnitude == 10.0
    for bad in ("auto-m9", "rand-m9-w0", "rand-x", "rand-m"):
        with pytest.raises(ValueError):
            rand_augment(bad)


def test_rand_augment_is_deterministic_per_generator_and_varies_per_image():
    x = _tensor(_uint8_image(32, 32)).expand(8, 3, 32, 32).contiguous()
    ra = rand_augment("rand-m9-mstd0.5-inc1", fill=(0.5, 0.5, 0.5))
    a, b, c = ra(x, generator=_gen(0)), ra(x, generator=_gen(0)), ra(x, generator=_gen(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    changed = [not torch.equal(a[i], x[i]) for i in range(8)]
    assert sum(changed) >= 4  # with p = 0.5 per op, about 3 in 4 images change
    assert len({a[i].sum().item() for i in range(8)}) > 4  # each image drew its own ops


def test_magnitude_noise_is_clipped_to_the_scale():
    ra = RandAugment(magnitude=9.5, magnitude_std=5.0)
    draws = [ra._magnitude(g) for g in [_gen(0)] for _ in range(500)]
    assert min(draws) >= 0.0 and max(draws) <= 10.0 and len(set(draws)) > 100
    assert RandAugment(magnitude=9, magnitude_std=0)._magnitude(_gen()) == 9.0


def test_fill_reads_outside_the_image():
    x = torch.zeros(3, 20, 20)
    y = apply_op(x, "TranslateYRel", 10.0, fill=(0.2, 0.4, 0.6), generator=_gen(0))  # 45% of the height
    rows = y[0].mean(1)
    assert (torch.isclose(rows, torch.tensor(0.2)).sum() >= 8) and (rows == 0).sum() >= 10
    assert torch.allclose(y[:, rows > 0.19].mean((1, 2)), torch.tensor([0.2, 0.4, 0.6]))
    assert F.mse_loss(y, apply_op(x, "TranslateYRel", 10.0, fill=(0.2, 0.4, 0.6), generator=_gen(0))) == 0


@pytest.mark.parametrize("channels,interpolation", [(3, "bicubic"), (1, "bilinear")])
def test_batched_forward_equals_each_image_augmented_in_turn(channels, interpolation):
    """forward groups the images by op and applies each op once to its group; the draws come image by
    image in `augment`'s order, so the batch must equal augmenting image 0, then 1, ... with one generator.
    Every op with every magnitude: p1 (no skipped ops), 3 ops, noisy magnitudes, both op lists."""
    imgs = [_tensor(_uint8_image(24, 20, seed=s)) for s in range(64)]
    x = torch.stack(imgs)[:, :channels].contiguous()
    for spec in ("rand-m9-mstd3-n3-p1", "rand-m7-mstd101-inc1-n3", "rand-m10-n2"):
        ra = rand_augment(spec, fill=(0.3,) * channels, interpolation=interpolation)
        batch = ra(x, generator=_gen(5))
        g = _gen(5)
        each = torch.stack([ra.augment(x[i], g) for i in range(len(x))])
        torch.testing.assert_close(batch, each, atol=1e-6, rtol=0)
        assert not torch.equal(batch, x)
    drawn = {step[0] for _ in range(200) for step in ra.draw(_gen(_)) if step}
    assert drawn == set(RAND_OPS)  # the grouping saw every op
