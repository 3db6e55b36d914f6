"""Interop tests: quiet, offline; the HF oracle as a fixture that skips with a reason."""
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # weights_helpers.py

# Quiet, and never on the network: every checkpoint here is written by the tests themselves.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


@pytest.fixture(scope="session")
def transformers():
    """HF transformers, the oracle (an optional extra: `pip install 'vitkit[hf]'`; `make test` installs it)."""
    tf = pytest.importorskip("transformers",
                             reason="HF transformers (the oracle) is not installed: pip install 'vitkit[hf]'")
    tf.logging.set_verbosity_error()
    tf.utils.logging.disable_progress_bar()
    return tf


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one thread is fastest, and steady on a CPU shared with other jobs
    (two threads waiting on each other under load took 40x longer)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A stand-in hub on 127.0.0.1 (hub_server.StandInHub), HF_ENDPOINT pointed at it, an empty cache,
    online. Tests add repositories with ``hub.add_repo`` / ``hub.add_folder``."""
    from hub_server import StandInHub
    with StandInHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        yield server
