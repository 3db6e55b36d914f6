"""benchmarks/efficient.py: exponents and targets are computed from the numbers, and --quick runs end
to end (its FLOP and memory readers are vitkit.bench.measure's: tests/bench/test_measure.py)."""
import json
import math

import pytest
import torch

from vitkit.bench import measure


@pytest.fixture(scope="module")
def eff(load_benchmark):
    return load_benchmark("efficient")


def _fake(eff, lat_k: dict, swin_over_sparse50: float) -> dict:
    """A results dict whose fp32 latencies follow tokens^k exactly at the top sizes (and not at 224)."""
    sizes = [224, 512, 768, 1024]
    res = {"dtypes": ["fp32"], "rows": {k: eff.ROW[k]._asdict() for k in (*lat_k, "sparsevit_50")}, "by_size": {}}
    for s in sizes:
        tok = {k: (s // (16 if k in ("vit_s", "efficientvit_b1") else 4)) ** 2 for k in res["rows"]}
        lat = {k: 7.0 * tok[k] ** kk * (50.0 if s == 224 else 1.0) for k, kk in lat_k.items()}
        lat["sparsevit_50"] = lat["swin_t"] / swin_over_sparse50
        res["by_size"][str(s)] = {"tokens": tok, "gflop": {k: 2.0 * tok[k] for k in tok},
                                  "latency": {"fp32": {k: {"median_ms": v} for k, v in lat.items()}}}
    return res


def test_exponents_fit_the_top_sizes_and_targets_are_computed(eff):
    res = _fake(eff, {"vit_s": 1.7, "swin_t": 1.05, "efficientvit_b1": 1.2}, swin_over_sparse50=1.6)
    eff.summarize(res, fit_points=3)
    assert res["fit_sizes"] == ["512", "768", "1024"] and res["largest"] == "1024"
    exps = res["exponents"]["fp32"]
    assert exps["vit_s"]["latency"] == pytest.approx(1.7)          # 224 px (off the power law) is left out
    assert exps["swin_t"]["latency"] == pytest.approx(1.05)
    assert exps["vit_s"]["flops"] == pytest.approx(1.0)
    assert res["speedup"]["fp32"]["sparsevit_50"] == pytest.approx(1.6)
    met = [t["met"] for t in res["targets"]]
    assert met == [False, True, True, True]                          # EfficientViT 1.2 > 1.15
    assert res["targets"][0]["measured"] == pytest.approx(1.2)
    assert "512, 768, 1024 px" in res["targets"][0]["target"] and "1024 px" in res["targets"][3]["target"]
    res = _fake(eff, {"vit_s": 1.5, "swin_t": 1.2, "efficientvit_b1": 1.0}, swin_over_sparse50=1.4)
    eff.summarize(res, fit_points=3)
    assert [t["met"] for t in res["targets"]] == [True, False, False, False]
    eff.summarize(res, fit_points=4)                                 # 224 px in the fit now bends it
    assert res["fit_sizes"] == ["224", "512", "768", "1024"] and res["exponents"]["fp32"]["vit_s"]["latency"] < 1.0
    with pytest.raises(ValueError, match="two distinct token counts"):
        eff.fit_exponent([16.0], [1.0])


def test_targets_say_so_when_a_row_was_not_run(eff):
    res = _fake(eff, {"vit_s": 1.7, "swin_t": 1.0}, swin_over_sparse50=2.0)
    eff.summarize(res, fit_points=3)
    assert res["targets"][0]["met"] is None and res["targets"][0]["measured"] is None
    assert res["targets"][0]["target"].startswith("EfficientViT-B1 (fused) latency exponent")


@pytest.mark.slow
def test_quick_run_writes_md_json_png(eff, tmp_path):
    threads = torch.get_num_threads()
    res = eff.main(["--quick", "--threads", "1", "--out", str(tmp_path)])
    assert torch.get_num_threads() == threads                        # restored
    saved = json.loads((tmp_path / "efficient_quick.json").read_text())
    assert saved["sizes"] == [64, 96, 128] and saved["fit_sizes"] == ["64", "96", "128"]
    assert list(saved["rows"]) == [r.key for r in eff.ROWS] and saved["dtypes"] == ["fp32", "bf16"]
    assert saved["rows"]["efficientvit_b1"]["fused"] and not saved["rows"]["efficientvit_b1_unfused"]["fused"]
    for key in saved["rows"]:
        e = saved["exponents"]["fp32"][key]
        assert math.isfinite(e["latency"]) and 0.5 < e["flops"] < 2.5, key
    assert list(saved["exponents"]["bf16"]) == ["efficientvit_b1", "efficientvit_b1_unfused"]  # the --bf16 rows
    for s, m in saved["by_size"].items():
        assert all(m["finite"].values()) and len(m["finite"]) == 9 + 2
        assert m["sparse0_vs_swin_max_abs_diff"] < 1e-5, s          # same weights, the dense computation
        assert m["fused_vs_unfused_max_rel_diff"]["fp32"] < 1e-5, s  # same weights, BatchNorm folded
        assert m["fused_vs_unfused_max_rel_diff"]["bf16"] < 5e-2, s
        g = [m["gflop"][f"sparsevit_{p}"] for p in (0, 30, 50, 70)]
        assert g == sorted(g, reverse=True) and g[0] > g[-1], s       # pruning windows removes FLOPs
        assert m["gflop"]["vit_s"] > m["gflop"]["efficientvit_b1"] > 0
        assert m["gflop"]["efficientvit_b1"] == m["gflop"]["efficientvit_b1_unfused"]  # the same convs, counted
        for k in saved["rows"]:
            assert m["latency"]["fp32"][k]["median_ms"] > 0 and m["latency"]["fp32"][k]["n"] == 1
            assert m["alloc_mb"]["fp32"][k] is None or m["alloc_mb"]["fp32"][k] > 0
        bf16_rows = ["efficientvit_b1", "efficientvit_b1_unfused"]
        assert list(m["latency"]["bf16"]) == list(m["alloc_mb"]["bf16"]) == bf16_rows
    assert m["tokens"] == {"vit_s": 64, "swin_t": 1024, "pvt_tiny": 1024, "efficientvit_b1": 64,
                           "efficientvit_b1_unfused": 64, **{f"sparsevit_{p}": 1024 for p in (0, 30, 50, 70)}}
    assert [t["measured"] is not None for t in saved["targets"]] == [True] * 4
    assert saved["targets"][0]["target"].startswith("EfficientViT-B1 (fused) latency exponent")
    assert res["speedup"]["fp32"]["sparsevit_0"] > 0
    text = (tmp_path / "efficient_quick.md").read_text()
    assert "do not edit by hand" in text and "| SparseViT-Swin-T 50% |" in text and "k (latency)" in text
    assert "## Key figures" in text and "(fit over 64, 96, 128 px)" in text and "its FLOPs / Swin-T's" in text
    header = text.split("## Targets")[0]
    assert measure.environment()["machine"] in header                 # the host line: CPU family/model, ISA, cores
    assert "`model.fuse()`" in header and "torch.autocast" in header
    bf16 = text.split("## Latency, bf16")[1].split("##")[0]
    assert "| EfficientViT-B1 (fused) |" in bf16 and "| Swin-T |" not in bf16
    assert "EfficientViT-B1 unfused latency / fused latency: 64 px" in bf16
    assert "EfficientViT-B1 fused vs unfused with the same weights, fp32" in text
    assert (tmp_path / "efficient_quick.png").stat().st_size > 10_000
