"""Benchmarks are scripts, not tests: the suite only checks that they run (`--quick`)."""
import json

import pytest

pytest.importorskip("transformers", reason="the speed benchmark's peer is HF transformers")
pytestmark = pytest.mark.slow


def test_speed_benchmark_quick_runs_and_writes_results(tmp_path, load_benchmark):
    speed = load_benchmark("speed")
    results = speed.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "speed_quick.json").read_text())
    diffs = saved["models"][0]["max_abs_diff"]
    assert "hf" in diffs and all(d < 1e-4 for d in diffs.values())  # the peers really share the weights
    assert results["matmul_gflops"]["peak"] >= results["matmul_gflops"]["torch.mm"] > 0
    assert {"vitkit", "hf"} <= set(saved["models"][0]["train"])
    assert "vitkit / hf" in (tmp_path / "speed_quick.md").read_text()


def test_kernels_benchmark_quick_runs(tmp_path, load_benchmark):
    res = load_benchmark("kernels").main(["--quick", "--out", str(tmp_path)])
    assert res["gemm"][0]["oneDNN"] > 0 and res["attention"][0]["SDPA"] > 0
    assert "oneDNN / MKL" in (tmp_path / "kernels_quick.md").read_text()
