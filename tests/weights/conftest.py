"""Interop tests: quiet, offline; the HF oracle as a fixture that skips with a reason."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # weights_helpers.py

# Quiet, and never on the network: every checkpoint here is written by the tests themselves.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


@pytest.fixture(scope="session")
def transformers():
    """HF transformers, the oracle (an optional extra: `pip install 'vitkit[hf]'`; `make test` installs it)."""
    tf = pytest.importorskip("transformers", reason="HF transformers (the oracle) is not installed: pip install 'vitkit[hf]'")
    tf.logging.set_verbosity_error()
    tf.utils.logging.disable_progress_bar()
    return tf
