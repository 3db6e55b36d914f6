"""make_loader: coverage, determinism, sharding across ranks, the in-memory fast path."""
import pytest
import torch
from torch.utils.data import Dataset, Subset

from vitkit.data import make_loader
from vitkit.data.bundle import TensorImageDataset
from vitkit.data.transforms import Compose, RandomAffine, RandomHorizontalFlip


def _indexed(n: int = 103) -> TensorImageDataset:
    """Labels are the item indices, so batches show which items came."""
    images = torch.randint(0, 256, (n, 1, 6, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return TensorImageDataset(images, torch.arange(n))


class _Plain(Dataset):
    """The same items without the uint8 tensors: forces the generic (per-item) path."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]


def _order(loader, epoch=None):
    if epoch is not None:
        loader.set_epoch(epoch)
    return torch.cat([y for _, y in loader]).tolist()


@pytest.mark.parametrize("drop_last", [False, True])
def test_len_matches_batches(drop_last):
    loader = make_loader(_indexed(103), batch_size=10, shuffle=True, drop_last=drop_last)
    batches = list(loader)
    assert len(loader) == len(batches) == (10 if drop_last else 11)
    assert all(len(y) == 10 for _, y in batches[:10])


def test_every_index_once_per_epoch_new_order_each_epoch():
    loader = make_loader(_indexed(103), batch_size=10, shuffle=True, seed=0)
    e0, e1 = _order(loader, 0), _order(loader, 1)
    assert sorted(e0) == sorted(e1) == list(range(103))
    assert e0 != e1 and e0 != list(range(103))
    again = make_loader(_indexed(103), batch_size=10, shuffle=True, seed=0)
    assert _order(again, 1) == e1 and _order(again, 0) == e0
    assert _order(make_loader(_indexed(103), batch_size=10, shuffle=True, seed=1), 0) != e0


def test_no_shuffle_is_in_order():
    assert _order(make_loader(_indexed(23), batch_size=5)) == list(range(23))


@pytest.mark.parametrize("n,drop_last", [(100, False), (103, False), (103, True)])
def test_two_ranks_cover_what_one_rank_covers(n, drop_last):
    one = _order(make_loader(_indexed(n), batch_size=7, shuffle=True, seed=3), 2)
    ranks = [make_loader(_indexed(n), batch_size=7, shuffle=True, seed=3, rank=r, world_size=2) for r in (0, 1)]
    parts = [_order(loader, 2) for loader in ranks]
    assert len(parts[0]) == len(parts[1])
    assert len(ranks[0]) == len(ranks[1])
    if drop_last:
        ranks = [make_loader(_indexed(n), batch_size=1, shuffle=True, seed=3, drop_last=True, rank=r, world_size=2)
                 for r in (0, 1)]
        parts = [_order(loader, 2) for loader in ranks]
        assert len(parts[0]) + len(parts[1]) == n - 1 and not set(parts[0]) & set(parts[1])
    else:
        assert set(parts[0]) | set(parts[1]) == set(one) == set(range(n))
    if n % 2 == 0:  # rank r takes every second index of the one shared permutation
        assert parts[0] == one[0::2] and parts[1] == one[1::2]


def test_fast_path_equals_generic_path():
    ds = _indexed(37)
    tf = Compose([RandomAffine(rotate=20, translate=0.2), RandomHorizontalFlip(0.5)])
    fast = make_loader(ds, batch_size=8, shuffle=True, seed=5, transform=tf)
    slow = make_loader(_Plain(ds), batch_size=8, shuffle=True, seed=5, transform=tf)
    fast.set_epoch(4), slow.set_epoch(4)
    for (xa, ya), (xb, yb) in zip(fast, slow, strict=True):
        assert xa.dtype == xb.dtype == torch.float32 and ya.dtype == yb.dtype == torch.int64
        assert torch.equal(ya, yb)
        torch.testing.assert_close(xa, xb)


def test_items_are_scaled_images():
    ds = _indexed(10)
    x, y = next(iter(make_loader(ds, batch_size=10)))
    torch.testing.assert_close(x, ds.images.float() / 255)
    assert torch.equal(y, torch.arange(10))


def test_subset_keeps_fast_path_and_items():
    ds = _indexed(50)
    sub = Subset(ds, list(range(10, 30)))
    x, y = next(iter(make_loader(sub, batch_size=20)))
    assert y.tolist() == list(range(10, 30))
    torch.testing.assert_close(x, ds.images[10:30].float() / 255)


def test_augmentation_replays_for_the_same_epoch_and_resumes_mid_epoch():
    tf = Compose([RandomAffine(rotate=30, translate=0.2, scale=(0.8, 1.2)), RandomHorizontalFlip(0.5)])
    loader = make_loader(_indexed(40), batch_size=8, shuffle=True, drop_last=True, seed=7, transform=tf)
    loader.set_epoch(3)
    first = [x for x, _ in loader]
    loader.set_epoch(4)
    other = [x for x, _ in loader]
    loader.set_epoch(3)
    again = [x for x, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    tail = [x for x, _ in loader.iter_from(2)]
    assert len(tail) == 3 and all(torch.equal(a, b) for a, b in zip(first[2:], tail, strict=True))


def test_ranks_draw_different_augmentation():
    ds = TensorImageDataset(torch.full((8, 1, 6, 6), 200, dtype=torch.uint8), torch.zeros(8, dtype=torch.int64))
    tf = RandomAffine(rotate=45)
    xs = [next(iter(make_loader(ds, batch_size=4, transform=tf, rank=r, world_size=2)))[0] for r in (0, 1)]
    assert not torch.equal(xs[0], xs[1])


def test_transform_without_generator_argument():
    x, _ = next(iter(make_loader(_indexed(4), batch_size=4, transform=lambda b: b * 2)))
    assert x.max() > 1.0


@pytest.mark.parametrize("kw", [dict(rank=2, world_size=2), dict(rank=-1), dict(batch_size=0)])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        make_loader(_indexed(4), **kw)


def test_unpadded_shards_hold_every_item_exactly_once():
    import torch

    from vitkit.data import make_loader
    from vitkit.data.bundle import TensorImageDataset
    ds = TensorImageDataset(torch.zeros(7, 1, 2, 2, dtype=torch.uint8), torch.arange(7))
    seen = []
    for r in range(3):
        ld = make_loader(ds, batch_size=2, rank=r, world_size=3, pad=False)
        labels = torch.cat([y for _, y in ld])
        assert len(labels) == ld.num_samples
        seen += labels.tolist()
    assert sorted(seen) == list(range(7))


def test_repeated_augmentation_shows_each_drawn_image_r_times_differently_augmented():
    """DeiT's repeated augmentation: the epoch keeps its length, holds ceil(n / 3) images 3 times each in a
    row (one process: in one batch), each copy with its own augmentation; under DDP the copies go to
    different ranks; the drawn images change with the epoch."""
    n = 99
    loader = make_loader(_indexed(n), batch_size=9, shuffle=True, seed=0, repeats=3,
                         transform=RandomAffine(rotate=30, translate=0.2))
    batches = list(loader)
    labels = torch.cat([y for _, y in batches])
    assert len(labels) == n and len(set(labels.tolist())) == n // 3
    assert all(torch.equal(t, t[:1].expand(3)) for t in labels.view(-1, 3))  # each image 3 times in a row
    x, y = batches[0]
    assert y[0] == y[1] == y[2] and not torch.equal(x[0], x[1])  # the copies differ: augmented each on its own
    assert set(_order(loader, 1)) != set(labels.tolist())  # another epoch, other images
    ranks = [make_loader(_indexed(n), batch_size=11, shuffle=True, seed=0, repeats=3, rank=r, world_size=3)
             for r in range(3)]
    per_rank = [_order(rk, 0) for rk in ranks]
    assert per_rank[0] == per_rank[1] == per_rank[2] == labels.view(-1, 3)[:, 0].tolist()  # the copies, one per rank
    with pytest.raises(ValueError, match="repeats"):
        make_loader(_indexed(n), batch_size=9, repeats=3)  # no shuffle: nothing to repeat


def test_train_config_repeated_aug_reaches_the_train_loader(tmp_path):
    from vitkit.data import build
    from vitkit.train import TrainConfig
    from vitkit.train.run import build_loaders
    cfg = TrainConfig(data="digits", batch_size=32, repeated_aug=2, out=str(tmp_path))
    loaders = build_loaders(cfg, build("digits"))
    assert loaders["train"].repeats == 2 and loaders["test"].repeats == 1
    with pytest.raises(ValueError, match="repeated_aug"):
        TrainConfig(repeated_aug=0)
