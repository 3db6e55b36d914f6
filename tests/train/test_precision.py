"""Mixed precision on the CPU (issue 19): `amp` resolves per host, a bf16 step matches fp32 to bf16
tolerance with every fast path on, and resume stays bit-identical under bf16."""
import pytest
import torch

from train_toys import ToyLoader, make_data
from vitkit import create_model, hardware
from vitkit.layers.linear import fast_linear
from vitkit.tasks import Classify
from vitkit.train import TrainConfig, fit
from vitkit.train import checkpoint as ckpt
from vitkit.train import precision


@pytest.mark.parametrize("flags, want", [({"avx512f", "avx512_bf16"}, torch.bfloat16), ({"amx_bf16"}, torch.bfloat16),
                                         ({"avx2", "avx512f"}, None), (set(), None)])
def test_auto_is_bf16_only_where_the_cpu_has_native_bf16(monkeypatch, flags, want):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    assert precision.resolve_amp("auto", "cpu") is want
    assert precision.resolve_amp("bf16", "cpu") is torch.bfloat16  # asked for explicitly: always
    assert precision.resolve_amp("none", "cpu") is None and precision.resolve_amp(None, "cpu") is None


def autocast_dtypes(monkeypatch, tmp_path, flags: set[str], **cfg) -> set:
    """The dtypes a toy run's training autocasts to on a CPU with ``flags`` (empty: fp32 throughout)."""
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    seen = set()
    real = torch.autocast

    def spy(*a, **k):
        seen.add(k.get("dtype"))
        return real(*a, **k)
    monkeypatch.setattr(torch, "autocast", spy)
    x, y = make_data(32)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    cfg = TrainConfig(model="toy", epochs=1, batch_size=8, out=str(tmp_path), num_threads=1, **cfg)
    fit(model, Classify(), {"train": ToyLoader(x, y, 8)}, cfg, meta={"num_classes": 4})
    return seen


@pytest.mark.parametrize("flags, want", [({"avx512f", "avx512_bf16"}, {torch.bfloat16}), ({"avx2"}, set())])
@pytest.mark.parametrize("amp", [{}, {"amp": "auto"}], ids=["default", "auto"])
def test_a_run_trains_in_bf16_by_default_where_the_cpu_has_it(monkeypatch, tmp_path, flags, want, amp):
    """TrainConfig's default amp is "auto" (benchmarks/results/amp_accuracy.md: the demo recipe holds its
    accuracy under bf16): a run autocasts to bf16 on a bf16 CPU and never enters autocast elsewhere."""
    assert TrainConfig().amp == "auto"
    assert autocast_dtypes(monkeypatch, tmp_path, flags, **amp) == want


def _step(model, x, y, dtype):
    model.zero_grad(set_to_none=True)
    with precision.autocast("cpu", dtype):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach().float(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_a_bf16_training_step_with_every_fast_path_matches_fp32(onednn_everywhere):
    """ViT with the oneDNN Linear and short_attention on (17 tokens): under CPU bf16 autocast the loss
    and every gradient match the fp32 step to bf16 precision (8 bits of mantissa)."""
    torch.manual_seed(0)
    model = create_model("vit_nano_patch2_8", num_classes=10, in_chans=1)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    with fast_linear(True):
        loss32, g32 = _step(model, x, y, None)
        loss16, g16 = _step(model, x, y, torch.bfloat16)
    assert loss16.dtype == torch.float32 and torch.isfinite(loss16)
    assert abs(loss16 - loss32) <= 2e-2 * abs(loss32), (loss16, loss32)
    for name, g in g32.items():
        assert g16[name].dtype == torch.float32, name  # master weights and their gradients stay fp32
        cos = torch.nn.functional.cosine_similarity(g16[name].flatten(), g.flatten(), dim=0)
        assert cos > 0.98 or g.abs().max() < 1e-6, (name, cos.item())
        assert (g16[name] - g).norm() <= 0.1 * g.norm() + 1e-6, name


def test_resume_is_bit_identical_under_bf16(tmp_path):
    x, y = make_data(32)
    xt, yt = make_data(16, seed=1)
    cfg = TrainConfig(model="toy", epochs=3, batch_size=8, lr=3e-3, warmup_epochs=1, ema_decay=0.9, amp="bf16",
                      mixup=0.4, log_every=2, seed=3, num_threads=1)

    def run(out, resume=False, stop_after=None):
        torch.manual_seed(7)
        model = create_model("vit_nano_patch2_8", num_classes=4, in_chans=1, drop_path_rate=0.1)
        loaders = {"train": ToyLoader(x, y, 8, seed=cfg.seed), "test": ToyLoader(xt, yt, 8, shuffle=False)}
        fit(model, Classify(mixup=0.4, num_classes=4), loaders, cfg.replace(out=str(out), resume=resume),
            meta={"num_classes": 4}, stop_after=stop_after)
        return model.state_dict()

    ref = run(tmp_path / "ref")
    run(tmp_path / "cut", stop_after=1)
    got = run(tmp_path / "cut", resume=True)
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    assert ckpt.load_run_weights(tmp_path / "ref", "ema").keys() == ckpt.load_run_weights(tmp_path / "cut", "ema").keys()
    for k, v in ckpt.load_run_weights(tmp_path / "ref", "ema").items():
        assert torch.equal(v, ckpt.load_run_weights(tmp_path / "cut", "ema")[k]), k
