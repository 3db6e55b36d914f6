"""`vitkit serve` test fixtures: tiny trained runs, image files, and servers in subprocesses on loopback.

    runs = serve_runs("classify", "clip")              # run folders, trained once per test process
    server = start_server(runs["classify"], "--max-queue", "2")   # `python -m vitkit.serve` on a free port
    server.client.post("/v1/classify", ...)            # an httpx.Client bound to it

The runs are those of tests/cli/conftest.py (one epoch on scikit-learn's 8x8 digits with a 0.14M ViT),
written by the CLI itself. Each server is a real process started with ``--port 0`` (the OS picks a free
port on 127.0.0.1; the start line names it); it is stopped (SIGTERM, then SIGKILL) when its test, or
the session for the shared one, ends.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitkit.cli import main

# fp32 runs: the tests compare the server's numbers with fp32 references at 1e-5 (a run's default, amp "auto",
# is bf16 on a bf16 CPU; the "page" run below keeps the default, so a bf16 run is served too)
BASE = ["--data", "digits", "--epochs", "1", "--batch-size", "64", "--threads", "1", "--no-report", "--amp", "none"]
VIT = ["--model", "vit_nano_patch2_8", *BASE]
RECIPES = {
    "classify": ["train", *VIT],
    # the page's screenshot: a run that has learned something (85% held-out top-1, ~30 s)
    "page": ["train", "--model", "vit_nano_patch2_8", "--data", "digits", "--epochs", "8", "--batch-size", "32",
             "--lr", "3e-3", "--threads", "1", "--no-report"],
    "clip": ["pretrain", "--task", "clip", *VIT, "--set", "task_args.embed_dim=32",
             "--set", "task_args.text_args.width=32", "--set", "task_args.text_args.depth=1"],
}
START_TIMEOUT_S = 180  # a busy 2-core machine imports torch + FastAPI and loads the model slowly


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_runs")
    built: dict[str, Path] = {}

    def build(*kinds: str) -> dict[str, Path]:
        for kind in kinds:
            if kind not in built:
                out = root / kind
                assert main([*RECIPES[kind], "--out", str(out)]) == 0, kind
                built[kind] = out
        return {k: built[k] for k in kinds}
    return build


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """Image files of held-out digits: ``images(i, mode="L", size=8, fmt="png")`` -> path (cached)."""
    from vitkit.data import build
    test = build("digits").test
    root = tmp_path_factory.mktemp("serve_images")

    def write(index: int = 0, mode: str = "L", size: int = 8, fmt: str = "png") -> Path:
        path = root / f"digit{index}_{mode}_{size}.{fmt}"
        if not path.exists():
            x, _ = test[index]
            img = Image.fromarray((x[0].numpy() * 255).round().astype(np.uint8))
            img.resize((size, size), Image.NEAREST).convert(mode).save(path)
        return path
    return write


class Server:
    """A `python -m vitkit.serve` process on 127.0.0.1 and an httpx client for it."""

    def __init__(self, source: str | Path, *flags: str, env: dict | None = None):
        import httpx
        self.argv = [sys.executable, "-m", "vitkit.serve", str(source), "--host", "127.0.0.1", "--port", "0",
                     "--threads", "1", *flags]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.stderr: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        line = self._start_line()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, f"no address in the start line {line!r}"
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_line = line
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep the pipe drained
        self.client = httpx.Client(base_url=self.url, timeout=60)
        self._wait_healthy()

    def _drain_stderr(self):
        for line in self.proc.stderr:
            self.stderr.append(line)

    def _start_line(self) -> str:
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        if not box or not box[0]:
            self.stop()
            raise AssertionError(f"the server did not start: {''.join(self.stderr)[-2000:]}")
        return box[0]

    def _wait_healthy(self):
        import httpx
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if self.client.get("/healthz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the server never answered /healthz: {''.join(self.stderr)[-2000:]}")

    def post_image(self, path_or_bytes, route: str = "/v1/classify", **params):
        data = Path(path_or_bytes).read_bytes() if isinstance(path_or_bytes, (str, Path)) else path_or_bytes
        return self.client.post(route, params=params, files={"file": ("image.png", data, "image/png")})

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if hasattr(self, "client"):
            self.client.close()


@pytest.fixture
def start_server():
    """``start_server(source, *flags)`` -> a running `Server`, stopped after the test."""
    servers: list[Server] = []

    def start(source, *flags, env=None) -> Server:
        servers.append(Server(source, *flags, env=env))
        return servers[-1]
    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def classify_server(serve_runs):
    """The shared server of the classify run, with small limits so the bad-input tests stay small."""
    server = Server(serve_runs("classify")["classify"], "--max-body-mb", "1", "--max-pixels", "1000000")
    yield server
    server.stop()
