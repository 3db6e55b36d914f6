"""The committed benchmark reports are what their scripts make of the committed results (.json)."""
import json
from argparse import Namespace
from pathlib import Path

import pytest

import vitkit.bench.speed

RESULTS = Path(__file__).parent.parent / "benchmarks" / "results"

# the committed results files whose report is a function of the .json alone, and the script making it
# ("speed" is vitkit.bench.speed, which benchmarks/speed.py wraps)
REPORTS = {"speed": "speed", "speed_cuda": "speed", "speed_cuda_b256": "speed", "efficient": "efficient",
           "efficient_cuda": "efficient", "kernels": "kernels", "int8": "int8",
           "efficient_training": "efficient_training", "threads": "threads", "serve": "serve", "speed_zen4/speed": "speed",
           "amp_accuracy": "amp_accuracy", "demo_recipe": "demo_recipe",
           "deit_converged": "deit_converged", "small_data": "small_data"}


@pytest.mark.parametrize("stem", sorted(REPORTS))
def test_committed_reports_are_made_from_their_json(stem, load_benchmark):
    """Each committed .md is what its script's report function makes of the committed .json: nobody
    edited the numbers by hand, and the report code has not drifted from the file it documents."""
    data = json.loads((RESULTS / f"{stem}.json").read_text())
    if REPORTS[stem] == "speed":
        report = vitkit.bench.speed.report
    elif REPORTS[stem] == "efficient_training":  # its report also reads the command-line flags, kept in the json
        report = lambda d: load_benchmark("efficient_training").markdown(d, Namespace(**d["args"]))  # noqa: E731
    elif REPORTS[stem] == "small_data":  # the flags, kept in the json, and the picture's stem
        report = lambda d: load_benchmark("small_data").markdown(d, Namespace(**d["args"]), stem)  # noqa: E731
    else:
        report = load_benchmark(REPORTS[stem]).report
    assert report(data) == (RESULTS / f"{stem}.md").read_text()
