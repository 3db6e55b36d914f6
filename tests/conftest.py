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


@pytest.fixture
def sdpa_path(monkeypatch):
    """Make ``attend`` take the SDPA path at any length (on the CPU, short sequences take the explicit
    path, so a small test would otherwise compare the explicit path with itself)."""
    import vitkit.layers.attention
    monkeypatch.setattr(vitkit.layers.attention, "SMALL_ATTENTION", 0)


@pytest.fixture
def onednn_everywhere(monkeypatch):
    """Make vitkit's Linear take the oneDNN path at any size (small calls take F.linear, so a small
    test would otherwise compare F.linear with itself)."""
    import vitkit.layers.linear
    if not vitkit.layers.linear.fast_linear_enabled():
        pytest.skip("this PyTorch build has no oneDNN")
    monkeypatch.setattr(vitkit.layers.linear, "MIN_MACS", 0)


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
