"""HART's hybrid tokenizer recipe (issue 23, item 7): mit-han-lab/hart hart_autoencoder.py with
``freeze_codebook_for_hybrid=True`` starts from a trained VAR tokenizer and freezes its encoder,
quantizer and quant_conv (``requires_grad_(False)``); the decoder (and post_quant_conv) train."""
import pytest
import torch

from vitkit.gen import HybridTokenizer, MultiScaleVQTokenizer, TokenizerTask
from vitkit.train import TrainConfig
from vitkit.train.optim import build_optimizer

OPTS = dict(in_chans=1, img_size=16, channels=(8, 8, 8), embed_dim=4, codebook_size=16)
FROZEN = ("encoder.", "quant_conv.", "quantizer.")


def _trained_multiscale(steps: int = 5) -> MultiScaleVQTokenizer:
    """A multi-scale tokenizer after a few training steps: codebook initialised from data, EMA state moved."""
    torch.manual_seed(0)
    ms = MultiScaleVQTokenizer(**OPTS).train()
    opt = torch.optim.AdamW(ms.parameters(), lr=1e-2)
    task = TokenizerTask()
    for _ in range(steps):
        loss, _ = task.loss(ms, torch.randn(8, 1, 16, 16))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ms.eval()


def _train_steps(tok, steps: int = 3):
    """Steps as the trainer takes them: its AdamW over the trainable parameters, TokenizerTask's loss."""
    opt = build_optimizer(tok, TrainConfig(weight_decay=0.0))
    for g in opt.param_groups:
        g["lr"] = 1e-2
    tok.train()
    for _ in range(steps):
        loss, _ = TokenizerTask().loss(tok, torch.randn(8, 1, 16, 16))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return opt


def test_a_hybrid_started_from_a_multiscale_tokenizer_reconstructs_its_tokens_as_it_does():
    ms = _trained_multiscale()
    hy = HybridTokenizer(**OPTS).start_from(ms).eval()
    x = torch.randn(4, 1, 16, 16)
    ids_ms, ids_hy = ms.encode(x), hy.encode(x)
    assert all(torch.equal(a, b) for a, b in zip(ids_ms, ids_hy))
    assert torch.equal(hy.decode_ids(ids_hy), ms.decode_ids(ids_ms))                  # discrete reconstruction
    assert torch.allclose(hy(x)[1]["recon_discrete"], ms.decode_ids(ids_ms), atol=1e-6)  # straight-through f^
    codes, residual = hy.encode_hybrid(x)
    assert all(torch.equal(a, b) for a, b in zip(codes, ids_ms)) and residual.abs().sum() > 0


def test_frozen_parts_stay_bit_identical_through_training_and_the_decoder_trains():
    ms = _trained_multiscale()
    hy = HybridTokenizer(**OPTS).start_from(ms)
    trainable = {n for n, p in hy.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("decoder.", "post_quant_conv.")) for n in trainable)
    opt = _train_steps(hy)
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(
        p.numel() for n, p in hy.named_parameters() if n in trainable)             # the optimizer skips the rest
    assert hy.training and not any(m.training for m in hy.discrete_path())          # no EMA / restart updates
    before, after = ms.state_dict(), hy.state_dict()
    for k, v in after.items():                                                      # weights AND codebook buffers
        if k.startswith(FROZEN):
            assert torch.equal(v, before[k]), k
    assert not torch.equal(after["decoder.net.0.weight"], before["decoder.net.0.weight"])
    hy.eval()
    x = torch.randn(4, 1, 16, 16)
    assert all(torch.equal(a, b) for a, b in zip(hy.encode(x), ms.encode(x)))       # the same discrete tokens


def test_unfrozen_start_and_joint_training_from_scratch():
    ms = _trained_multiscale()
    hy = HybridTokenizer(**OPTS).start_from(ms, freeze=False)
    assert all(p.requires_grad for p in hy.parameters()) and not hy.discrete_frozen
    _train_steps(hy, 1)
    assert not torch.equal(hy.state_dict()["quantizer.vq.embed"], ms.state_dict()["quantizer.vq.embed"])
    with pytest.raises(ValueError, match="same options"):
        HybridTokenizer(**{**OPTS, "codebook_size": 32}).start_from(ms)


@pytest.mark.slow
def test_hybrid_run_from_a_multiscale_run_through_the_cli(tmp_path, capsys):
    """`vitkit pretrain --task vq --set task_args.kind=hybrid --init MULTISCALE_RUN`: the run's frozen parts
    are the multiscale run's, bit for bit, after training; `load_run` reads it back."""
    from vitkit.cli import main
    from vitkit.train.run import load_run
    tok = ["--set", "task_args.channels=[8,16]", "--set", "task_args.codebook_size=16", "--set", "task_args.embed_dim=4"]
    base = ["--data", "digits", "--epochs", "1", "--batch-size", "64", "--threads", "1", "--no-report"]
    assert main(["pretrain", "--task", "vq", *base, *tok, "--set", "task_args.kind=multiscale",
                 "--out", str(tmp_path / "ms")]) == 0
    assert main(["pretrain", "--task", "vq", *base, *tok, "--set", "task_args.kind=hybrid",
                 "--init", str(tmp_path / "ms"), "--out", str(tmp_path / "hy")]) == 0
    ms, hy = load_run(tmp_path / "ms"), load_run(tmp_path / "hy")
    a, b = ms.model.state_dict(), hy.model.state_dict()
    assert all(torch.equal(b[k], a[k]) for k in b if k.startswith(FROZEN))
    assert not torch.equal(b["decoder.net.0.weight"], a["decoder.net.0.weight"])
    assert hy.config["num_trainable"] == sum(v.numel() for k, v in hy.model.named_parameters()
                                             if k.startswith(("decoder.", "post_quant_conv.")))
    # the options must be the multiscale run's; --init is for hybrid tokenizers only
    assert main(["pretrain", "--task", "vq", *base, "--set", "task_args.kind=hybrid", "--init", str(tmp_path / "ms"),
                 "--out", str(tmp_path / "bad")]) == 1
    assert "differ from those of the multiscale run" in capsys.readouterr().err
    assert main(["pretrain", "--task", "vq", *base, *tok, "--set", "task_args.kind=multiscale",
                 "--init", str(tmp_path / "ms"), "--out", str(tmp_path / "bad")]) == 1
    assert "hybrid tokenizer" in capsys.readouterr().err
