"""Photos of mixed sizes: random resized crops from the decoded original, resize + centre crop for
evaluation, the per-sample stage of the loader (in worker processes, with the same batches)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vitkit.data import (DEFAULT_CROP_PCT, PerSample, RandomCropResize, ResizeCenterCrop, build, eval_transform,
                         make_loader, model_input_transform, photo_eval_transform, photo_train_transform,
                         train_transform)
from vitkit.data.photo import crop_box, eval_resize_size
from vitkit.data.transforms import Compose, RandomErasing, RandomResizedCrop, Resize

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, as a checkpoint would give


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _photo(h, w, seed=0, c=3):
    """A smooth random picture (C, H, W) in [0, 1]."""
    g = _gen(seed)
    low = torch.rand(1, c, max(2, h // 16), max(2, w // 16), generator=g)
    return F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)[0]


def _stripes(h, w):
    """Vertical 1-pixel stripes, 0 and 1: the highest frequency an image holds."""
    x = torch.zeros(3, h, w)
    x[..., 1::2] = 1.0
    return x


# ---------------------------------------------------------------------------- training crop from the original
def test_whole_image_crop_equals_the_resized_image():
    x = _photo(300, 400)  # W/H = 4/3
    out = RandomCropResize(224, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3))(x, generator=_gen())
    expected = F.interpolate(x[None], size=(224, 224), mode="bicubic", antialias=True,
                             align_corners=False).clamp(0, 1)[0]
    assert torch.equal(out, expected)
    bilinear = RandomCropResize(224, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3), interpolation="bilinear")
    assert torch.equal(bilinear(x, generator=_gen()),
                       F.interpolate(x[None], size=(224, 224), mode="bilinear", antialias=True, align_corners=False)[0])


def test_crop_box_is_torchvisions_sampling():
    g = _gen(3)
    for _ in range(200):
        top, left, bh, bw = crop_box(300, 400, (0.08, 1.0), (3 / 4, 4 / 3), g)
        assert 0 <= top and top + bh <= 300 and 0 <= left and left + bw <= 400
        assert 0.08 * 300 * 400 * 0.95 <= bh * bw <= 300 * 400
        assert 3 / 4 - 0.05 <= bw / bh <= 4 / 3 + 0.05
    # no box can fit the ratio in a 1000x10 strip: the fallback is the largest centred box within the ratio
    assert crop_box(10, 1000, (0.5, 1.0), (3 / 4, 4 / 3), _gen()) == (0, (1000 - 13) // 2, 10, 13)


def test_crops_come_from_the_original_pixels_not_a_resized_copy():
    x = _stripes(896, 896)
    side = 224 / 896  # a box of exactly 224x224 pixels: copied, not resampled
    tf = RandomCropResize(224, scale=(side ** 2, side ** 2), ratio=(1.0, 1.0))
    out = tf(x, generator=_gen(5))
    top, left, bh, bw = crop_box(896, 896, tf.scale, tf.ratio, _gen(5))
    assert (bh, bw) == (224, 224) and torch.equal(out, x[:, top:top + 224, left:left + 224])
    assert (out[..., 1:] - out[..., :-1]).abs().mean() == 1.0  # every stripe kept
    # what decoding at one size first did: the stripes average out to grey before any crop
    old = Compose([Resize(224), RandomResizedCrop(224, scale=(side ** 2, side ** 2), ratio=(1.0, 1.0))])
    flat = old(x[None], generator=_gen(5))[0]
    assert (flat[..., 1:] - flat[..., :-1]).abs().mean() < 0.05


def test_stripes_survive_the_whole_pipeline_from_a_folder(tmp_path):
    for cls in ("a", "b"):
        for i in range(5):
            (tmp_path / cls).mkdir(exist_ok=True)
            Image.fromarray((_stripes(448, 448)[0] * 255).to(torch.uint8).numpy()).save(tmp_path / cls / f"{i}.png")
    b = build(f"imagefolder:{tmp_path}")
    tf = photo_train_transform(224, (0.5,), (0.5,), random_resized_crop=(0.25, 0.25), ratio=(1.0, 1.0), hflip=0,
                               auto_augment=None, erase=0)
    x, _ = next(iter(make_loader(b.train, batch_size=4, transform=tf)))
    assert x.shape == (4, 1, 224, 224)
    assert torch.equal(x.abs(), torch.ones_like(x))  # (0 or 1 - 0.5) / 0.5: the file's own pixels, unresampled


# ---------------------------------------------------------------------------- evaluation: resize + centre crop
@pytest.mark.parametrize("h,w", [(300, 500), (640, 360), (224, 224), (180, 200)])
def test_resize_center_crop_is_the_direct_computation(h, w):
    x = _photo(h, w, seed=h)
    out = ResizeCenterCrop(224, crop_pct=0.875)(x)
    short = math.floor(224 / 0.875)  # 256
    rh, rw = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    resized = F.interpolate(x[None], size=(rh, rw), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)[0]
    top, left = int(round((rh - 224) / 2)), int(round((rw - 224) / 2))
    assert out.shape == (3, 224, 224)
    assert torch.equal(out, resized[:, top:top + 224, left:left + 224])


def test_resize_center_crop_matches_pil():
    """timm / DeiT evaluate with PIL: Resize(256, BICUBIC) then CenterCrop(224)."""
    rng = np.random.default_rng(0)
    arr = np.asarray(Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)).resize((250, 150)).resize(
        (500, 300), Image.BICUBIC))
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255
    out = ResizeCenterCrop(224, 0.875)(x)
    pil = Image.fromarray(arr).resize((426, 256), Image.BICUBIC)  # shorter side 300 -> 256
    ref = torch.from_numpy(np.asarray(pil.crop((101, 16, 325, 240))).copy()).permute(2, 0, 1).float() / 255
    assert (out - ref).abs().max() < 3 / 255 and (out - ref).abs().mean() < 0.5 / 255


def test_eval_resize_sizes_follow_timm():
    assert DEFAULT_CROP_PCT == 0.875
    assert eval_resize_size(300, 400, (224, 224), 0.875) == (256, 341)
    assert eval_resize_size(400, 300, (224, 224), 0.9) == (330, 248)  # floor(224 / 0.9) = 248, int(248 * 4 / 3)
    assert eval_resize_size(300, 400, (224, 160), 0.8) == (280, 200)  # non-square: each side / crop_pct
    x = ResizeCenterCrop((224, 160), 0.8)(_photo(300, 400))
    assert x.shape == (3, 224, 160)
    with pytest.raises(ValueError, match="crop_pct"):
        ResizeCenterCrop(224, 1.5)


def test_model_input_transform_with_crop_pct_takes_one_image_of_any_size():
    tf = model_input_transform(224, MEAN, STD, crop_pct=0.9)
    assert isinstance(tf, PerSample)
    for h, w in ((300, 500), (1000, 200)):
        x = _photo(h, w)
        y = tf(x[None])
        assert y.shape == (1, 3, 224, 224)
        direct = (ResizeCenterCrop(224, 0.9)(x) - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
        torch.testing.assert_close(y[0], direct)
    assert not isinstance(model_input_transform(224, MEAN, STD), PerSample)  # runs trained with a plain resize


# ---------------------------------------------------------------------------- the training recipe
def test_photo_train_transform_is_deits_recipe_and_deterministic():
    tf = photo_train_transform(224, MEAN, STD)
    steps = [type(t).__name__ for t in tf.transform.transforms]
    assert steps == ["RandomCropResize", "RandomHorizontalFlip", "RandAugment", "Normalize", "RandomErasing"]
    crop, ra, erase = tf.transform.transforms[0], tf.transform.transforms[2], tf.transform.transforms[4]
    assert (crop.scale, crop.ratio, crop.interpolation) == ((0.08, 1.0), (3 / 4, 4 / 3), "bicubic")
    assert (ra.num_ops, ra.magnitude, ra.magnitude_std, ra.prob, ra.fill) == (2, 9.0, 0.5, 0.5, MEAN)
    assert "PosterizeIncreasing" in ra.ops  # inc1
    assert (erase.p, erase.mode) == (0.25, "pixel")
    x = _photo(375, 500)
    a, b = tf(x, generator=_gen(1)), tf(x, generator=_gen(1))
    assert a.shape == (3, 224, 224) and torch.equal(a, b)
    assert not torch.equal(a, tf(x, generator=_gen(2)))


def test_pixel_erasing_fills_with_unit_normal_noise():
    x = torch.zeros(64, 3, 32, 32)
    out = RandomErasing(p=1.0, mode="pixel", scale=(0.2, 0.3))(x, generator=_gen())
    erased = out[out != 0]
    assert 0.15 * x.numel() < erased.numel() < 0.35 * x.numel()
    assert abs(erased.mean()) < 0.05 and abs(erased.std() - 1) < 0.05
    assert torch.equal(out, RandomErasing(p=1.0, mode="pixel", scale=(0.2, 0.3))(x, generator=_gen()))


def test_bundle_transforms_for_one_size_bundles_take_the_new_keys():
    b = build("digits")
    tf = train_transform(b, auto_augment="rand-m9-mstd0.5", erase=0.5, erase_mode="pixel", hflip=0.5)
    x, _ = next(iter(make_loader(b.train, batch_size=16, transform=tf, seed=1)))
    assert x.shape == (16, 1, 8, 8) and torch.isfinite(x).all()
    with pytest.raises(TypeError, match="interpolation"):
        train_transform(b, interpolation="bicubic")  # one-size bundles resize bilinearly, as before
    with pytest.raises(TypeError, match="auto_augment"):
        train_transform(b, auto_augment="rand-q3")
    with pytest.raises(TypeError, match="erase_mode"):
        train_transform(b, erase_mode="noise")


# ---------------------------------------------------------------------------- a folder of real-world files
@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """2 classes x 6 files: RGB JPEGs, grayscale PNGs and RGBA PNGs of several sizes."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    sizes = [(300, 400), (480, 320), (257, 611), (200, 200), (333, 250), (640, 480)]
    for c, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir()
        for i, (h, w) in enumerate(sizes):
            img = (_photo(h, w, seed=10 * c + i).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            if i % 3 == 0:
                Image.fromarray(img).save(root / cls / f"{i}.jpg", quality=90)
            elif i % 3 == 1:
                Image.fromarray(img[..., 0]).save(root / cls / f"{i}.png")  # grayscale
            else:
                alpha = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
                Image.fromarray(np.concatenate([img, alpha], 2), "RGBA").save(root / cls / f"{i}.png")
    return root


def test_a_folder_of_mixed_photos_loads_at_224_with_three_channels(photos):
    b = build(f"imagefolder:{photos}", split_seed=0)
    assert b.keep_original and b.in_chans == 3 and len(b.train) + len(b.test) == 12
    assert len({tuple(b.train[i][0].shape) for i in range(len(b.train))}) > 3  # kept at their own sizes
    for tf, ds in ((train_transform(b, 224, mean=MEAN, std=STD), b.train),
                   (eval_transform(b, 224, mean=MEAN, std=STD), b.test)):
        assert isinstance(tf, PerSample)
        for x, y in make_loader(ds, batch_size=4, transform=tf, drop_last=False):
            assert x.shape[1:] == (3, 224, 224) and x.dtype == torch.float32 and torch.isfinite(x).all()
            assert y.dtype == torch.int64


def test_batching_different_sizes_without_a_per_sample_crop_says_what_to_do(photos):
    b = build(f"imagefolder:{photos}")
    with pytest.raises(ValueError, match="per-sample transform"):
        next(iter(make_loader(b.train, batch_size=len(b.train))))


def test_worker_processes_give_the_same_batches_as_loading_here(photos):
    b = build(f"imagefolder:{photos}", split_seed=0)
    tf = train_transform(b, 64, mean=MEAN, std=STD)
    here = make_loader(b.train, batch_size=3, shuffle=True, drop_last=True, seed=7, transform=tf)
    workers = make_loader(b.train, batch_size=3, shuffle=True, drop_last=True, seed=7, transform=tf, num_workers=2)
    state = torch.get_rng_state()
    for epoch in (0, 1, 0):  # persistent workers serve every epoch; an epoch replays exactly
        here.set_epoch(epoch), workers.set_epoch(epoch)
        a, w = list(here), list(workers)
        assert len(a) == len(w) == len(b.train) // 3
        for (xa, ya), (xw, yw) in zip(a, w, strict=True):
            assert torch.equal(ya, yw) and torch.equal(xa, xw)
    assert torch.equal(torch.get_rng_state(), state)  # loading draws nothing from torch's global RNG
    tail = list(workers.iter_from(2))  # resuming mid-epoch gives the batches that would have followed
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(tail, a[2:], strict=True))
    next(iter(workers))  # a pass left unfinished: the next one still starts from its first batch
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(workers, a, strict=True))
    w1 = make_loader(b.train, batch_size=3, shuffle=True, drop_last=True, seed=7, transform=tf, num_workers=1,
                     persistent_workers=False)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(w1, a, strict=True))  # epoch 0 again, 1 worker
    workers.close()


