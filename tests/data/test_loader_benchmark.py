"""benchmarks/loader.py: the --quick run writes its report, the verdicts follow from the numbers, and the
committed report is what the script makes of the committed results."""
import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def test_quick_run_writes_a_report_whose_verdicts_follow_from_the_numbers(tmp_path, load_benchmark):
    bench = load_benchmark("loader")
    res = bench.main(["--quick", "--out", str(tmp_path)])
    md = (tmp_path / "loader_quick.md").read_text()
    assert "`python benchmarks/loader.py --quick`" in md and "do not edit by hand" in md
    assert "load averages" in md and res["host"]["vendor"] in md and "avx512_bf16" in md
    p = res["photos"]
    assert sum(p["kinds"].values()) == p["images"] == 16 and all(c > 0 for c in p["kinds"].values())
    assert set(res["loader"]) == {"train", "eval"} and set(res["loader"]["train"]) == {"0", "1"}
    assert all(v["median"] > 0 for pipe in res["loader"].values() for v in pipe.values())
    for v in res["verdicts"]:
        m = next(t for t in res["training"] if t["model"] == v["model"])
        assert v["training"] == m["img_per_s"] and v["loader"] == res["loader"]["train"][str(v["workers"])]["median"]
        assert v["keeps_up"] == (v["loader"] >= m["img_per_s"])
        assert ("yes:" if v["keeps_up"] else "**no**:") in md
    assert json.loads((tmp_path / "loader_quick.json").read_text())["verdicts"] == res["verdicts"]
    assert bench.report(json.loads((tmp_path / "loader_quick.json").read_text())) == md


def test_photos_are_seeded_and_of_every_kind(tmp_path, load_benchmark):
    bench = load_benchmark("loader")
    a = bench.make_photos(tmp_path / "a", 20, (30, 60), seed=3)
    b = bench.make_photos(tmp_path / "b", 20, (30, 60), seed=3)
    assert a == b and a["kinds"] == {"RGB JPEG": 14, "grayscale PNG": 3, "RGBA PNG": 3}
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.*"))
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_committed_report_is_made_from_its_json(load_benchmark):
    if not (RESULTS / "loader.json").exists():
        pytest.skip("benchmarks/results/loader.json not written yet")
    data = json.loads((RESULTS / "loader.json").read_text())
    assert load_benchmark("loader").report(data) == (RESULTS / "loader.md").read_text()
