"""Learning checks on real data: a tiny ViT must beat 80% on held-out digits in under a minute."""
import time

import pytest

from vitkit.train import TrainConfig, fit
from vitkit.train.run import build_run

pytestmark = pytest.mark.slow


def test_tiny_vit_learns_digits(tmp_path):
    cfg = TrainConfig(model="vit_nano_patch2_8", data="digits", epochs=12, batch_size=32, lr=2e-3,
                      warmup_epochs=1, label_smoothing=0.0, out=str(tmp_path / "run"), num_threads=1,
                      log_every=1000)
    model, task, loaders, bundle, meta = build_run(cfg)
    t0 = time.time()
    result = fit(model, task, loaders, cfg, meta)
    seconds = time.time() - t0
    assert result["test_count"] == len(bundle.test) == 359
    assert result["test_acc"] > 0.80, result
    assert seconds < 60, seconds
