"""`vitkit export --onnx`: the ONNX graph computes the PyTorch model's logits at any batch size."""
import pytest
import torch

import vitkit

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
from vitkit.export.onnx import export_onnx, max_abs_diff, onnx_session  # noqa: E402


@pytest.mark.parametrize("name", ["vit_nano_patch4_28", "swin_nano_patch2_window4_28"])
def test_onnx_export_matches_pytorch_at_several_batch_sizes(tmp_path, name):
    torch.manual_seed(0)
    model = vitkit.create_model(name).eval()
    session = onnx_session(export_onnx(model, tmp_path / "m.onnx"))
    for batch in (1, 3, 7, 64):  # the batch axis is dynamic: none of these is the traced batch (2)
        assert max_abs_diff(model, session, torch.randn(batch, *model.input_size)) <= 1e-4


def test_onnx_export_of_a_trained_run_from_the_cli(tmp_path):
    from vitkit.cli import main
    from vitkit.train import TrainConfig, fit
    from vitkit.train.run import build_run
    cfg = TrainConfig(model="vit_nano_patch4_28", data="digits", epochs=1, batch_size=64, img_size=28,
                      out=str(tmp_path / "run"), num_threads=1)
    model, task, loaders, bundle, meta = build_run(cfg)
    fit(model, task, loaders, cfg, meta)
    assert main(["export", str(tmp_path / "run"), "--onnx", str(tmp_path / "m.onnx")]) == 0
    import onnxruntime as ort
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(5, *model.input_size)
    got = sess.run(["logits"], {"pixel_values": x.numpy()})[0]
    with torch.no_grad():
        assert abs(torch.from_numpy(got) - model.eval()(x)).max() <= 1e-4
    # --int8: ONNX Runtime's dynamic int8 weights, the same function up to int8 rounding
    assert main(["export", str(tmp_path / "run"), "--onnx", str(tmp_path / "m8.onnx"), "--int8"]) == 0
    assert not (tmp_path / "m8.fp32.onnx").exists()  # the fp32 intermediate is removed
    sess8 = ort.InferenceSession(str(tmp_path / "m8.onnx"), providers=["CPUExecutionProvider"])
    got8 = torch.from_numpy(sess8.run(["logits"], {"pixel_values": x.numpy()})[0])
    assert (got8 - torch.from_numpy(got)).abs().max() < 0.1 * torch.from_numpy(got).abs().max()
    assert (tmp_path / "m8.onnx").stat().st_size < 0.6 * (tmp_path / "m.onnx").stat().st_size
