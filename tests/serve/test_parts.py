"""The server's parts in-process: decoding equals `load_image`, the batcher's gathering and delivery, and a
model that fails (500, one line, no traceback; the server keeps serving)."""
from __future__ import annotations

import asyncio
import io
import queue
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vitkit.data import load_image
from vitkit.serve.config import ServeConfig
from vitkit.serve.decode import RequestError, decode_image
from vitkit.serve.model import Job, ServedModel


def _image(mode: str, size=(13, 9), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgba = (rng.random((size[1], size[0], 4)) * 255).astype(np.uint8)
    img = Image.fromarray(rgba, "RGBA")
    if mode == "P+transparency":
        img = img.convert("RGB").convert("P")
        img.info["transparency"] = 3
        return img
    if mode == "I;16":
        return Image.fromarray((rng.random((size[1], size[0])) * 65535).astype(np.uint16))
    return img.convert(mode)


@pytest.mark.parametrize("mode,fmt", [("L", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("P", "PNG"),
                                      ("P+transparency", "PNG"), ("I;16", "PNG"), ("1", "PNG"), ("RGB", "JPEG"),
                                      ("L", "JPEG"), ("RGB", "BMP"), ("RGB", "WEBP"), ("P", "GIF")])
@pytest.mark.parametrize("in_chans", [None, 1, 3])
def test_decode_equals_load_image(tmp_path, mode, fmt, in_chans):
    """Bytes decoded by the server are the tensor `vitkit predict` reads from the same file."""
    path = tmp_path / f"x.{fmt.lower()}"
    img = _image(mode)
    img.save(path, fmt, **({"transparency": 3} if mode == "P+transparency" else {}))
    want = load_image(path, in_chans=in_chans)
    got = decode_image(path.read_bytes(), in_chans)
    assert got.dtype == torch.float32 and torch.equal(got, want)


def test_decode_applies_exif_orientation(tmp_path):
    img = _image("RGB", (20, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    path = tmp_path / "rot.jpg"
    img.save(path, "JPEG", exif=exif)
    got = decode_image(path.read_bytes(), 3)
    assert got.shape == (3, 20, 10) and torch.equal(got, load_image(path, in_chans=3))


def test_decode_errors():
    buf = io.BytesIO()
    _image("RGB", (64, 64)).save(buf, "JPEG")
    jpeg = buf.getvalue()
    for data, status in ((b"", 400), (b"text", 400), (jpeg[: len(jpeg) // 2], 400), (jpeg[:10], 400)):
        with pytest.raises(RequestError) as e:
            decode_image(data, 3)
        assert e.value.status == status and "\n" not in e.value.message
    big = io.BytesIO()
    Image.new("1", (3000, 3000)).save(big, "PNG")
    t = time.perf_counter()
    with pytest.raises(RequestError) as e:
        decode_image(big.getvalue(), 1, max_pixels=1_000_000)
    assert e.value.status == 413 and "9,000,000" in e.value.message
    assert time.perf_counter() - t < 0.5  # refused from the header, not decoded
    assert decode_image(big.getvalue(), 1, max_pixels=9_000_000).shape == (1, 3000, 3000)


# ---------------------------------------------------------------------------------------- batching
class Linear8(nn.Module):
    """A 'classifier' of 1x4x4 images whose logits are a fixed linear map: each row's answer is its own."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 3)
        self.calls: list[int] = []
        self.fail = False

    def forward(self, x):
        self.calls.append(len(x))
        if self.fail:
            raise RuntimeError("boom\n  File \"/secret/path.py\", line 1")
        return self.fc(x.flatten(1))

    def forward_features(self, x):
        return x.flatten(1)

    def forward_head(self, x, pre_logits=False):
        return x if pre_logits else self.fc(x)


def served_stub() -> ServedModel:
    return ServedModel("stub", "stub", "classifier", Linear8(), (1, 4, 4), (0.0,), (1.0,), ["a", "b", "c"])


def answers(batcher, jobs: list) -> list:
    """Submit every job before the worker gathers, stop the batcher, return the answers (exceptions as
    values)."""
    async def go():
        return await asyncio.gather(*[batcher.submit(j) for j in jobs], return_exceptions=True)
    try:
        return asyncio.run(go())
    finally:
        batcher.stop()


def expected_probs(served: ServedModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return served.model.fc(x.flatten()[None]).softmax(-1)[0]


def test_batcher_gathers_and_answers_each_job():
    from vitkit.serve.batcher import Batcher
    served = served_stub()
    batcher = Batcher(served, max_batch=4, max_wait_ms=200, max_queue=16).start()
    xs = [torch.randn(1, 4, 4) for _ in range(10)]
    results = answers(batcher, [Job(x, "classify") for x in xs])
    for x, r in zip(xs, results):
        assert torch.allclose(r["probs"], expected_probs(served, x), atol=1e-6)
    assert max(served.model.calls) <= 4 and sum(served.model.calls) == 10 and len(served.model.calls) <= 4


def test_batcher_waits_at_most_max_wait():
    from vitkit.serve.batcher import Batcher
    batcher = Batcher(served_stub(), max_batch=8, max_wait_ms=100, max_queue=2).start()

    async def go():
        t = time.perf_counter()
        r = await batcher.submit(Job(torch.zeros(1, 4, 4)))
        return r, time.perf_counter() - t
    try:
        r, seconds = asyncio.run(go())
    finally:
        batcher.stop()
    assert 0.09 < seconds < 5 and r["probs"].shape == (3,)


def test_batcher_queue_is_bounded():
    from vitkit.serve.batcher import Batcher
    batcher = Batcher(served_stub(), max_batch=8, max_wait_ms=100, max_queue=2)  # not started: nothing drains it

    async def flood():
        for _ in range(2):
            batcher.submit(Job(torch.zeros(1, 4, 4)))
        with pytest.raises(queue.Full):
            batcher.submit(Job(torch.zeros(1, 4, 4)))
    asyncio.run(flood())
    assert batcher.queue.qsize() == 2


def test_kinds_of_job_share_a_batch_in_separate_passes():
    served = served_stub()
    x = [torch.randn(1, 4, 4) for _ in range(3)]
    out = served.run([Job(x[0], "classify"), Job(x[1], "embed"), Job(x[2], "classify")])
    assert set(out[0]) == {"probs"} and set(out[1]) == {"embedding"} and set(out[2]) == {"probs"}
    assert torch.equal(out[1]["embedding"], x[1].flatten())
    assert served.model.calls == [2]  # one pass for both classify jobs


# ---------------------------------------------------------------------------------------- model errors
def test_model_error_is_a_500_without_traceback_and_the_server_goes_on():
    from starlette.testclient import TestClient

    from vitkit.serve.app import create_app
    served = served_stub()
    app = create_app(served, ServeConfig("stub", max_wait_ms=0))
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buf, "PNG")
    png = buf.getvalue()
    with TestClient(app, raise_server_exceptions=False) as client:
        ok = client.post("/v1/classify", content=png, headers={"content-type": "image/png"})
        assert ok.status_code == 200
        served.model.fail = True
        r = client.post("/v1/classify", content=png, headers={"content-type": "image/png"})
        assert r.status_code == 500 and set(r.json()) == {"error"}
        assert "\n" not in r.text and "Traceback" not in r.text and "secret" not in r.text and "boom" not in r.text
        assert "RuntimeError" in r.json()["error"]
        assert client.get("/healthz").status_code == 200
        served.model.fail = False
        again = client.post("/v1/classify", content=png, headers={"content-type": "image/png"})
        assert again.status_code == 200 and again.json() == ok.json()
        stats = client.get("/v1/stats").json()
        assert stats["requests"]["model_errors"] == 1 and stats["requests"]["ok"] == 2


def test_batcher_decodes_jobs_before_the_forward_pass():
    """Jobs that come as bytes (``Job.prepare``) are decoded by the batcher's threads, one torch thread
    each, before the batch runs; a job whose image fails gets that error alone, the others their answers."""
    import threading

    from vitkit.serve.batcher import Batcher
    served = served_stub()
    torch.set_num_threads(2)
    batcher = Batcher(served, max_batch=8, max_wait_ms=200, max_queue=16, decode_threads=2).start()
    xs = [torch.randn(1, 4, 4) for _ in range(4)]
    seen = []

    def make(x):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return x

    def bad():
        raise RequestError(400, "not an image")
    results = answers(batcher, [Job(None, prepare=lambda x=x: make(x)) for x in xs] + [Job(None, prepare=bad)])
    for x, r in zip(xs, results):
        assert torch.allclose(r["probs"], expected_probs(served, x), atol=1e-6)
    assert isinstance(results[-1], RequestError) and results[-1].status == 400
    assert served.model.calls == [4] and batcher.stats()["decode_failed"] == 1
    assert all(name.startswith("vitkit-decode") and n == 1 for name, n in seen)
    assert batcher.threads == 2
    later = []  # the decoding threads' one thread is their own: a thread started now gets the default
    t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert later == [2] and torch.get_num_threads() == 2
