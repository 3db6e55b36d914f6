"""`vitkit sparsevit-search`: a latency-budgeted search on a trained Swin run prints its Pareto table."""
import json

import pytest

from vitkit.cli import main


@pytest.fixture(scope="module")
def swin_run(tmp_path_factory):
    from vitkit.train import TrainConfig, fit
    from vitkit.train.run import build_run
    out = tmp_path_factory.mktemp("swin") / "run"
    cfg = TrainConfig(model="swin_nano_patch2_window4_28", data="digits", epochs=1, batch_size=64, img_size=28,
                      out=str(out), num_threads=1)
    fit(*build_run(cfg)[:3], cfg, build_run(cfg)[4])
    return out


def test_search_prints_the_pareto_front_and_respects_the_budget(swin_run, tmp_path, capsys):
    assert main(["sparsevit-search", "--run", str(swin_run), "--latency-budget", "1000", "--samples", "4",
                 "--choices", "0,0.5", "--repeats", "1", "--json", str(tmp_path / "s.json")]) == 0
    text = capsys.readouterr().out
    assert "sparsity per stage" in text and "best:" in text and "dense:" in text
    saved = json.loads((tmp_path / "s.json").read_text())
    assert len(saved["rows"]) == 4 and all(r["latency_ms"] <= 1000 for r in saved["rows"])
    assert any(r["pareto"] for r in saved["rows"])
    assert len(saved["table"]["stage_ms"]) == len(saved["best"])


def test_an_impossible_budget_is_a_clear_error(swin_run, capsys):
    assert main(["sparsevit-search", "--run", str(swin_run), "--latency-budget", "0.0001", "--samples", "2",
                 "--choices", "0,0.5", "--repeats", "1"]) == 1
    assert "budget" in capsys.readouterr().err
