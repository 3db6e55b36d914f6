"""Resume is exact: an interrupted run, resumed, ends with the same weights as one that never stopped."""
import json

import pytest
import torch

from train_toys import ToyLoader, make_data, make_model
from vitkit.tasks import Classify
from vitkit.train import NonFiniteLossError, TrainConfig, fit
from vitkit.train import checkpoint as ckpt

X, Y = make_data(32)
XT, YT = make_data(16, seed=1)
# Everything random on: dropout, mixup + cutmix, label smoothing, EMA, accumulation, clipping.
CFG = TrainConfig(model="toy", epochs=4, batch_size=8, lr=3e-3, min_lr=1e-4, warmup_epochs=1, accum_steps=2,
                  clip_grad=1.0, ema_decay=0.9, label_smoothing=0.1, mixup=0.4, cutmix=1.0, log_every=2, seed=3)
TASK = Classify(CFG.label_smoothing, CFG.mixup, CFG.cutmix)


def loaders(fail_at=None):
    return {"train": ToyLoader(X, Y, 8, seed=CFG.seed, fail_at=fail_at), "test": ToyLoader(XT, YT, 8, shuffle=False)}


def run(out, seed=0, fail_at=None, **kw):
    model = make_model(seed=seed, drop=0.1)
    result = fit(model, TASK, loaders(fail_at), CFG.replace(out=str(out), **{k: v for k, v in kw.items() if k != "stop_after"}),
                 meta={"num_classes": 4}, stop_after=kw.get("stop_after"))
    return model, result


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    model, result = run(out)
    return model.state_dict(), ckpt.load_run_weights(out, "ema"), result


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_stop_then_resume_in_a_new_fit_call_is_identical(tmp_path, reference):
    ref_weights, ref_ema, ref_result = reference
    run(tmp_path, stop_after=2)
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["epoch"] == 2
    model, result = run(tmp_path, seed=99, resume=True)  # another init: everything must come from the checkpoint
    assert_same(model.state_dict(), ref_weights)
    assert_same(ckpt.load_run_weights(tmp_path, "ema"), ref_ema)
    assert result["test_acc"] == ref_result["test_acc"] and result["epoch"] == 4


def test_kill_mid_epoch_keeps_the_last_checkpoint_and_resumes_identically(tmp_path, reference):
    ref_weights, ref_ema, _ = reference
    run(tmp_path, stop_after=2)
    epoch2 = (tmp_path / "model.safetensors").read_bytes()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, resume=True, fail_at=(2, 3))  # killed during the third epoch
    # the epoch-2 checkpoint is on disk, whole and unchanged
    assert (tmp_path / "model.safetensors").read_bytes() == epoch2
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 8
    ckpt.load_checkpoint(tmp_path, make_model(drop=0.1), None)
    model, _ = run(tmp_path, resume=True)
    assert_same(model.state_dict(), ref_weights)
    assert_same(ckpt.load_run_weights(tmp_path, "ema"), ref_ema)
    # metrics.jsonl: the killed epoch's lines were dropped on resume, no step is logged twice
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == sorted(set(steps)) == list(range(2, 17, 2))
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3, 4]


class NaNAfter:
    """Wrap a task: from its `at`-th loss call on, the loss (or only the gradient) is NaN."""

    def __init__(self, task, at, grad_only=False):
        self.task, self.at, self.grad_only, self.calls = task, at, grad_only, 0

    def loss(self, model, batch):
        self.calls += 1
        loss, metrics = self.task.loss(model, batch)
        if self.calls >= self.at:
            if self.grad_only:  # finite loss, NaN gradient: d sqrt(x)/dx at 0 is inf, times 0
                zero = sum(p.sum() for p in model.parameters()) * 0.0
                loss = loss + torch.sqrt(zero)
            else:
                loss = loss * float("nan")
        return loss, metrics

    def __getattr__(self, name):  # eval_metrics, summarize, main_metric: the wrapped task's
        return getattr(self.task, name)


@pytest.mark.parametrize("grad_only", [False, True])
def test_non_finite_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, grad_only):
    cfg = CFG.replace(out=str(tmp_path), accum_steps=1, clip_grad=None, ema_decay=None)
    # 4 steps an epoch. A NaN loss at call 6 is caught at once; a NaN gradient at call 8 (the epoch's
    # last step) gives NaN weights that no loss sees before the epoch-2 checkpoint would be written.
    task = NaNAfter(Classify(), at=8 if grad_only else 6, grad_only=grad_only)
    with pytest.raises(NonFiniteLossError) as e:
        fit(make_model(), task, loaders(), cfg)
    msg = str(e.value)
    assert "last good checkpoint (epoch 1)" in msg
    assert ("loss is nan at epoch 2, step 5" in msg) if not grad_only else ("weights are not finite at epoch 2, step 8" in msg)
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    assert state["epoch"] == 1 and state["step"] == 4
    weights = ckpt.load_weights_file(tmp_path / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    ckpt.load_model_state(make_model(), weights)


def test_non_finite_gradient_norm_is_caught_at_the_step(tmp_path):
    cfg = CFG.replace(out=str(tmp_path), accum_steps=1, clip_grad=1.0)
    with pytest.raises(NonFiniteLossError, match="gradient norm is nan at epoch 1, step 1; .*no checkpoint"):
        fit(make_model(), NaNAfter(Classify(), at=2, grad_only=True), loaders(), cfg)
