"""vitkit.train.sweep: which run folder counts as the same run (reused or resumed, never overwritten)."""
import os

from vitkit.train import TrainConfig
from vitkit.train.sweep import _same_config


def _cfg(**kw) -> TrainConfig:
    return TrainConfig.from_dict({"model": "vit_nano_patch4_28", "data": "mnist5k", "epochs": 2, **kw})


def test_a_path_spelled_relative_or_absolute_is_the_same_config(tmp_path, monkeypatch):
    # A sweep started once with --work runs/x and once with --work /abs/runs/x names the same teacher; a
    # finished run must be reused, not overwritten as a new config (this once restarted a finished run).
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "teacher").mkdir(parents=True)
    saved = _cfg(task="distill", task_args={"kind": "hard", "teacher": "runs/teacher"}).to_dict()
    absolute = _cfg(task="distill", task_args={"kind": "hard", "teacher": str(tmp_path / "runs" / "teacher")})
    assert _same_config(saved, absolute)
    dotted = _cfg(task="distill", task_args={"kind": "hard", "teacher": "./runs/../runs/teacher"})
    assert _same_config(saved, dotted)
    (tmp_path / "runs" / "other").mkdir()
    other = _cfg(task="distill", task_args={"kind": "hard", "teacher": "runs/other"})
    assert not _same_config(saved, other)
    soft = _cfg(task="distill", task_args={"kind": "soft", "teacher": "runs/teacher"})
    assert not _same_config(saved, soft)


def test_a_string_that_is_not_a_path_compares_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    saved = _cfg(init="hf:google/vit-base-patch16-224").to_dict()
    assert _same_config(saved, _cfg(init="hf:google/vit-base-patch16-224"))
    assert not _same_config(saved, _cfg(init="hf:google/vit-large-patch16-224"))
    assert not _same_config(_cfg(model="vit_mnist_patch7_28").to_dict(), _cfg())


def test_a_field_the_folder_predates_counts_as_its_default(tmp_path):
    saved = _cfg().to_dict()
    del saved["repeated_aug"]  # written before the field existed
    assert _same_config(saved, _cfg())
    assert not _same_config(saved, _cfg(repeated_aug=3))
    # run-only fields (where, how many threads) never make a run look changed
    assert _same_config(_cfg(out="a", num_threads=1).to_dict(), _cfg(out=os.fspath(tmp_path), num_threads=2))
