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
    model, task, loaders, _, meta = build_run(cfg)
    fit(model, task, loaders, cfg, meta)
    return out


def _predicted_ms(table: dict, sparsity) -> float:
    """A config's latency from the measured table, computed here: base + one entry per pair of blocks."""
    return table["base_ms"] + sum(row[table["choices"].index(s)] for row, s in zip(table["pair_ms"], sparsity))


def test_search_prints_the_pareto_front_and_respects_the_budget(swin_run, tmp_path, capsys):
    args = ["sparsevit-search", "--run", str(swin_run), "--samples", "8", "--choices", "0,0.5", "--repeats", "3"]
    assert main(args + ["--latency-budget", "1e9", "--json", str(tmp_path / "all.json")]) == 0
    every = json.loads((tmp_path / "all.json").read_text())
    assert len(every["rows"]) == 8                                  # 2 choices ^ 3 stages, none over budget
    for r in every["rows"]:
        assert r["latency_ms"] == pytest.approx(_predicted_ms(every["table"], r["sparsity"]))
    # a budget between the fastest and the slowest config, on the same latency table (--table: a second
    # measurement could come out faster or slower on a busy machine): the slow ones are rejected, never scored
    lat = sorted(r["latency_ms"] for r in every["rows"])
    budget = (lat[0] + lat[-1]) / 2
    capsys.readouterr()
    assert main(args + ["--latency-budget", str(budget), "--json", str(tmp_path / "s.json"),
                        "--table", str(tmp_path / "all.json")]) == 0
    text = capsys.readouterr().out
    assert "sparsity per stage" in text and "best:" in text and "dense:" in text
    saved = json.loads((tmp_path / "s.json").read_text())
    kept = {tuple(r["sparsity"]) for r in saved["rows"]}
    over = {tuple(r["sparsity"]) for r in every["rows"] if _predicted_ms(saved["table"], r["sparsity"]) > budget}
    assert kept and over and not kept & over
    faster = [r for r in saved["rows"] if r["latency_ms"] < saved["dense_ms"]]  # "best" must beat dense
    if faster:
        best = max(faster, key=lambda r: (r["score"], -r["latency_ms"]))
        assert list(best["sparsity"]) == saved["best"]
    else:
        assert saved["best"] is None and "best: none" in text
    assert saved["table"] == every["table"]
    capsys.readouterr()  # a table of other choices is refused with a one-line error
    assert main(args + ["--latency-budget", "1e9", "--table", str(tmp_path / "all.json"), "--choices", "0,0.3"]) == 1
    assert "differ from the table's" in capsys.readouterr().err


def test_an_impossible_budget_is_a_clear_error(swin_run, capsys):
    assert main(["sparsevit-search", "--run", str(swin_run), "--latency-budget", "0.0001", "--samples", "2",
                 "--choices", "0,0.5", "--repeats", "1"]) == 1
    assert "budget" in capsys.readouterr().err


@pytest.mark.parametrize("content", [
    "[1, 2]", '{"pair_ms": [[1.0]], "pairs_per_stage": [1], "choices": [0.0]}', "not json",
    '{"base_ms": 1, "pairs_per_stage": [1, 1], "pair_ms": [[1.0], [1.0, 2.0]], "choices": [0.0, 0.5]}',
    '{"base_ms": 1, "stage_ms": [[1.0, 2.0]], "choices": [0.0, 0.5]}'])
def test_a_broken_table_file_is_a_one_line_error(swin_run, tmp_path, capsys, content):
    bad = tmp_path / "t.json"
    bad.write_text(content)  # a list, a table without base_ms, not JSON, a short row, an old per-stage table
    assert main(["sparsevit-search", "--run", str(swin_run), "--latency-budget", "1", "--table", str(bad)]) == 1
    assert "not a latency table written by --json" in capsys.readouterr().err
