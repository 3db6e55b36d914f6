"""Shared test settings: deterministic, quiet, small."""
import importlib.util
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("VITKIT_NO_PROGRESS", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark("speed")`` -> the script benchmarks/speed.py as a module (benchmarks are
    scripts, not a package)."""
    root = Path(__file__).resolve().parents[1]

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, root / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load

