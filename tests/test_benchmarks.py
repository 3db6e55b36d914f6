"""Benchmarks are scripts, not tests: the suite only checks that they run (`--quick`)."""
import json

import pytest
import torch

import vitkit.hardware
import vitkit.layers.linear
import vitkit.train.precision

pytest.importorskip("transformers", reason="the speed benchmark's peer is HF transformers")
pytestmark = pytest.mark.slow


def test_speed_benchmark_quick_runs_and_writes_results(tmp_path, load_benchmark):
    speed = load_benchmark("speed")
    results = speed.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "speed_quick.json").read_text())
    assert saved["command"] == "vitkit bench --quick"   # the report names the command that made it
    diffs = saved["models"][0]["max_abs_diff"]
    assert "hf" in diffs and all(d < 1e-4 for d in diffs.values())  # the peers really share the weights
    peak = results["matmul_gflops"]
    assert peak["torch.mm"] > 0 and ("onednn" in peak) == vitkit.layers.linear._AVAILABLE
    assert {"vitkit", "hf"} <= set(saved["models"][0]["train"])
    md = (tmp_path / "speed_quick.md").read_text()
    assert "vitkit / hf" in md and f"Host: **{saved['machine']}**" in md  # the host in the header
    assert saved["host"]["isa"] == vitkit.hardware.host()["isa"]
    m = saved["models"][0]
    assert "onnxruntime int8" in m["infer_b4"] or "onnxruntime" not in m["infer_b4"]
    if vitkit.train.precision.resolve_amp("auto", "cpu") is torch.bfloat16:  # vitkit's default here: bf16 rows
        assert saved["precisions"] == ["fp32", "bf16"] and saved["default_precision"] == "bf16"
        for run in ("infer_b1", "infer_b4", "train"):
            assert {"vitkit bf16", "hf bf16"} <= set(m[run])
        assert "vitkit bf16 / hf bf16" in md and "## Out of the box" in md and "## bf16 autocast" in md
        assert {"vitkit bf16", "hf bf16"} <= set(m["max_abs_diff_vs_fp32"])
        assert all(d < 0.1 for d in m["max_abs_diff_vs_fp32"].values())  # bf16 and int8 stay near fp32


def test_kernels_benchmark_quick_runs(tmp_path, load_benchmark):
    threads = torch.get_num_threads()
    res = load_benchmark("kernels").main(["--quick", "--threads", "1", "--clock", "cpu", "--out", str(tmp_path)])
    md = (tmp_path / "kernels_quick.md").read_text()
    assert res["clock"] == "cpu" and res["threads"] == 1 and "CPU time" in md
    assert torch.get_num_threads() == threads                  # the process's threads are left as found
    for section, heading in (("gemm", "## GEMM"), ("backward", "## Backward GEMMs"), ("prepacked", "## Prepacked"),
                             ("attention", "## Attention")):
        assert res[section] and all(v > 0 for r in res[section] for k, v in r.items() if k != "shape")
        assert heading in md
    assert {"dW: oneDNN, in place", "dx: oneDNN, in place"} <= set(res["backward"][0])
    assert {"SDPA", "explicit", "short_attention"} <= set(res["attention"][0])
    assert {"SDPA", "explicit"} <= set(res["biased_attention"][0]) and "## Attention with a bias" in md
    step = res["demo_step"]
    assert step["split heads (attend)"] > 0 and step["short_attention"] > 0 and "## Training step of" in md
    parts = res["breakdown"]  # every timed part ran, and the parts add up to no more than the step
    assert all(parts[k] > 0 for k in ("Linear forward", "Linear dW", "Linear dx + db", "attention forward",
                                      "attention backward", "everything else"))
    assert "## Where a training step" in md and "## Copying a matrix transposed" in md
    assert all(r["transposed copy"] > 0 and r["plain copy"] > 0 for r in res["transposes"])
    assert "## Softmax of attention scores" in md and all(
        r["last dim"] > 0 and r["dim 1, transposed"] > 0 for r in res["softmax"])
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():  # the bf16 sections (issue 19)
        for section, heading in (("bf16_gemm", "## bf16: GEMM"), ("bf16_backward", "## bf16: backward"),
                                 ("bf16_attention_infer", "## bf16: attention"),
                                 ("bf16_layer_norm", "## bf16: the LayerNorm")):
            assert res[section] and all(v > 0 for r in res[section] for k, v in r.items() if k != "shape"), section
            assert heading in md
        assert {"SDPA bf16", "short S^T bf16", "short S bf16", "short fp32"} <= set(res["bf16_attention_train"][0])
        assert [r["op"] for r in res["bf16_post_ops"]] == ["fc1 + GELU", "GEMM + residual"]
        assert res["bf16_block"]["train: vitkit bf16"] > 0 and "## bf16: one transformer block" in md
        assert all(v > 0 for k, v in res["bf16_models"][0].items() if k.startswith(("train", "infer")))


def test_threads_benchmark_quick_runs_and_restores_mkl(tmp_path, load_benchmark):
    threads = load_benchmark("threads")
    lib = threads.mkl_library()
    if lib is None:
        pytest.skip("this PyTorch build does not export MKL's MKL_Set_Dynamic")
    before = lib.mkl_serv_get_dynamic()
    res = threads.main(["--quick", "--out", str(tmp_path)])
    assert lib.mkl_serv_get_dynamic() == before  # the process's MKL is left as it was found
    assert set(res["ms_per_step"]) == {f"{i} | {m}" for i in ("vitkit", "hf") for m in threads.MODES}
    assert all(v["median"] > 0 for v in res["ms_per_step"].values())
    md = (tmp_path / "threads_quick.md").read_text()
    assert "hf / vitkit" in md and "python benchmarks/threads.py --quick" in md


def test_amp_accuracy_benchmark_quick_runs(tmp_path, load_benchmark):
    """The demo config in fp32 and bf16 (1 epoch): both runs train, and the verdict is computed from them."""
    data = load_benchmark("amp_accuracy").main(["--quick", "--work", str(tmp_path / "runs"), "--out", str(tmp_path)])
    rows = data["summary"]["rows"]
    assert set(rows) == {"none", "bf16"}
    for amp in rows:  # each run really trained in its precision, from the demo's config
        saved = json.loads((tmp_path / "runs" / f"{amp}_s0" / "config.json").read_text())
        assert saved["amp"] == amp and saved["model"] == "vit_mnist_patch7_28" and saved["epochs"] == 1
        assert 10.0 < rows[amp]["acc"][0] <= 100.0   # one epoch beats chance on the digits
    diff = rows["bf16"]["acc"][0] - rows["none"]["acc"][0]
    assert data["summary"]["diff_points"] == pytest.approx(diff)
    assert data["summary"]["holds"] == (diff >= -0.3 - 1e-6)  # what bf16 costs: a gain is no cost
    md = (tmp_path / "amp_accuracy_quick.md").read_text()
    assert md == load_benchmark("amp_accuracy").report(json.loads((tmp_path / "amp_accuracy_quick.json").read_text()))
    assert "family" in md and ("holds" in md)
