"""imagefolder: layouts, channel/size unification, lazy vs in-memory, and clear errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.data import ImageLoadError, build, eval_transform, make_loader, train_transform


def _img(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _pixels(seed, h=12, w=10, c=3):
    rng = np.random.default_rng(seed)
    shape = (h, w) if c == 1 else (h, w, c)
    return rng.integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture
def mixed(tmp_path):
    """3 classes x 5 images of 12x10: 'ant' grayscale PNG, 'bee' RGB PNG, 'cat' RGB BMP + one 20x20 RGB PNG."""
    root = tmp_path / "mixed"
    for i in range(5):
        _img(root / "ant" / f"{i}.png", _pixels(i, c=1))
        _img(root / "bee" / f"{i}.png", _pixels(10 + i))
        _img(root / "cat" / f"{i}.bmp", _pixels(20 + i))
    _img(root / "cat" / "big.png", _pixels(99, 20, 20))
    (root / "cat" / "notes.txt").write_text("not an image, ignored")
    return root


def test_imagefolder_keeps_each_image_at_its_own_size_by_default(mixed):
    b = build(f"imagefolder:{mixed}", split_seed=0)
    assert b.keep_original and (b.in_chans, b.img_size) == (3, (12, 10))  # img_size: the most common size
    sizes = sorted({tuple(ds[i][0].shape) for ds in (b.train, b.test) for i in range(len(ds))})
    assert sizes == [(3, 12, 10), (3, 20, 20)]  # the decoded originals, nothing resized at decode
    assert "at their own sizes" in str(b)


def test_imagefolder_mixed_channels_and_sizes(mixed):
    b = build(f"imagefolder:{mixed}", split_seed=0, keep_original=False)
    assert b.classes == ["ant", "bee", "cat"] and b.num_classes == 3 and not b.keep_original
    assert (b.in_chans, b.img_size) == (3, (12, 10))  # RGB because not every file is gray; most common size
    assert len(b.train) == 4 + 4 + 5 and len(b.test) == 1 + 1 + 1  # stratified 80/20
    for ds in (b.train, b.test):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (3, 12, 10) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    gray = next(i for i in range(len(b.train)) if b.train[i][1] == 0)
    path = b.train.samples[gray][0]
    x = b.train[gray][0]
    expected = torch.from_numpy(np.array(Image.open(path))).float() / 255
    for c in range(3):  # gray repeated to RGB, values exact
        torch.testing.assert_close(x[c], expected)
    assert b.name == f"imagefolder:{mixed}"


def test_imagefolder_split_fixed_by_seed(mixed):
    names = lambda b: [str(p) for p, _ in b.test.samples]  # noqa: E731
    assert names(build(f"imagefolder:{mixed}")) == names(build(f"imagefolder:{mixed}"))


def test_imagefolder_all_gray_explicit_size_and_stats(tmp_path):
    for i in range(5):
        _img(tmp_path / "a" / f"{i}.png", _pixels(i, c=1))
        _img(tmp_path / "b" / f"{i}.png", _pixels(9 + i, c=1))
    b = build(f"imagefolder:{tmp_path}", img_size=8, keep_original=False)
    assert (b.in_chans, b.img_size) == (1, (8, 8))
    assert b.train[0][0].shape == (1, 8, 8)
    kept = build(f"imagefolder:{tmp_path}", img_size=8)  # decoded at 12x10; the transforms make 8x8
    assert kept.img_size == (8, 8) and kept.train[0][0].shape == (1, 12, 10)
    for tf in (train_transform(kept), eval_transform(kept)):
        x, _ = next(iter(make_loader(kept.train, batch_size=4, transform=tf)))
        assert x.shape == (4, 1, 8, 8)
    m = build(f"imagefolder:{tmp_path}", in_memory=True)
    assert m.train.images.dtype == torch.uint8 and m.train.images.shape == (8, 1, 12, 10)
    lazy = build(f"imagefolder:{tmp_path}")
    for i in range(len(lazy.train)):
        assert torch.equal(lazy.train[i][0], m.train[i][0])  # PNG at native size: exact
    train = torch.stack([lazy.train[i][0] for i in range(len(lazy.train))]).double()
    assert lazy.mean[0] == pytest.approx(train.mean().item(), abs=1e-9)
    assert lazy.std[0] == pytest.approx(train.std(unbiased=False).item(), abs=1e-9)
    assert m.mean[0] == pytest.approx(lazy.mean[0], abs=1e-6)  # float32 pixels vs exact uint8


def test_imagefolder_train_test_layout_and_loader(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("x", "y"):
            for i in range(n):
                _img(tmp_path / split / cls / f"{i}.jpg", _pixels(i, 16, 16))
    b = build(f"imagefolder:{tmp_path}")
    assert b.classes == ["x", "y"] and (len(b.train), len(b.test)) == (6, 4)
    images, labels = next(iter(make_loader(b.test, batch_size=4)))
    assert images.shape == (4, 3, 16, 16) and labels.tolist() == [0, 0, 1, 1]


def test_corrupt_png_is_a_clear_error(mixed):
    bad = mixed / "bee" / "broken.png"
    bad.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(ImageLoadError) as info:
        build(f"imagefolder:{mixed}")
    assert str(bad) in str(info.value) and "corrupt" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_truncated_png_is_a_clear_error(tmp_path):
    for split in ("train", "test"):
        for i in range(3):
            _img(tmp_path / split / "a" / f"{i}.png", _pixels(i, 64, 64))
    cut = tmp_path / "test" / "a" / "0.png"
    cut.write_bytes(cut.read_bytes()[:200])  # header intact, pixel data cut
    b = build(f"imagefolder:{tmp_path}")  # test files are only opened, not decoded, at build
    i = next(i for i, (p, _) in enumerate(b.test.samples) if p == cut)
    with pytest.raises(ImageLoadError, match="truncated") as info:
        b.test[i]
    assert str(cut) in str(info.value)
    train_file = tmp_path / "train" / "a" / "1.png"
    train_file.write_bytes(train_file.read_bytes()[:200])
    with pytest.raises(ImageLoadError, match="1.png"):  # train files are decoded for mean/std
        build(f"imagefolder:{tmp_path}")


def test_missing_empty_and_imageless_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build(f"imagefolder:{tmp_path / 'nowhere'}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty"):
        build(f"imagefolder:{empty}")
    (tmp_path / "noimg" / "cls").mkdir(parents=True)
    (tmp_path / "noimg" / "cls" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no images.*noimg"):
        build(f"imagefolder:{tmp_path / 'noimg'}")
    flat = tmp_path / "flat"
    _img(flat / "a.png", _pixels(0))
    with pytest.raises(ValueError, match="class sub-folders"):
        build(f"imagefolder:{flat}")
