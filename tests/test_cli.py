"""The `vitkit` command end to end on real data (scikit-learn digits), and its errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.cli import main, parse_set

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    code = main(["train", "--model", "vit_nano_patch2_8", "--data", "digits", "--epochs", "2",
                 "--batch-size", "64", "--out", str(out), "--seed", "0", "--threads", "1"])
    assert code == 0
    return out


def test_train_writes_a_complete_run_folder(run_dir):
    for f in ["model.safetensors", "config.json", "train_state.pt", "metrics.jsonl", "curves.png",
              "confusion.png", "rollout.png", "report.json"]:
        assert (run_dir / f).is_file(), f
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(1 for x in lines if x.get("kind") == "epoch") == 2


def test_eval_reproduces_the_trained_figure(run_dir, capsys):
    last = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert main(["eval", str(run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["test_count"] == last["test_count"] == 359
    assert out["test_acc"] == pytest.approx(last["test_acc"], abs=1e-9)


def _digit_png(path, rgb=False, size=8):
    from vitkit.data import build
    x = build("digits").test[0][0][0]                       # (8, 8) in [0, 1]
    arr = (x.numpy() * 255).astype(np.uint8)
    img = Image.fromarray(arr).resize((size, size))
    (img.convert("RGB") if rgb else img).save(path)
    return path


def test_predict_top_k_with_channel_and_size_conversion(run_dir, tmp_path, capsys):
    a = _digit_png(tmp_path / "gray.png")
    b = _digit_png(tmp_path / "rgb_big.png", rgb=True, size=32)  # 3 channels, 32x32 -> resized
    assert main(["predict", str(run_dir), str(a), str(b), "--topk", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    probs = [float(p.rstrip("%")) for p in lines[0].split(": ", 1)[1].replace(",", "").split()[1::2]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True)


def _run_cli(*args):
    """Run the real console entry point in a subprocess: what a user sees."""
    return subprocess.run([sys.executable, "-m", "vitkit", *args], capture_output=True, text=True,
                          timeout=120)


def _one_line_error(res, *needles):
    assert res.returncode != 0
    err = res.stderr.strip()
    assert "Traceback" not in err, err
    assert err.startswith("vitkit: error:"), err
    for n in needles:
        assert n in err, err


def test_corrupt_png_is_one_line_error(run_dir, tmp_path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    good = _digit_png(tmp_path / "ok.png")
    res = _run_cli("predict", str(run_dir), str(good), str(bad))
    _one_line_error(res, "corrupt.png")
    assert "ok.png" in res.stdout  # the good file was still classified


def test_missing_run_and_unknown_model_are_clear(tmp_path):
    _one_line_error(_run_cli("eval", str(tmp_path / "nope")), "does not exist")
    _one_line_error(_run_cli("train", "--model", "vit_nope", "--data", "digits", "--out", str(tmp_path / "x")),
                    "unknown model")


def test_truncated_checkpoint_is_clear(run_dir, tmp_path):
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    _one_line_error(_run_cli("eval", str(broken)), "model.safetensors")


def test_checkpoint_of_another_architecture_is_clear(run_dir, tmp_path):
    import shutil

    from safetensors.torch import save_file

    from vitkit import create_model
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    save_file(create_model("vit_nano_patch2_8", depth=2, embed_dim=32).state_dict(),
              str(other / "model.safetensors"))
    _one_line_error(_run_cli("eval", str(other)), "another architecture")


def test_models_lists_paper_variants(capsys):
    assert main(["models", "vit_*_patch16_224"]) == 0
    out = capsys.readouterr().out
    assert "vit_base_patch16_224" in out and "86.57M" in out


def test_set_parsing_nests_and_types():
    assert parse_set(["lr=3e-4", "model_args.depth=8", "augment.scale=[0.9, 1.1]"]) == {
        "lr": 3e-4, "model_args": {"depth": 8}, "augment": {"scale": [0.9, 1.1]}}


def test_sigkill_then_resume_gives_identical_weights(tmp_path):
    """A real `vitkit train` process killed mid-run (SIGKILL) resumes to the same final weights."""
    import os
    import signal
    import time

    from safetensors.torch import load_file
    args = ["train", "--model", "vit_nano_patch2_8", "--data", "digits", "--epochs", "4", "--batch-size", "32",
            "--threads", "1", "--no-report", "--set", "augment.rotate=10", "--set", "model_args.drop_path_rate=0.1",
            "--ema", "0.9"]
    ref = tmp_path / "ref"
    assert _run_cli(*args, "--out", str(ref)).returncode == 0
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "vitkit", *args, "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the first epoch's checkpoint is on disk
        if metrics.exists() and '"kind": "epoch"' in metrics.read_text():
            break
        time.sleep(0.05)
    time.sleep(0.3)  # now somewhere in epoch 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    res = _run_cli(*args, "--out", str(run), "--resume")
    assert res.returncode == 0, res.stderr
    a, b = load_file(str(ref / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
