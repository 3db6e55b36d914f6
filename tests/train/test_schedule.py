import math

import pytest

from vitkit.train.schedule import lr_at

TOTAL, WARM, BASE, MIN = 100, 10, 1e-3, 1e-5


def test_warmup_starts_at_zero_and_reaches_base_lr():
    assert lr_at(0, TOTAL, WARM, BASE, MIN) == 0.0
    assert lr_at(WARM, TOTAL, WARM, BASE, MIN) == pytest.approx(BASE)
    assert lr_at(WARM // 2, TOTAL, WARM, BASE, MIN) == pytest.approx(BASE / 2)


def test_cosine_ends_at_min_lr_and_halfway_is_the_midpoint():
    assert lr_at(TOTAL, TOTAL, WARM, BASE, MIN) == pytest.approx(MIN)
    assert lr_at(TOTAL + 50, TOTAL, WARM, BASE, MIN) == pytest.approx(MIN)
    mid = WARM + (TOTAL - WARM) // 2
    assert lr_at(mid, TOTAL, WARM, BASE, MIN) == pytest.approx((BASE + MIN) / 2)


def test_pieces_are_monotone():
    lrs = [lr_at(s, TOTAL, WARM, BASE, MIN) for s in range(TOTAL + 1)]
    assert all(a < b for a, b in zip(lrs[:WARM], lrs[1:WARM + 1]))
    assert all(a >= b for a, b in zip(lrs[WARM:], lrs[WARM + 1:]))
    assert all(0.0 <= lr <= BASE + 1e-12 for lr in lrs)
    assert all(lr >= MIN - 1e-12 for lr in lrs[WARM:])


def test_no_warmup_starts_at_base_lr_and_bad_arguments_raise():
    assert lr_at(0, TOTAL, 0, BASE, MIN) == pytest.approx(BASE)
    assert math.isfinite(lr_at(5, 5, 5, BASE, MIN))  # warmup as long as the run
    with pytest.raises(ValueError):
        lr_at(-1, TOTAL, WARM, BASE, MIN)
    with pytest.raises(ValueError):
        lr_at(0, 0, 0, BASE, MIN)
