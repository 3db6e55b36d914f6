"""fit/evaluate on a learnable toy problem: loss falls, accumulation is a pure memory knob, files are written."""
import json
import math

import pytest
import torch

from train_toys import ToyLoader, make_data, make_model
from vitkit.tasks import Classify
from vitkit.train import TrainConfig, evaluate, fit
from vitkit.train import checkpoint as ckpt

X, Y = make_data(128)
XT, YT = make_data(64, seed=1)


def loaders(batch=16):
    return {"train": ToyLoader(X, Y, batch), "test": ToyLoader(XT, YT, 32, shuffle=False)}


def test_a_tiny_net_learns_and_the_run_folder_is_complete(tmp_path):
    model = make_model()
    task = Classify()
    before = evaluate(model, task, loaders()["test"])
    cfg = TrainConfig(model="toy", epochs=3, batch_size=16, lr=1e-2, warmup_epochs=1, label_smoothing=0.0,
                      ema_decay=0.9, log_every=4, out=str(tmp_path))
    result = fit(model, task, loaders(), cfg, meta={"num_classes": 4, "in_chans": 1})
    assert result["test_loss"] < 0.5 * before["loss"] and result["test_acc"] > 0.9, (before, result)
    assert result["eval_weights"] == "ema" and result["best"]["metric"] == "test_acc"

    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "metrics.jsonl", "model.safetensors",
                                                          "model_ema.safetensors", "train_state.pt"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_classes"] == 4 and config["epochs"] == 3 and config["betas"] == [0.9, 0.999]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["step"] for r in steps] == list(range(4, 25, 4)) and len(epochs) == 3
    assert {"epoch", "step", "loss", "acc", "lr", "img_per_s"} <= steps[0].keys()
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "test_count", "epoch_time_s", "img_per_s",
            "eval_weights", "lr"} <= epochs[0].keys()
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    # model.safetensors holds the final raw (non-EMA) weights
    fresh = make_model(seed=5)
    ckpt.load_model_state(fresh, ckpt.load_weights_file(tmp_path / "model.safetensors"))
    assert torch.equal(fresh.head.weight, model.head.weight)


def test_accumulation_splits_the_batch_without_changing_the_result(tmp_path):
    # fp32: the identity is exact there; bf16 rounds a half batch's sums differently
    base = TrainConfig(model="toy", epochs=1, batch_size=16, lr=1e-2, warmup_epochs=0, clip_grad=None, amp=None)
    one, two = make_model(), make_model()
    fit(one, Classify(), loaders(), base.replace(out=str(tmp_path / "a")))
    fit(two, Classify(), loaders(), base.replace(out=str(tmp_path / "b"), accum_steps=3))  # uneven: 6+5+5
    for a, b in zip(one.parameters(), two.parameters()):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_evaluate_divides_sums_and_restores_mode():
    model = make_model().train()
    out = evaluate(model, Classify(), loaders()["test"])
    assert model.training and out["count"] == 64 and 0 <= out["acc"] <= 1 and math.isfinite(out["loss"])


def test_fit_refuses_bad_inputs(tmp_path):
    cfg = TrainConfig(out=str(tmp_path), epochs=1)
    with pytest.raises(ValueError, match="'val'"):
        fit(make_model(), Classify(), {"train": loaders()["train"], "val": None}, cfg)
    task_with_weights = torch.nn.Linear(2, 2)
    task_with_weights.loss = Classify().loss
    with pytest.raises(ValueError, match="outside the model"):
        fit(make_model(), task_with_weights, loaders(), cfg)
