"""cifar10: the binary format written by the test (nothing is unpickled)."""
import numpy as np
import pytest
import torch

from vitkit.data import build, make_loader
from vitkit.data.cifar import CIFAR10_CLASSES


def _write(path, n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    np.concatenate([labels[:, None], pixels], 1).tofile(path)
    return pixels.reshape(n, 3, 32, 32), labels


@pytest.fixture
def cifar(tmp_path):
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    train = [_write(root / f"data_batch_{i}.bin", 7, i) for i in (1, 2)]
    test = _write(root / "test_batch.bin", 5, 9)
    (root / "batches.meta.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n\n")
    return tmp_path, train, test


def test_cifar10_binary(cifar):
    path, train, test = cifar
    b = build(f"cifar10:{path}")  # the parent of cifar-10-batches-bin works too
    assert (b.num_classes, b.in_chans, b.img_size) == (10, 3, (32, 32))
    assert b.classes == [f"c{i}" for i in range(10)]
    assert (len(b.train), len(b.test)) == (14, 5)
    images = np.concatenate([t[0] for t in train])
    assert torch.equal(b.train.images, torch.from_numpy(images))
    assert b.train.labels.tolist() == np.concatenate([t[1] for t in train]).tolist()
    assert torch.equal(b.test.images, torch.from_numpy(test[0]))
    x, y = b.test[2]
    torch.testing.assert_close(x, torch.from_numpy(test[0][2]).float() / 255)
    assert y == int(test[1][2])
    train_f = torch.from_numpy(images).double() / 255
    for c in range(3):
        assert b.mean[c] == pytest.approx(train_f[:, c].mean().item(), abs=1e-9)
        assert b.std[c] == pytest.approx(train_f[:, c].std(unbiased=False).item(), abs=1e-9)
    xb, yb = next(iter(make_loader(b.train, batch_size=14)))
    assert xb.shape == (14, 3, 32, 32) and yb.dtype == torch.int64


def test_cifar10_default_class_names(cifar):
    path, _, _ = cifar
    (path / "cifar-10-batches-bin" / "batches.meta.txt").unlink()
    assert build(f"cifar10:{path / 'cifar-10-batches-bin'}").classes == CIFAR10_CLASSES


def test_cifar10_errors(cifar, tmp_path):
    path, _, _ = cifar
    with pytest.raises(FileNotFoundError, match="nope"):
        build(f"cifar10:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="test_batch.bin"):
        build(f"cifar10:{tmp_path / 'empty'}")
    batch = path / "cifar-10-batches-bin" / "data_batch_2.bin"
    batch.write_bytes(batch.read_bytes()[:-10])
    with pytest.raises(ValueError, match="data_batch_2.bin.*truncated"):
        build(f"cifar10:{path}")
