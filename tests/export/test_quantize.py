import torch

import vitkit
from vitkit.export import quantize_int8
from vitkit.layers import Linear


def test_int8_replaces_every_linear_and_stays_close():
    torch.manual_seed(0)
    m = vitkit.create_model("vit_nano_patch4_28").eval()
    q = quantize_int8(m)
    assert not any(isinstance(x, torch.nn.Linear) for x in q.modules())
    assert any(type(x) is Linear for x in m.modules())  # the original (vitkit's oneDNN Linear) is untouched
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        a, b = m(x), q(x)
    assert (a - b).abs().max() < 0.1 * a.abs().max()  # int8 rounding, not a different function


def test_int8_benchmark_quick_runs(tmp_path, load_benchmark):
    res = load_benchmark("int8").main(["--quick", "--out", str(tmp_path)])
    assert res["speed"]["torch int8"]["img_per_s"] > 0 and (tmp_path / "int8_quick.md").is_file()
    assert "onnx int8" in res["speed"]  # the ONNX Runtime int8 path ran too
