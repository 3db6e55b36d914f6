import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from train_toys import TinyNet, make_model
from vitkit.train import TrainConfig, build_optimizer
from vitkit.train import checkpoint as ckpt
from vitkit.train.ema import ModelEMA


def _checkpoint(tmp_path):
    model = make_model()
    opt = build_optimizer(model, TrainConfig())
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()
    ema = ModelEMA(model, 0.99)
    ema.update(model)
    ckpt.save_checkpoint(tmp_path, model, opt, epoch=3, step=30, ema=ema, best={"metric": "test_acc", "value": 0.5, "epoch": 2})
    return model, opt, ema


def test_atomic_writes_leave_no_temp_files(tmp_path):
    _checkpoint(tmp_path)
    ckpt.write_config(tmp_path, TrainConfig(), {"num_classes": 4})
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors", "model_ema.safetensors",
                                            "train_state.pt"]
    # a writer that fails midway leaves the old file and no temp file
    (tmp_path / "x.bin").write_bytes(b"old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        ckpt.atomic_write(tmp_path / "x.bin", boom)
    assert (tmp_path / "x.bin").read_bytes() == b"old"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_train_state_is_weights_only_loadable_and_round_trips(tmp_path):
    model, opt, ema = _checkpoint(tmp_path)
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    assert state["epoch"] == 3 and state["step"] == 30 and state["best"]["value"] == 0.5
    assert set(state["rng"]) >= {"torch", "numpy", "python"}
    model2 = make_model(seed=1)
    opt2 = build_optimizer(model2, TrainConfig())
    ema2 = ModelEMA(model2, 0.5)
    ckpt.load_checkpoint(tmp_path, model2, opt2, ema=ema2)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(ema.module.state_dict().values(), ema2.module.state_dict().values()):
        assert torch.equal(a, b)
    assert ema2.updates == 1 and ema2.decay == 0.99
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    ema_w = ckpt.load_run_weights(tmp_path, "ema")
    assert torch.equal(ema_w["head.weight"], ema.module.head.weight)


def test_truncated_safetensors_names_the_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.randn(64, 64)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"w\.safetensors is not a valid safetensors file \(truncated or corrupt\)"):
        ckpt.load_weights_file(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"w\.safetensors"):
        ckpt.load_weights_file(path)


def test_torch_pickles_load_weights_only(tmp_path):
    torch.save({"a": torch.ones(2)}, tmp_path / "w.pt")
    assert torch.equal(ckpt.load_weights_file(tmp_path / "w.pt")["a"], torch.ones(2))
    torch.save({"a": torch.ones(2), "obj": nn.Linear(1, 1)}, tmp_path / "evil.pt")  # not weights-only
    with pytest.raises(ValueError, match="evil.pt"):
        ckpt.load_weights_file(tmp_path / "evil.pt")


def test_other_architecture_names_keys():
    sd = TinyNet(dim=8).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["head.bias"]
    with pytest.raises(ValueError, match="another architecture") as e:
        ckpt.load_model_state(TinyNet(dim=16), sd)
    msg = str(e.value)
    assert "head.bias" in msg and "extra.weight" in msg and "embed.weight: checkpoint (8, 1, 4, 4) vs model (16, 1, 4, 4)" in msg


def test_mismatched_pair_is_refused(tmp_path):
    model, opt, ema = _checkpoint(tmp_path)
    ckpt.save_weights(tmp_path / "model.safetensors", model.state_dict(), {"epoch": "4", "step": "40"})
    with pytest.raises(ValueError, match="different checkpoints"):
        ckpt.load_checkpoint(tmp_path, make_model(), None)


def _second_save_killed(tmp_path, monkeypatch, kill_at: str):
    """A first checkpoint (step 30), then a second (step 40) killed at ``kill_at``: "ema" (while writing
    model_ema.safetensors), "model" (while writing model.safetensors) or "commit" (every file written,
    killed before the commit). Returns the models of both checkpoints."""
    first, opt, ema = _checkpoint(tmp_path)
    first = {k: v.clone() for k, v in first.state_dict().items()}
    model = make_model(seed=5)
    ema = ModelEMA(model, 0.99)
    real_save, real_replace = ckpt.save_weights, os.replace

    class Killed(BaseException):
        pass

    def save(path, *a, **kw):
        if path.name == {"ema": ckpt.EMA_FILE, "model": ckpt.MODEL_FILE}.get(kill_at):
            raise Killed
        return real_save(path, *a, **kw)

    def replace(src, dst):
        if kill_at == "commit" and str(dst).endswith(ckpt.STATE_FILE):
            raise Killed
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt, "save_weights", save)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Killed):
        ckpt.save_checkpoint(tmp_path, model, opt, epoch=4, step=40, ema=ema)
    monkeypatch.undo()
    return first, model


def _readers_leave_it(run_dir):
    """Reading a folder whose save was killed (or is still under way: the run may be training) changes
    nothing: readers see the last committed checkpoint, only a writer settles the pending one."""
    before = sorted(os.listdir(run_dir))
    assert ckpt.PENDING_STATE_FILE in before
    assert ckpt.saved_epoch(run_dir) == 3 and ckpt.load_train_state(run_dir)["step"] == 30
    ckpt.load_run_weights(run_dir, "ema")
    assert sorted(os.listdir(run_dir)) == before


@pytest.mark.parametrize("kill_at", ["ema", "model"])
def test_a_save_killed_before_the_model_is_written_resumes_from_the_checkpoint_before(tmp_path, monkeypatch, kill_at):
    first, _ = _second_save_killed(tmp_path, monkeypatch, kill_at)
    _readers_leave_it(tmp_path)
    assert ckpt.recover(tmp_path) == "back"  # what fit and --resume do first
    restored = make_model(seed=9)
    ema = ModelEMA(restored, 0.5)
    state = ckpt.load_checkpoint(tmp_path, restored, None, ema=ema)
    assert state["step"] == 30 and ckpt.saved_epoch(tmp_path) == 3
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in first.items())
    # the shipped EMA file is the committed checkpoint's again, and no pending or temp file is left
    assert ckpt.load_run_weights(tmp_path, "ema").keys() == ema.module.state_dict().keys()
    assert all(torch.equal(ckpt.load_run_weights(tmp_path, "ema")[k], v) for k, v in ema.module.state_dict().items())
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors", "model_ema.safetensors", "train_state.pt"]


def test_a_save_killed_after_every_file_is_written_resumes_from_the_new_checkpoint(tmp_path, monkeypatch):
    _, second = _second_save_killed(tmp_path, monkeypatch, "commit")
    _readers_leave_it(tmp_path)
    assert ckpt.recover(tmp_path) == "forward"
    assert ckpt.recover(tmp_path) is None  # settled
    restored = make_model(seed=9)
    state = ckpt.load_checkpoint(tmp_path, restored, None, ema=ModelEMA(restored, 0.5))
    assert state["step"] == 40 and state["epoch"] == 4
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in second.state_dict().items())
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors", "model_ema.safetensors", "train_state.pt"]
