"""Task builders: few-label subsets, starting a classifier from a pretrained backbone, linear probes."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vitkit import data as vdata
from vitkit.cli import main
from vitkit.train import TrainConfig, fit
from vitkit.train.run import build_run, load_run
from vitkit.tasks import LinearProbe, backbone_state_dict
from vitkit.train.tasks import load_backbone

TINY = dict(model="vit_nano_patch2_8", data="digits", batch_size=32, num_threads=1, log_every=1000)


def test_labelled_subset_draws_exactly_n_per_class_and_nests():
    bundle = vdata.build("digits")
    ten = vdata.labelled_subset(bundle.train, 10, seed=1)
    counts = np.bincount(ten.labels.numpy(), minlength=10)
    assert counts.tolist() == [10] * 10
    twenty = vdata.labelled_subset(bundle.train, 20, seed=1)
    assert set(ten.source_indices.tolist()) <= set(twenty.source_indices.tolist())
    other = vdata.labelled_subset(bundle.train, 10, seed=2)
    assert set(ten.source_indices.tolist()) != set(other.source_indices.tolist())
    with pytest.raises(ValueError, match="fewer than labels_per_class"):
        vdata.labelled_subset(bundle.train, 10_000, seed=1)


def test_fewer_images_than_a_batch_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than one batch.*lower --batch-size"):
        build_run(TrainConfig(**{**TINY, "batch_size": 128}, labels_per_class=5))


def test_build_run_trains_on_the_few_labels_only():
    model, task, loaders, bundle, meta = build_run(TrainConfig(**TINY, labels_per_class=5))
    assert len(bundle.train) == 50 and meta["train_count"] == 50
    assert len(bundle.test) == 359  # evaluation keeps the whole held-out split


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="unknown task 'nope'.*classify"):
        build_run(TrainConfig(**TINY, task="nope"))


def test_init_takes_the_backbone_of_a_pretraining_checkpoint(tmp_path):
    donor = build_run(TrainConfig(**TINY, seed=5))[0]
    state = {f"backbone.{k}": v for k, v in donor.state_dict().items() if not k.startswith("head.")}
    state["decoder.weight"] = torch.zeros(3)  # a pretraining task's own module: ignored
    save_file(state, tmp_path / "pre.safetensors")
    model = build_run(TrainConfig(**TINY, init=str(tmp_path / "pre.safetensors")))[0]
    got = model.state_dict()
    for k, v in donor.state_dict().items():
        if k.startswith("head."):
            assert torch.count_nonzero(got[k]) == 0, k  # the zero-initialised fine-tuning head
        else:
            assert torch.equal(got[k], v), k
    assert "decoder.weight" not in backbone_state_dict(state) and "blocks.0.attn.qkv.weight" in backbone_state_dict(state)


def test_init_from_another_backbone_says_what_does_not_fit(tmp_path):
    other = build_run(TrainConfig(**{**TINY, "model": "vit_nano_patch4_28", "img_size": 28}))[0]
    save_file(other.state_dict(), tmp_path / "other.safetensors")
    model = build_run(TrainConfig(**TINY))[0]
    with pytest.raises(ValueError, match="do not fit"):
        load_backbone(model, tmp_path / "other.safetensors")


def test_linear_probe_trains_only_its_head_and_round_trips(tmp_path):
    pre = tmp_path / "pre"
    cfg = TrainConfig(**TINY, epochs=3, lr=2e-3, out=str(pre))
    model, task, loaders, _, meta = build_run(cfg)
    fit(model, task, loaders, cfg, meta)
    probe_cfg = TrainConfig(**TINY, epochs=15, lr=0.05, init=str(pre), probe=True, out=str(tmp_path / "probe"))
    model, task, loaders, bundle, meta = build_run(probe_cfg)
    assert isinstance(model, LinearProbe)
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    assert meta["num_trainable"] == model.head.weight.numel() + model.head.bias.numel()
    result = fit(model, task, loaders, probe_cfg, meta)
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in frozen.items())
    assert result["test_acc"] > 0.4  # far above chance (0.1) on frozen features of a weak backbone
    run = load_run(tmp_path / "probe")
    x = next(iter(run.test_loader()))[0][:4]
    assert torch.allclose(run.model(x), model.eval()(x), atol=1e-6)


def test_pretrain_command_needs_a_task(capsys):
    assert main(["pretrain", "--model", "vit_nano_patch2_8", "--data", "digits", "--out", "/tmp/x"]) == 1
    assert "pretrain needs --task" in capsys.readouterr().err


def test_train_with_a_teacher_distils_from_that_run(tmp_path, capsys):
    teacher = tmp_path / "teacher"
    assert main(["train", "--model", "vit_nano_patch2_8", "--data", "digits", "--epochs", "1", "--threads", "1",
                 "--out", str(teacher), "--no-report"]) == 0
    student = tmp_path / "student"
    assert main(["train", "--model", "deit_nano_distilled_patch2_8", "--data", "digits", "--epochs", "1",
                 "--threads", "1", "--teacher", str(teacher), "--set", "task_args.kind=soft",
                 "--out", str(student), "--no-report"]) == 0
    run = load_run(student)
    assert run.train_cfg.task == "distill" and run.train_cfg.task_args == {"teacher": str(teacher), "kind": "soft"}
    lines = [json.loads(x) for x in (student / "metrics.jsonl").read_text().splitlines()]
    assert any("train_loss_dist" in r for r in lines)  # the distillation term was trained
    assert main(["eval", str(student)]) == 0


def test_distill_without_a_teacher_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a teacher run folder"):
        build_run(TrainConfig(**{**TINY, "model": "deit_nano_distilled_patch2_8"}, task="distill"))


def test_pretrain_mae_then_fine_tune_and_probe_from_it(tmp_path, capsys):
    pre = tmp_path / "mae"
    assert main(["pretrain", "--task", "mae", "--model", "vit_nano_patch2_8", "--data", "digits", "--epochs", "1",
                 "--threads", "1", "--set", "task_args.decoder_dim=16", "--set", "task_args.decoder_depth=1",
                 "--out", str(pre)]) == 0
    assert (pre / "reconstructions.png").is_file()
    run = load_run(pre)
    assert run.train_cfg.task == "mae" and run.model.decoder_embed.out_features == 16
    for extra in ([], ["--probe"]):
        out = tmp_path / f"ft{len(extra)}"
        assert main(["train", "--model", "vit_nano_patch2_8", "--data", "digits", "--epochs", "1", "--threads", "1",
                     "--init", str(pre), "--labels-per-class", "10", "--batch-size", "32", "--out", str(out), "--no-report", *extra]) == 0
        ft = load_run(out).model
        body = ft.backbone if extra else ft
        assert torch.equal(body.blocks[0].attn.qkv.weight, run.model.backbone.blocks[0].attn.qkv.weight) == bool(extra)
    assert "held-out top-1" in capsys.readouterr().out
