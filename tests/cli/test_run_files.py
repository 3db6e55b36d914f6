"""Issue 18, reliability: a run whose evaluated weights are the EMA ones ships them as safetensors, every
command uses (and names) those, and a corrupt file in the run folder is an error whichever file the
command reads (eval, predict and export read the EMA copy, so a truncated model.safetensors went
unnoticed before)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vitkit.cli import main

pytestmark = pytest.mark.slow
TINY = ["--model", "vit_nano_patch2_8", "--data", "digits", "--epochs", "1", "--batch-size", "32", "--threads", "1",
        "--no-report", "--ema", "0.9"]


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ema") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def test_the_evaluated_ema_weights_ship_as_safetensors_and_convert_writes_them(ema_run, tmp_path, capsys):
    from vitkit.train import checkpoint as ckpt
    shipped = load_file(str(ema_run / "model_ema.safetensors"))
    in_state = torch.load(ema_run / "train_state.pt", weights_only=True)["ema"]["module"]
    assert shipped.keys() == in_state.keys() and all(torch.equal(shipped[k], in_state[k]) for k in shipped)
    assert any(not torch.equal(shipped[k], v) for k, v in load_file(str(ema_run / "model.safetensors")).items())
    capsys.readouterr()
    assert main(["convert", str(ema_run), str(tmp_path / "out"), "--to", "vitkit"]) == 0
    assert "ema weights" in capsys.readouterr().out
    written = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert all(torch.equal(written[k], shipped[k]) for k in shipped)
    assert main(["eval", str(ema_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == "ema"
    assert ckpt.load_run_weights(ema_run, "ema").keys() == shipped.keys()


@pytest.mark.parametrize("command", ["eval", "predict", "export", "convert", "info", "report"])
@pytest.mark.parametrize("damaged", ["model.safetensors", "model_ema.safetensors"])
def test_a_truncated_weights_file_is_an_error_whichever_weights_the_command_reads(command, damaged, ema_run, tmp_path,
                                                                                 capsys):
    import shutil

    from PIL import Image
    run = tmp_path / "run"
    shutil.copytree(ema_run, run)
    data = (run / damaged).read_bytes()
    (run / damaged).write_bytes(data[: len(data) // 2])
    Image.new("L", (8, 8), 128).save(tmp_path / "d.png")
    argv = {"eval": ["eval", run], "predict": ["predict", run, tmp_path / "d.png"],
            "export": ["export", run, "--onnx", tmp_path / "m.onnx"], "convert": ["convert", run, tmp_path / "c", "--to", "hf"],
            "info": ["info", run], "report": ["report", run]}[command]
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("vitkit: error:") and damaged in err and len(err.strip().splitlines()) == 1, err
    assert "top-1" not in out and not (tmp_path / "m.onnx").exists()