def test_in_memory_data_with_a_per_sample_transform_matches_across_paths():
    b = build("digits")
    tf = PerSample(Compose([RandomCropResize(6, scale=(0.3, 1.0), interpolation="bilinear")]))
    here = make_loader(b.train, batch_size=8, shuffle=True, seed=2, transform=tf)
    workers = make_loader(b.train, batch_size=8, shuffle=True, seed=2, transform=tf, num_workers=1)
    for (xa, ya), (xw, yw) in zip(list(here)[:5], list(workers)[:5], strict=True):
        assert xa.shape == (8, 1, 6, 6) and torch.equal(ya, yw) and torch.equal(xa, xw)
    workers.close()


def test_squash_crop_mode_resizes_both_sides():
    """PretrainedCfg.crop_mode "squash" (HF processors that resize to a fixed (H, W)): aspect not kept."""
    x = _photo(300, 500)
    out = ResizeCenterCrop(224, crop_pct=1.0, crop_mode="squash")(x)
    expected = F.interpolate(x[None], size=(224, 224), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    assert torch.equal(out, expected[0])
    tf = photo_eval_transform(224, MEAN, STD, crop_pct=0.9, crop_mode="squash", interpolation="bilinear")
    assert tf(x).shape == (3, 224, 224)
    with pytest.raises(ValueError, match="crop_mode"):
        ResizeCenterCrop(224, crop_mode="shorter")


def test_a_batch_transform_over_images_of_their_own_sizes_runs_per_image(photos):
    """Callers that pass a plain batch transform (a run's `model_input_transform`) still get batches."""
    b = build(f"imagefolder:{photos}")
    tf = model_input_transform((48, 40), MEAN, STD)  # plain resize + Normalize, no crop_pct
    loader = make_loader(b.test, batch_size=len(b.test), transform=tf)
    assert loader.sample_transform is tf and loader.transform is None
    x, _ = next(iter(loader))
    assert x.shape == (len(b.test), 3, 48, 40)
    torch.testing.assert_close(x[0], tf(b.test[0][0]))
