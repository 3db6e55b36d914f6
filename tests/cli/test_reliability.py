"""Issue 25: the CLI never loses a run, never prints a wrong figure, and never shows an internal error.

One test per defect found (numbered as in the issue); each failed on the CLI before the fix. For the
three that lose data or print a wrong figure (1-3), the tests check the files and the figures, not
only the exit code. Every command of every kind of run is covered by test_matrix.py.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vitkit.cli import main

from .conftest import VIT

pytestmark = pytest.mark.slow
TINY = ["--model", "vit_nano_patch2_8", "--data", "digits", "--epochs", "1", "--batch-size", "16",
        "--labels-per-class", "5", "--threads", "1", "--no-report"]


def _main(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _cli(*args, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """The real command in a subprocess: what a user's terminal shows."""
    return subprocess.run([sys.executable, "-m", "vitkit", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, err
    assert len(lines) == 1 and lines[0].startswith("vitkit: error:"), err
    assert "internal error" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def epochs_logged(run: Path) -> list[int]:
    return [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines() if '"epoch"' in x
            and json.loads(x).get("kind") == "epoch"]


# ---------------------------------------------------------------------------- 1-3: data and figures
def test_1_train_into_an_existing_run_refuses_and_loses_nothing(copy_run, capsys):
    run = copy_run("classify")
    assert main(["report", str(run)]) == 0  # the run's pictures and report.json, as `make demo` leaves them
    before = files(run)
    code, _, err = _main(["train", *VIT, "--seed", "1", "--out", run], capsys)
    one_line_error(code, err, "--resume", "--overwrite")
    assert files(run) == before  # nothing lost, nothing half-replaced
    code, _, err = _main(["train", *VIT, "--seed", "1", "--out", run, "--overwrite"], capsys)
    assert code == 0, err
    after = files(run)
    assert after["model.safetensors"] != before["model.safetensors"]
    stale = {"report.json", "confusion.png", "curves.png", "rollout.png"} & set(after)
    assert not stale, f"pictures of the replaced model left behind: {stale}"


def test_2_eval_on_a_folder_matches_class_names_and_scores_every_image(copy_run, digit_png, tmp_path, capsys):
    from vitkit.data import build, load_image
    from vitkit.train.run import load_run
    run = copy_run("sparsevit_adapt")  # ~90% on digits after one epoch: a figure worth checking
    test = build("digits").test
    folder, named = tmp_path / "three_and_seven", tmp_path / "named"
    words = "zero one two three four five six seven eight nine".split()
    paths = []
    for i in range(len(test)):
        label = int(test[i][1])
        if label in (3, 7):
            paths.append((digit_png(folder / str(label) / f"{i}.png", i), label))
        if i < 60:
            digit_png(named / words[label] / f"{i}.png", i)
    # the expected figure, computed here: decode, normalise with the run's statistics, argmax
    model, cfg = load_run(run).model, json.loads((run / "config.json").read_text())
    mean, std = torch.tensor(cfg["mean"]).view(-1, 1, 1), torch.tensor(cfg["std"]).view(-1, 1, 1)
    x = torch.stack([(load_image(p, 1) - mean) / std for p, _ in paths])
    with torch.no_grad():
        correct = int((model(x).argmax(1) == torch.tensor([y for _, y in paths])).sum())
    code, out, err = _main(["eval", run, "--data", f"imagefolder:{folder}", "--json"], capsys)
    assert code == 0, err
    got = json.loads(out)
    assert got["test_count"] == len(paths)  # every image of a folder given for evaluation, not a 20% split
    assert got["test_acc"] == correct / len(paths)
    assert got["test_acc"] > 0.5  # labels matched by name: folder "7" is class "7", not the 2nd folder
    code, out, err = _main(["eval", run, "--data", f"imagefolder:{named}"], capsys)
    one_line_error(code, err, "seven")
    assert "top-1" not in out


def test_3a_resume_without_a_checkpoint_is_an_error_and_writes_nothing(tmp_path, capsys):
    code, _, err = _main(["train", "--resume", "--out", tmp_path / "missing"], capsys)
    one_line_error(code, err, "nothing to resume")
    assert not (tmp_path / "missing").exists()
    (tmp_path / "empty").mkdir()
    code, _, err = _main(["train", "--resume", "--out", tmp_path / "empty"], capsys)
    one_line_error(code, err, "nothing to resume")
    assert not list((tmp_path / "empty").iterdir())


def test_3b_resume_reads_the_runs_own_config_and_never_shrinks_it(copy_run, capsys):
    run = copy_run("classify")  # vit_nano_patch2_8 on digits: neither is the default model nor data
    code, out, err = _main(["train", "--resume", "--out", run, "--epochs", "2"], capsys)
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert (config["model"], config["data"], config["epochs"]) == ("vit_nano_patch2_8", "digits", 2)
    assert epochs_logged(run) == [1, 2]
    before = files(run)
    code, _, err = _main(["train", "--resume", "--out", run, "--epochs", "1"], capsys)
    one_line_error(code, err, "already trained 2 epochs")
    code, out, err = _main(["train", "--resume", "--out", run], capsys)  # finished: nothing to do
    assert code == 0 and "nothing to train" in out, err
    assert files(run) == before
    code, out, _ = _main(["info", run], capsys)
    assert "2 epochs" in out and "last epoch 2 of 2" in out


# ---------------------------------------------------------------------------- 4-5: every kind, every --init
def test_4_the_kind_a_command_needs_is_named_with_the_command_that_serves_the_run(copy_run, digit_png, tmp_path,
                                                                                 capsys):
    img = digit_png(tmp_path / "d.png")
    clip = copy_run("clip")
    cases = [(["predict", clip, img], "zero-shot"), (["predict", copy_run("mae"), img], "--init"),
             (["export", clip, "--onnx", tmp_path / "c.onnx"], "zero-shot"),
             (["train", *TINY, "--teacher", copy_run("mae"), "--out", tmp_path / "s"], "classifier"),
             (["eval", copy_run("ar")], None), (["info", copy_run("probe")], None)]
    for argv, needle in cases:
        code, out, err = _main(argv, capsys)
        if needle is None:
            assert code == 0 and out, err
        else:
            one_line_error(code, err, needle)
    assert not (tmp_path / "c.onnx").exists()


@pytest.mark.parametrize("to", ["timm", "hf", "vitkit"])
def test_5_init_reads_a_folder_written_by_convert(to, copy_run, tmp_path, capsys):
    from vitkit import create_model
    from vitkit.train.tasks import load_backbone
    run = copy_run("classify")
    assert main(["convert", str(run), str(tmp_path / to), "--to", to]) == 0
    a, b = (create_model("vit_nano_patch2_8", num_classes=10, in_chans=1, img_size=8) for _ in range(2))
    load_backbone(a, run)
    load_backbone(b, tmp_path / to)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        if not k.startswith("head."):
            assert torch.equal(v, w), k
    code, _, err = _main(["train", *TINY, "--init", tmp_path / to, "--out", tmp_path / "ft"], capsys)
    assert code == 0, err


# ---------------------------------------------------------------------------- 6-8: numbers, messages, flags
@pytest.mark.parametrize("argv, flag", [
    (["generate", "{ar}", "--n", "0"], "--n"), (["generate", "{ar}", "--n", "-3"], "--n"),
    (["predict", "{classify}", "{img}", "--topk", "-1"], "--topk"),
    (["predict", "{classify}", "{img}", "--topk", "0"], "--topk"),
    (["sparsevit-search", "--run", "{sparsevit_adapt}", "--latency-budget", "9", "--batch", "0"], "--batch"),
    (["sparsevit-search", "--run", "{sparsevit_adapt}", "--latency-budget", "9", "--repeats", "0"], "--repeats"),
    (["train", *VIT, "--device", "cuda", "--out", "{tmp}/x"], "cuda"),
    (["bench", "--quick", "--device", "tpu", "--out", "{tmp}"], "tpu"),
])
def test_6_bad_numbers_are_one_line_errors_naming_the_flag(argv, flag, run_folders, digit_png, tmp_path, capsys):
    if flag == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    names = {**run_folders("ar", "classify", "sparsevit_adapt"), "img": digit_png(tmp_path / "d.png"), "tmp": tmp_path}
    code, out, err = _main([a.format(**names) for a in argv], capsys)
    one_line_error(code, err, flag)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("setting, needles, not_in", [
    ("model_args.mlp_ratio=abc", ["mlp_ratio", "'abc'"], "abcabc"),
    ("model_args.depth=abc", ["depth"], None),
    ("augment.rotate=abc", ["augment.rotate"], None),
    ("model_args.drop_path_rate=2", ["drop_path_rate", "got 2"], "1.333"),
])
def test_7a_a_bad_setting_names_its_key(setting, needles, not_in, tmp_path, capsys):
    code, _, err = _main(["train", *TINY, "--set", setting, "--out", tmp_path / "x"], capsys)
    one_line_error(code, err, *needles)
    assert not_in is None or not_in not in err


@pytest.mark.parametrize("name, text", [("bad.yaml", "model: [vit\n  lr: 1"), ("bad.json", '{"model": ')])
def test_7b_an_unreadable_config_file_is_named(name, text, tmp_path, capsys):
    (tmp_path / name).write_text(text)
    code, _, err = _main(["train", "--config", tmp_path / name, "--out", tmp_path / "x"], capsys)
    one_line_error(code, err, name, "line")


def test_7c_a_run_of_config_and_weights_alone_is_usable(tmp_path, capsys):
    run = tmp_path / "shipped"
    assert main(["train", *TINY, "--ema", "0.9", "--out", str(run)]) == 0
    for name in ("train_state.pt", "model_ema.safetensors"):
        (run / name).unlink()
    code, out, err = _main(["eval", run], capsys)
    assert code == 0 and "model weights" in out, err
    assert err.startswith("vitkit: warning:") and "model.safetensors" in err and len(err.splitlines()) == 1
    code, _, err = _main(["eval", run, "--weights", "ema"], capsys)
    one_line_error(code, err, "--weights model")
    res = _cli("eval", run)  # a warning is one line, without the source line that raised it
    assert res.returncode == 0 and res.stderr.startswith("vitkit: warning:") and len(res.stderr.splitlines()) == 1


def test_7d_a_file_inside_a_run_names_its_run(copy_run, capsys):
    run = copy_run("classify")
    code, a, err = _main(["eval", run], capsys)
    code2, b, err2 = _main(["eval", run / "config.json"], capsys)
    assert code == code2 == 0 and a == b, (err, err2)


def test_7e_zero_shot_on_a_classifier_points_to_predict(copy_run, digit_png, tmp_path, capsys):
    code, _, err = _main(["zero-shot", copy_run("classify"), digit_png(tmp_path / "d.png"), "--labels", "a,b"], capsys)
    one_line_error(code, err, "vitkit predict")
    assert "clip_meta" not in err and "fit's meta" not in err


@pytest.mark.parametrize("argv, needle", [
    (["ablate", "--epochs", "0"], "--epochs"),
    (["bench", "--quick", "--models", "vit_nope", "--out", "{tmp}"], "vit_nope"),
    (["bench", "--quick", "--threads", "0", "--out", "{tmp}"], "--threads"),
    (["train", *TINY, "--probe", "--out", "{tmp}/p"], "--init"),
])
def test_8a_flags_are_never_silently_ignored(argv, needle, tmp_path, capsys):
    code, _, err = _main([a.format(tmp=tmp_path) for a in argv], capsys)
    one_line_error(code, err, needle)
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob("speed*"))


def test_8b_more_threads_than_cores_warns(tmp_path, capsys):
    from vitkit.train.trainer import available_cpus
    argv = [*TINY[:-3], "--threads", str(available_cpus() + 1), "--no-report", "--out", tmp_path / "t"]
    code, _, err = _main(["train", *argv], capsys)
    assert code == 0
    warning = [line for line in err.splitlines() if line.startswith("vitkit: warning:")]
    assert len(warning) == 1 and f"{available_cpus() + 1} threads" in warning[0], err


# ---------------------------------------------------------------------------- 9: Ctrl-C
def _interrupt(args: list, when) -> subprocess.CompletedProcess:
    """Start ``vitkit *args``, wait until ``when()`` is true (or 20 s), then press Ctrl-C (SIGINT)."""
    # SIGINT's default disposition in the child even when the test runner was started in the background
    # (a non-interactive shell starts background jobs with SIGINT ignored, and exec keeps that)
    proc = subprocess.Popen([sys.executable, "-m", "vitkit", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not when():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_9a_ctrl_c_during_start_up_is_one_line_without_resume_advice(delay, copy_run, tmp_path):
    start = time.time()
    for args in (["train", *VIT, "--epochs", "50", "--out", tmp_path / f"run{delay}"], ["eval", copy_run("classify")]):
        res = _interrupt(args, lambda: time.time() - start > delay)
        if res.returncode == 0:
            continue  # it finished first: nothing to check
        if res.returncode == -signal.SIGINT and not res.stderr:
            continue  # Python itself was still starting: killed silently, as any Python program
        assert res.returncode == 130, res.stderr
        assert res.stderr.strip().startswith("vitkit: interrupted") and len(res.stderr.strip().splitlines()) == 1, \
            res.stderr
        assert "--resume" not in res.stderr and "Traceback" not in res.stderr
        start = time.time()


def test_9b_ctrl_c_after_a_checkpoint_says_how_to_resume(tmp_path):
    run = tmp_path / "run"
    res = _interrupt(["train", *VIT, "--epochs", "50", "--out", run], lambda: (run / "train_state.pt").is_file())
    assert res.returncode == 130, res.stderr
    assert f"vitkit train --resume --out {run}` continues after epoch" in res.stderr
    assert "Traceback" not in res.stderr


def test_9c_ctrl_c_wrapped_by_an_import_is_still_an_interrupt(monkeypatch, capsys):
    """Ctrl-C during class creation in an import reaches the CLI as a RuntimeError ("Error calling
    __set_name__ ...") caused by the KeyboardInterrupt: still "interrupted" and 130, not an internal error."""
    import vitkit.cli
    import vitkit.cli.download

    def interrupted_import(args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as k:
            raise RuntimeError("Error calling __set_name__ on '_Implementation' instance") from k
    monkeypatch.setattr(vitkit.cli.download, "cmd_download", interrupted_import)
    assert vitkit.cli.main(["download", "vit_tiny_patch16_224"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("vitkit: interrupted") and "internal error" not in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------------------- 10: the smaller ones
def test_10a_a_closed_pipe_is_quiet():
    proc = subprocess.Popen([sys.executable, "-m", "vitkit", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # `vitkit models | head -1`
    assert proc.wait(timeout=120) == 0
    assert proc.stderr.read() == b""


def test_10b_vitkit_debug_0_means_off(tmp_path):
    res = _cli("eval", tmp_path / "nope", env={"VITKIT_DEBUG": "0"})
    one_line_error(res.returncode, res.stderr, "does not exist")


def test_10c_generate_writes_the_format_its_name_says(copy_run, tmp_path, capsys):
    run = copy_run("ar")
    assert main(["generate", str(run), "--n", "4", "--out", str(tmp_path / "g.jpg")]) == 0
    assert (tmp_path / "g.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, not PNG bytes
    code, _, err = _main(["generate", run, "--n", "4", "--out", tmp_path / "g.nothing"], capsys)
    one_line_error(code, err, "g.nothing")


def test_10d_convert_to_hf_writes_the_class_names(copy_run, tmp_path):
    run = copy_run("classify")
    assert main(["convert", str(run), str(tmp_path / "hf"), "--to", "hf"]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    classes = json.loads((run / "config.json").read_text())["classes"]
    assert [config["id2label"][str(i)] for i in range(len(classes))] == classes
    from transformers import ViTForImageClassification
    hf = ViTForImageClassification.from_pretrained(tmp_path / "hf")
    assert hf.config.id2label[7] == classes[7]


def test_10e_sparsevit_search_never_recommends_a_config_slower_than_dense(copy_run, tmp_path, capsys):
    run = copy_run("sparsevit_adapt")
    args = ["sparsevit-search", "--run", run, "--samples", "4", "--choices", "0,0.5", "--repeats", "1"]
    assert _main([*args, "--latency-budget", "1e9", "--json", tmp_path / "t.json"], capsys)[0] == 0
    table = json.loads((tmp_path / "t.json").read_text())["table"]
    for row in table["pair_ms"]:  # make pruning cost more than it saves: every sparse config is slower
        row[1] = row[0] + 1.0
    (tmp_path / "slow.json").write_text(json.dumps(table))
    code, out, err = _main([*args, "--latency-budget", "1e9", "--table", tmp_path / "slow.json",
                            "--json", tmp_path / "s.json"], capsys)
    assert code == 0, err
    assert "best: none" in out and "faster than dense" in out and "x faster" not in out
    assert json.loads((tmp_path / "s.json").read_text())["best"] is None


def test_10f_a_long_epoch_prints_progress_away_from_a_terminal(monkeypatch, tmp_path, capsys):
    import vitkit.train.trainer as trainer
    monkeypatch.delenv("VITKIT_NO_PROGRESS", raising=False)
    monkeypatch.setattr(trainer, "PROGRESS_SECONDS", 0.0)
    code, out, err = _main(["train", *TINY, "--out", tmp_path / "r"], capsys)  # stderr is not a TTY here
    assert code == 0, err
    assert "epoch 1/1, step 1/" in out
