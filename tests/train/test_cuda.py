"""CUDA paths (autocast bf16/fp16 with the grad scaler, fused AdamW on GPU); skipped without a GPU."""
import pytest
import torch

from train_toys import ToyLoader, make_data, make_model
from vitkit.tasks import Classify
from vitkit.train import TrainConfig, fit
from vitkit.train import checkpoint as ckpt

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("amp", [None, "bf16", "fp16"])
def test_fit_on_cuda_learns_and_resumes(tmp_path, amp):
    x, y = make_data(128)
    xt, yt = make_data(64, seed=1)
    loaders = {"train": ToyLoader(x, y, 16), "test": ToyLoader(xt, yt, 32, shuffle=False)}
    cfg = TrainConfig(model="toy", epochs=3, batch_size=16, lr=1e-2, label_smoothing=0.0, amp=amp, ema_decay=0.9,
                      device="cuda", out=str(tmp_path))
    model = make_model()
    fit(model, Classify(), loaders, cfg, stop_after=2)
    assert next(model.parameters()).device.type == "cuda"
    model = make_model(seed=1)
    result = fit(model, Classify(), loaders, cfg.replace(resume=True))
    assert result["epoch"] == 3 and result["test_acc"] > 0.9, result
    weights = ckpt.load_weights_file(tmp_path / "model.safetensors")
    assert all(w.device.type == "cpu" and torch.isfinite(w).all() for w in weights.values())
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["scaler"] is not None or amp != "fp16"
