"""Every pretraining task through `vitkit pretrain`, reloaded by `load_run`, and what comes after it."""
import json

import pytest
import torch

from vitkit.cli import main
from vitkit.train.run import load_run

pytestmark = pytest.mark.slow
TINY = ["--model", "vit_nano_patch2_8", "--data", "digits", "--epochs", "1", "--batch-size", "64", "--threads", "1",
        "--no-report"]


def _eval_line(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r.get("kind") == "epoch"][-1]


@pytest.mark.parametrize("task", ["simclr", "mocov3"])
def test_contrastive_pretraining_then_fine_tuning(tmp_path, task):
    pre = tmp_path / task
    assert main(["pretrain", "--task", task, *TINY, "--out", str(pre)]) == 0
    last = _eval_line(pre)
    assert 0.0 <= last["test_acc"] <= 1.0 and last["test_loss"] > 0
    run = load_run(pre)
    assert type(run.model).__name__ == {"simclr": "SimCLR", "mocov3": "MoCoV3"}[task]
    if task == "mocov3":  # the momentum schedule spans the run: total_steps = epochs x steps per epoch
        assert run.model.total_steps == 1438 // 64 and int(run.model.step) == 1438 // 64
    ft = tmp_path / "ft"
    assert main(["train", *TINY, "--init", str(pre), "--labels-per-class", "10", "--batch-size", "32",
                 "--out", str(ft)]) == 0
    assert load_run(ft).train_cfg.init == str(pre)


def test_clip_pretraining_writes_a_run_load_clip_reads(tmp_path, capsys):
    import vitkit
    out = tmp_path / "clip"
    assert main(["pretrain", "--task", "clip", *TINY, "--out", str(out), "--set", "task_args.embed_dim=32",
                 "--set", "task_args.text_args.width=32", "--set", "task_args.text_args.depth=1"]) == 0
    assert 0.0 <= _eval_line(out)["test_zero_shot_acc"] <= 1.0
    a, b = load_run(out).model, vitkit.load_clip(out)
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(a.encode_image(x), b.encode_image(x), atol=1e-6)
    assert a.text.cfg.width == 32


def test_unknown_task_args_are_named(tmp_path, capsys):
    assert main(["pretrain", "--task", "mae", *TINY, "--out", str(tmp_path), "--set", "task_args.bogus=1"]) == 1
    assert "does not take task_args ['bogus']" in capsys.readouterr().err


def test_diverse_patch_trains_through_the_cli(tmp_path):
    out = tmp_path / "dp"
    assert main(["train", "--task", "diverse_patch", *TINY, "--out", str(out)]) == 0
    assert "train_patch_cos" in _eval_line(out)
    assert load_run(out).model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_tokenizers_generators_and_generate_through_the_cli(tmp_path, capsys):
    """vq -> ar (masked), multiscale -> var, hybrid -> hart, each generating a grid; wrong pairings are named."""
    tok = ["--set", "task_args.channels=[8,16]", "--set", "task_args.codebook_size=16", "--set", "task_args.embed_dim=4"]
    small = ["--set", "task_args.dim=16", "--set", "task_args.depth=1", "--set", "task_args.num_heads=2"]
    base = ["--data", "digits", "--epochs", "1", "--batch-size", "64", "--threads", "1", "--no-report"]
    for kind in ("vq", "multiscale", "hybrid"):
        assert main(["pretrain", "--task", "vq", *base, *tok, "--set", f"task_args.kind={kind}",
                     "--out", str(tmp_path / kind)]) == 0
    assert "test_psnr" in _eval_line(tmp_path / "hybrid") and "test_mse_discrete" in _eval_line(tmp_path / "hybrid")
    from vitkit.cli import task_pictures
    assert task_pictures(tmp_path / "hybrid")["reconstructions"].is_file()  # original / discrete / + residual
    pairs = {"ar": "vq", "var": "multiscale", "hart": "hybrid"}
    for gen, kind in pairs.items():
        extra = ["--set", "task_args.order=masked"] if gen == "ar" else []
        assert main(["pretrain", "--task", gen, *base, *small, *extra, "--set", f"task_args.tokenizer={tmp_path / kind}",
                     "--out", str(tmp_path / gen)]) == 0
        png = tmp_path / f"{gen}.png"
        assert main(["generate", str(tmp_path / gen), "--n", "10", "--out", str(png), "--cfg-scale", "2"]) == 0
        assert png.is_file()
    assert task_pictures(tmp_path / "var")["samples"].is_file()
    out = capsys.readouterr().out
    scales = load_run(tmp_path / "multiscale").model.scales
    assert f"{len(scales)} transformer forward passes" in out  # VAR: one pass per scale
    assert "8 transformer forward passes" in out  # MaskGIT: 8 decoding steps
    assert main(["pretrain", "--task", "var", *base, "--set", f"task_args.tokenizer={tmp_path / 'vq'}",
                 "--out", str(tmp_path / "bad")]) == 1
    assert "is not a multiscale tokenizer run" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "vq")]) == 1
