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


# ---------------------------------------------------------------------------- sparsevit_adapt
SWIN_DIGITS = ["--data", "digits", "--epochs", "1", "--warmup", "0", "--threads", "1", "--labels-per-class", "5",
               "--batch-size", "32", "--set", "model_args.window_size=2", "--no-report"]  # 8x8 digits: stage 1 is a 4x4 map of 4 windows


def test_sparsevit_adapt_starts_from_a_dense_swin_run_and_adapts_at_random_sparsities(tmp_path, capsys):
    from vitkit.models import SparseViT
    from vitkit.train.run import predict_batches, top1
    dense = tmp_path / "swin"
    assert main(["train", "--model", "swin_nano_patch2_window4_28", "--out", str(dense), *SWIN_DIGITS]) == 0
    swin = load_run(dense).model
    cfg = TrainConfig(model="sparsevit_swin_nano_patch2_window4_28", data="digits", labels_per_class=5, batch_size=32,
                      epochs=1, num_threads=1, log_every=1000, model_args={"window_size": 2}, init=str(dense),
                      task="sparsevit_adapt", task_args={"choices": [0.25, 0.5], "eval_sparsity": 0.5})
    model, task, loaders, _, _ = build_run(cfg)
    assert isinstance(model, SparseViT) and model.sparsity == (0.5, 0.5, 0.5) and task.eval_sparsity == (0.5,) * 3
    # the Swin run's state dict, classifier head included, is the SparseViT's
    assert model.state_dict().keys() == swin.state_dict().keys()
    assert all(torch.equal(v, swin.state_dict()[k]) for k, v in model.state_dict().items())
    x = next(iter(loaders["test"]))[0][:8]
    model.eval().set_sparsity((0, 0, 0))
    assert torch.allclose(model(x), swin(x), atol=1e-5)  # sparsity 0 is the dense Swin
    model.set_sparsity((0.5, 0, 0))
    assert not torch.allclose(model(x), swin(x), atol=1e-3)  # 2 of stage 1's 4 windows pruned
    # the CLI: one adaptation step at a sparsity drawn from the choices, evaluated at eval_sparsity
    out = tmp_path / "adapt"
    assert main(["train", "--model", "sparsevit_swin_nano_patch2_window4_28", "--task", "sparsevit_adapt",
                 "--init", str(dense), "--set", "task_args.choices=[0.25,0.5]", "--set", "task_args.eval_sparsity=0.5",
                 "--out", str(out), *SWIN_DIGITS]) == 0
    assert "training sparsevit_adapt" in capsys.readouterr().out
    run = load_run(out)
    assert run.train_cfg.task == "sparsevit_adapt" and run.model.sparsity == (0.5, 0.5, 0.5)
    assert not torch.equal(run.model.head.weight, swin.head.weight)  # it trained, from the dense head
    last = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][-1]
    logits, labels = predict_batches(run.model, run.test_loader())
    assert last["test_acc"] == pytest.approx(top1(logits, labels))  # evaluated at the eval sparsity
    # every training step draws each stage's sparsity from the choices; evaluation goes back to eval_sparsity
    drawn = set()
    for _ in range(8):
        task.loss(model.train(), next(iter(loaders["train"])))
        assert model.sparsity == task.last_sparsity
        drawn.update(task.last_sparsity)
    assert drawn == {0.25, 0.5}
    task.eval_metrics(model.eval(), (x, torch.zeros(len(x), dtype=torch.long)))
    assert model.sparsity == (0.5, 0.5, 0.5)


def test_sparsevit_adapt_needs_a_sparsevit_and_valid_task_args():
    with pytest.raises(ValueError, match="needs a SparseViT model.*got 'vit_nano_patch2_8'"):
        build_run(TrainConfig(**TINY, task="sparsevit_adapt"))
    base = dict(TINY, model="sparsevit_swin_nano_patch2_window4_28", task="sparsevit_adapt")
    with pytest.raises(ValueError, match="one sparsity per stage"):
        build_run(TrainConfig(**base, task_args={"eval_sparsity": [0.5, 0.5]}))
    with pytest.raises(ValueError, match=r"choices must be sparsities in \[0, 1\)"):
        build_run(TrainConfig(**base, task_args={"choices": [0.5, 1.0]}))
    with pytest.raises(ValueError, match="does not take task_args \\['sparsity'\\]"):
        build_run(TrainConfig(**base, task_args={"sparsity": 0.5}))
