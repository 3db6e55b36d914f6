"""Every subcommand against every kind of run folder vitkit writes, and against the usual bad inputs.

Each case either works or exits non-zero with exactly one line, ``vitkit: error: ...``, that is not an
"internal error"; nothing escapes as a traceback (an exception leaving ``main`` fails the test). Where
a command is meant to serve a kind of run (``predict`` a classifier, ``generate`` a generator...), the
case must work, not merely fail cleanly.
"""
from __future__ import annotations

import pytest

from vitkit.cli import main

from .conftest import KINDS

pytestmark = pytest.mark.slow

CLASSIFIERS = {"classify", "probe", "distill", "sparsevit_adapt"}
BACKBONES = {"classify", "probe", "mae", "simclr", "mocov3", "clip"}  # runs holding a vit_nano_patch2_8
TINY_TRAIN = ["--model", "vit_nano_patch2_8", "--data", "digits", "--epochs", "1", "--batch-size", "16",
              "--labels-per-class", "5", "--threads", "1", "--no-report"]

# command -> (argv for a run folder `r`, a temp folder `t` and an image `img`; the kinds it must work for)
COMMANDS = {
    "info": (lambda r, t, img: ["info", r], set(KINDS)),
    "eval": (lambda r, t, img: ["eval", r, "--json"], set(KINDS)),
    "report": (lambda r, t, img: ["report", r], set(KINDS)),
    "predict": (lambda r, t, img: ["predict", r, img], CLASSIFIERS),
    "export": (lambda r, t, img: ["export", r, "--onnx", t / "m.onnx"], CLASSIFIERS),
    "zero-shot": (lambda r, t, img: ["zero-shot", r, img, "--labels", "zero,one"], {"clip"}),
    "generate": (lambda r, t, img: ["generate", r, "--n", "2", "--out", t / "g.png"], {"ar", "var", "hart"}),
    "convert": (lambda r, t, img: ["convert", r, t / "hf", "--to", "hf"], BACKBONES),
    "train --init": (lambda r, t, img: ["train", *TINY_TRAIN, "--init", r, "--out", t / "ft"], BACKBONES),
    "train --teacher": (lambda r, t, img: ["train", *TINY_TRAIN, "--teacher", r, "--out", t / "st"], CLASSIFIERS),
    "train --resume": (lambda r, t, img: ["train", "--resume", "--out", r], set(KINDS)),  # finished: nothing to do
    "sparsevit-search": (lambda r, t, img: ["sparsevit-search", "--run", r, "--latency-budget", "1e9", "--samples",
                                            "2", "--choices", "0,0.5", "--repeats", "1"], {"sparsevit_adapt"}),
}


def _run(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean(code: int, err: str, case: str) -> None:
    """Success, or one 'vitkit: error:' line that is not an internal error (warnings are 'vitkit:' lines too)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith("vitkit: ") for line in lines), (case, err)
    assert "internal error" not in err and "Traceback" not in err, (case, err)
    errors = [line for line in lines if line.startswith("vitkit: error:")]
    if code == 0:
        assert not errors, (case, err)
    else:
        assert len(errors) == 1 and errors[0] == lines[-1], (case, err)


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("kind", KINDS)
def test_every_command_on_every_kind_of_run(kind, command, copy_run, digit_png, tmp_path, capsys):
    run = copy_run(kind)
    make, works_for = COMMANDS[command]
    code, out, err = _run(make(run, tmp_path, digit_png(tmp_path / "digit.png")), capsys)
    assert_clean(code, err, f"{command} on a {kind} run")
    if kind in works_for:
        assert code == 0, (command, kind, err)
        assert out.strip(), (command, kind)
    else:
        assert code != 0, (command, kind, out)
        assert str(run) in err or "run" in err, err  # it says which run and what it is
    if command == "export" and code != 0:
        assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*onnx")), "a partial ONNX file was left"
    if command == "train --resume":
        assert "nothing to train" in out


def _bad_folders(tmp_path, copy_run):
    """name -> a path that is not a usable run folder."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("not a run")
    (tmp_path / "corrupt_config").mkdir()
    (tmp_path / "corrupt_config" / "config.json").write_text("{not json")
    truncated = copy_run("classify", "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    return {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "file": tmp_path / "file.txt",
            "corrupt config.json": tmp_path / "corrupt_config", "truncated weights": truncated}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_on_bad_run_folders(command, copy_run, digit_png, tmp_path, capsys):
    img = digit_png(tmp_path / "digit.png")
    make, _ = COMMANDS[command]
    for name, path in _bad_folders(tmp_path, copy_run).items():
        code, out, err = _run(make(path, tmp_path / f"out_{name.replace(' ', '_')}", img), capsys)
        assert code != 0, (command, name, out)
        assert_clean(code, err, f"{command} on a {name} folder")


@pytest.mark.parametrize("bad", ["corrupt", "text", "missing", "truncated jpeg"])
def test_predict_on_bad_images_names_the_file_and_goes_on(bad, copy_run, digit_png, tmp_path, capsys):
    good = digit_png(tmp_path / "good.png")
    path = tmp_path / {"corrupt": "bad.png", "text": "notes.png", "missing": "gone.png", "truncated jpeg": "cut.jpg"}[bad]
    if bad == "corrupt":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    elif bad == "text":
        path.write_text("hello")
    elif bad == "truncated jpeg":
        digit_png(path, size=64)
        path.write_bytes(path.read_bytes()[:200])
    code, out, err = _run(["predict", copy_run("classify"), good, path], capsys)
    assert code == 1 and "good.png" in out  # the good file is still classified
    assert_clean(code, err, bad)
    assert path.name in err
