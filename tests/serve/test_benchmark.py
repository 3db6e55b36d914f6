"""benchmarks/serve.py --quick: a load test on loopback with a tiny model (seconds), and its report."""
import json

import pytest

pytestmark = pytest.mark.slow


def test_serve_benchmark_quick(tmp_path, load_benchmark):
    res = load_benchmark("serve").main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "serve_quick.json").read_text())
    md = (tmp_path / "serve_quick.md").read_text()
    assert saved["command"].startswith("python benchmarks/serve.py") and "--quick" in saved["command"]
    assert saved["host"] in md and saved["command"] in md
    rows = [r for run in res["runs"] for r in run["rows"]]
    assert [run["batching"] for run in res["runs"]] == [True, False] and len(rows) == 4
    assert all(r["failed"] == 0 and r["lost"] == 0 and r["answered"] == r["requests"] for r in rows)
    assert all(r["img_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in rows)
    assert res["runs"][1]["rows"][-1]["mean_batch"] == 1.0  # batching off: one request per forward pass
    assert res["in_process"]["b32"]["img_per_s"] > 0 and res["verdicts"]["failed_or_lost"] == 0
    assert all(run["rss_mb"]["samples"] > 0 for run in res["runs"])
    for r in rows:  # the server's CPU by thread role: the model's threads and the decoding threads are named
        split = r["server_cpu_ms_per_img_by_role"]
        assert split["model"] > 0 and split["decode"] > 0
        tick = 10.0 / r["requests"]  # per-thread CPU comes in 10 ms clock ticks: one tick per image, in ms
        assert sum(split.values()) <= r["server_cpu_ms_per_img"] * 1.05 + 4 * tick  # 3 roles + the total
    for text in ("| batching | clients |", "Verdicts:", "Server memory", "in-process", "| model | decoding |"):
        assert text in md
