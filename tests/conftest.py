"""Shared test settings: deterministic, quiet, small."""
import importlib.util
import os
import shutil
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


@pytest.fixture
def browser(tmp_path):
    """Headless Debian Chromium driven by selenium through Debian's chromedriver (`make test` installs both;
    nothing is downloaded), with the flags a closed network needs; skips with the reason when missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").is_file() else shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("the browser tests need Debian's chromium and chromium-driver (apt-get install -y chromium "
                    "chromium-driver; `make test` installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium (pip install selenium)")
    from selenium.webdriver.chrome.service import Service
    os.environ["SE_OFFLINE"] = "true"  # selenium never fetches a driver or a browser
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--allow-file-access-from-files", f"--user-data-dir={tmp_path / 'profile'}",
                 "--window-size=900,700"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
