"""`vitkit serve` end to end: a server subprocess on a free loopback port, every endpoint, predict's numbers,
each bad input's 4xx (and a good request right after it), the limits, batching."""
from __future__ import annotations

import io
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow


def jpeg_bytes(size: int = 64, seed: int = 0) -> bytes:
    """A real JPEG (RGB noise) of ``size`` x ``size``."""
    import numpy as np
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def cli_probs(monkeypatch, argv: list[str]) -> list[torch.Tensor]:
    """The probabilities a `vitkit predict` / `vitkit zero-shot` command computes, one per image: the
    command runs as a user runs it, and the ``probs_of`` it hands to `rank_images` is recorded (the
    printed numbers are rounded to 0.1%)."""
    import importlib
    import inspect

    from vitkit.cli import main
    from vitkit.cli.common import rank_images as original
    seen: list[torch.Tensor] = []

    def spy(*args, **kwargs):
        bound = inspect.signature(original).bind(*args, **kwargs)
        probs_of = bound.arguments["probs_of"]

        def record(x):
            p = probs_of(x)
            seen.append(p.detach().float().clone())
            return p
        bound.arguments["probs_of"] = record
        return original(*bound.args, **bound.kwargs)
    for name in ("vitkit.cli.runs", "vitkit.cli.sample"):
        monkeypatch.setattr(importlib.import_module(name), "rank_images", spy)
    assert main(argv) == 0
    return seen


def predict_probs(monkeypatch, run_dir, path) -> torch.Tensor:
    return cli_probs(monkeypatch, ["predict", str(run_dir), str(path)])[0]


def all_probs(response, classes) -> torch.Tensor:
    out = torch.zeros(len(classes))
    for t in response["topk"]:
        assert t["label"] == classes[t["index"]]
        out[t["index"]] = t["prob"]
    return out


def assert_ok(server, image):
    r = server.post_image(image)
    assert r.status_code == 200, r.text
    return r.json()


def assert_error(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


# ---------------------------------------------------------------------------------------- endpoints
def test_start_line_health_model_and_openapi(classify_server, serve_runs):
    s = classify_server
    assert re.match(r"vitkit: serving vit_nano_patch2_8 .* on http://127\.0\.0\.1:\d+/", s.start_line)
    assert s.client.get("/healthz").json()["status"] == "ok"
    info = s.client.get("/v1/model").json()
    assert info["kind"] == "classifier" and info["input_size"] == [1, 8, 8]
    assert info["classes"] == [str(i) for i in range(10)] and info["precision"] == "fp32"
    assert info["limits"] == {"max_body_bytes": 1 << 20, "max_pixels": 1_000_000, "timeout_s": 30.0, "max_queue": 128}
    schema = s.client.get("/openapi.json").json()
    paths = schema["paths"]
    assert {"/v1/classify", "/v1/embed", "/v1/model", "/healthz"} <= set(paths)
    assert "/v1/zero-shot" not in paths  # a classifier has no zero-shot route
    body = paths["/v1/classify"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/*", "application/octet-stream"} <= set(body)
    assert {"400", "413", "415", "503"} <= set(paths["/v1/classify"]["post"]["responses"])
    assert s.client.get("/docs").status_code == 404  # Swagger UI would load from a CDN: not served


def test_classify_equals_predict(classify_server, serve_runs, images, capsys, monkeypatch):
    """The API's probabilities are `vitkit predict`'s to 1e-5, for a digit file and for an image that
    needs predict's conversions (RGB JPEG, another size)."""
    run = serve_runs("classify")["classify"]
    classes = [str(i) for i in range(10)]
    for path in (images(3), images(7, mode="RGB", size=20, fmt="jpg"), images(11, size=32)):
        got = classify_server.post_image(path, topk=10).json()
        assert torch.allclose(all_probs(got, classes), predict_probs(monkeypatch, run, path), atol=1e-5, rtol=0)
        # and the printed line of `vitkit predict` names the same classes with the same rounded numbers
        assert main_predict(run, path, capsys) == ", ".join(f"{t['label']} {t['prob']:.1%}" for t in got["topk"][:3])


def main_predict(run, path, capsys) -> str:
    """What `vitkit predict RUN IMAGE` prints for the image (its top-3 with rounded probabilities)."""
    from vitkit.cli import main
    capsys.readouterr()
    assert main(["predict", str(run), str(path)]) == 0
    return capsys.readouterr().out.strip().split(": ", 1)[1]


def test_raw_bytes_and_multipart_agree(classify_server, images):
    data = images(5).read_bytes()
    multipart = classify_server.post_image(data).json()
    for ctype in ("image/png", "application/octet-stream"):
        raw = classify_server.client.post("/v1/classify", content=data, headers={"content-type": ctype})
        assert raw.status_code == 200 and raw.json() == multipart
    assert len(multipart["topk"]) == 5 and multipart["rollout"] is None
    probs = [t["prob"] for t in multipart["topk"]]
    assert probs == sorted(probs, reverse=True)


def test_rollout_map(classify_server, images):
    r = classify_server.post_image(images(5), rollout="true").json()
    grid, m = r["rollout"]["grid"], r["rollout"]["map"]
    assert grid == [4, 4] and len(m) == 4 and all(len(row) == 4 for row in m)
    assert max(max(row) for row in m) == pytest.approx(1.0) and min(min(row) for row in m) >= 0


def test_embed_is_the_pooled_features(classify_server, serve_runs, images):
    from vitkit.data import load_image
    from vitkit.serve.model import input_transform
    from vitkit.train.run import load_run
    run = load_run(serve_runs("classify")["classify"])
    r = classify_server.post_image(images(2), route="/v1/embed").json()
    x = input_transform(None, None, None, run=run)(load_image(images(2), in_chans=1)[None])
    with torch.no_grad():
        want = run.model.forward_head(run.model.forward_features(x), pre_logits=True)[0]
    assert r["dim"] == want.numel() == 64  # vit_nano: width 64
    assert torch.allclose(torch.tensor(r["embedding"]), want, atol=1e-5)


def test_page_is_self_contained(classify_server):
    r = classify_server.client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert 'type="file"' in html and "/v1/classify" in html and 'id="top1"' in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing from another site
    assert "http://" not in html and "https://" not in html


# ---------------------------------------------------------------------------------------- bad input
def _png_bomb(side: int) -> bytes:
    """A 1-bit PNG of side x side pixels: a few kB that decode to side**2 pixels."""
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, "PNG")
    return buf.getvalue()


BAD = {  # name -> (body, content type, status)
    "not an image": (b"hello, this is text", "image/png", 400),
    "empty body": (b"", "image/png", 400),
    "truncated jpeg": (jpeg_bytes(64)[:600], "image/jpeg", 400),
    "truncated header": (jpeg_bytes(64)[:20], "image/jpeg", 400),
    "decompression bomb": (_png_bomb(1500), "image/png", 413),   # 2.25M pixels, limit 1M
    "over the body limit": (b"\xff" * ((1 << 20) + 1), "image/png", 413),
    "wrong content type": (b'{"image": "..."}', "application/json", 415),
    "form urlencoded": (b"file=abc", "application/x-www-form-urlencoded", 415),
    "no content type": (b"\x89PNG", None, 415),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_gets_its_4xx_and_the_next_request_succeeds(classify_server, images, name):
    body, ctype, status = BAD[name]
    good = assert_ok(classify_server, images(4))
    headers = {"content-type": ctype} if ctype else {}
    r = classify_server.client.post("/v1/classify", content=body, headers=headers)
    assert_error(r, status)
    assert assert_ok(classify_server, images(4)) == good
    assert classify_server.client.get("/healthz").status_code == 200


def test_bad_multipart_inputs(classify_server, images):
    s = classify_server
    good = assert_ok(s, images(4))
    msg = assert_error(s.client.post("/v1/classify", files={"other": (None, "text only")}), 400)
    assert "file" in msg
    assert_error(s.client.post("/v1/classify", files={"file": ("x.png", b"not an image", "image/png")}), 400)
    assert_error(s.client.post("/v1/classify", files={"file": ("x.png", b"", "image/png")}), 400)
    assert_error(s.client.post("/v1/classify", files={"file": ("x.png", _png_bomb(1500), "image/png")}), 413)
    assert_error(s.client.post("/v1/classify", files={"file": ("x.png", b"\0" * (1 << 20), "image/png")}), 413)
    assert_error(s.post_image(images(4), topk=0), 422)
    assert_error(s.post_image(images(4), route="/v1/zero-shot"), 404)  # a classifier has no zero-shot
    assert_error(s.client.get("/v1/classify"), 405)
    assert assert_ok(s, images(4)) == good


def test_body_over_the_limit_without_content_length(classify_server, images):
    """A chunked body (no Content-Length) is counted while it is read: 413 once it passes the limit."""
    def chunks():
        for _ in range(40):
            yield b"\0" * 65536  # 2.5 MiB in all, the limit is 1 MiB
    r = classify_server.client.post("/v1/classify", content=chunks(), headers={"content-type": "image/png"})
    assert "content-length" not in r.request.headers
    assert_error(r, 413)
    assert_ok(classify_server, images(4))


def test_a_slow_upload_does_not_block_others(classify_server, images):
    """While one client trickles its body in, other requests are answered."""
    data = images(6).read_bytes()
    done = threading.Event()

    def trickle():
        yield data[:10]
        done.wait(20)  # hold the request open until the other requests are answered
        yield data[10:]
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(classify_server.client.post, "/v1/classify", content=trickle(),
                           headers={"content-type": "image/png"})
        time.sleep(0.3)
        t = time.monotonic()
        for i in range(3):
            assert_ok(classify_server, images(i))
        assert time.monotonic() - t < 15
        done.set()
        assert slow.result(60).status_code == 200


# ---------------------------------------------------------------------------------------- batching
def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(start_server, serve_runs, images):
    server = start_server(serve_runs("classify")["classify"], "--max-batch", "8", "--max-wait-ms", "300")
    paths = [images(i) for i in range(16)]
    alone = {str(p): server.post_image(p, topk=10).json() for p in paths[:4]}  # one at a time first
    before = server.client.get("/v1/stats").json()["batcher"]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda p: server.post_image(p, topk=10), paths))
    assert all(r.status_code == 200 for r in answers)
    after = server.client.get("/v1/stats").json()["batcher"]
    batches = after["batches"] - before["batches"]
    assert after["jobs"] - before["jobs"] == 16 and batches < 16  # gathered into shared forward passes
    assert max(int(k) for k in after["batch_sizes"]) > 1 and max(int(k) for k in after["batch_sizes"]) <= 8
    classes = [str(i) for i in range(10)]
    for p, r in zip(paths[:4], answers[:4]):  # batched answers are each image's own (to float tolerance)
        assert torch.allclose(all_probs(r.json(), classes), all_probs(alone[str(p)], classes), atol=1e-5)


def test_no_batching_runs_one_request_per_pass(start_server, serve_runs, images):
    server = start_server(serve_runs("classify")["classify"], "--max-batch", "1")
    with ThreadPoolExecutor(6) as pool:
        assert all(r.status_code == 200 for r in pool.map(lambda i: server.post_image(images(i)), range(6)))
    assert set(server.client.get("/v1/stats").json()["batcher"]["batch_sizes"]) == {"1"}


# ---------------------------------------------------------------------------------------- limits
def test_full_queue_answers_503_with_retry_after(start_server, serve_runs, images):
    """Two requests admitted (--max-queue 2) and held by a long batching window; the rest get 503 at once."""
    server = start_server(serve_runs("classify")["classify"], "--max-queue", "2", "--max-batch", "64",
                          "--max-wait-ms", "2000")
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: server.post_image(images(i)), range(6)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 200, 503, 503, 503, 503], codes
    for r in answers:
        if r.status_code == 503:
            assert_error(r, 503)
            assert r.headers["retry-after"] == "1"
    stats = server.client.get("/v1/stats").json()
    assert stats["admission"]["rejected_busy"] == 4 and stats["inflight"] == 0
    assert_ok(server, images(0))


def test_request_timeout_is_504_and_the_server_goes_on(start_server, serve_runs, images):
    """A request alone waits for a second one (--max-batch 2 --max-wait-ms 4000) past its --timeout-s 0.5:
    504. Two requests together fill the batch and are answered; the timed-out job is never computed."""
    server = start_server(serve_runs("classify")["classify"], "--timeout-s", "0.5", "--max-batch", "2",
                          "--max-wait-ms", "4000")
    t = time.monotonic()
    msg = assert_error(server.post_image(images(0)), 504)
    assert "0.5 s" in msg and time.monotonic() - t < 3
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda i: server.post_image(images(i)), (1, 2)))
    assert [r.status_code for r in answers] == [200, 200]
    stats = server.client.get("/v1/stats").json()
    assert stats["requests"]["timeouts"] == 1 and stats["batcher"]["skipped_cancelled"] == 1
    assert stats["batcher"]["jobs"] == 2


# ---------------------------------------------------------------------------------------- other models
def test_clip_run_zero_shot_and_embed(start_server, serve_runs, images, monkeypatch):
    run = serve_runs("clip")["clip"]
    server = start_server(run)
    info = server.client.get("/v1/model").json()
    assert info["kind"] == "clip" and info["classes"] is None and info["endpoints"] == ["/v1/embed", "/v1/zero-shot"]
    labels = ["zero", "three", "seven"]
    r = server.post_image(images(3), route="/v1/zero-shot", labels=",".join(labels), rollout="true")
    assert r.status_code == 200, r.text
    got = {t["label"]: t["prob"] for t in r.json()["topk"]}
    assert set(got) == set(labels) and r.json()["rollout"]["grid"] == [4, 4]
    # labels as a form field instead of the query
    form = server.client.post("/v1/zero-shot", data={"labels": ",".join(labels)},
                              files={"file": ("x.png", images(3).read_bytes(), "image/png")})
    assert {t["label"]: t["prob"] for t in form.json()["topk"]} == got
    # what `vitkit zero-shot RUN IMAGE --labels ...` computes
    want = cli_probs(monkeypatch, ["zero-shot", str(run), str(images(3)), "--labels", ",".join(labels)])[0]
    assert torch.allclose(torch.tensor([got[k] for k in labels]), want, atol=1e-5)
    emb = server.post_image(images(3), route="/v1/embed").json()
    assert emb["dim"] == 32 and abs(sum(v * v for v in emb["embedding"]) - 1) < 1e-4  # normalised
    assert_error(server.post_image(images(3), route="/v1/zero-shot", labels="one"), 400)  # needs two labels
    assert_error(server.post_image(images(3)), 404)  # no /v1/classify for a CLIP


def test_checkpoint_folder(start_server, serve_runs, images, tmp_path):
    """A HF-layout checkpoint folder (what hf:ID resolves to) is served through vitkit.weights."""
    from vitkit.cli import main
    from vitkit.weights.load import from_checkpoint
    run = serve_runs("classify")["classify"]
    folder = tmp_path / "hf"
    assert main(["convert", str(run), str(folder), "--to", "hf"]) == 0
    server = start_server(folder, "--amp", "none")  # (a checkpoint's default is auto: bf16 on a bf16 CPU)
    info = server.client.get("/v1/model").json()
    assert info["kind"] == "classifier" and info["input_size"] == [1, 8, 8] and len(info["classes"]) == 10
    assert info["precision"] == "fp32"
    r = server.post_image(images(3), topk=10)
    assert r.status_code == 200
    from vitkit.data import load_image
    from vitkit.serve.model import input_transform
    model = from_checkpoint(folder).eval()
    pc = model.pretrained_cfg
    mean, std = (pc.mean, pc.std) if pc.mean else ((0.5,), (0.5,))
    x = input_transform((1, 8, 8), mean, std, pc.crop_pct, pc.interpolation)(load_image(images(3), in_chans=1)[None])
    with torch.no_grad():
        want = model(x).softmax(-1)[0]
    got = torch.zeros(10)
    for t in r.json()["topk"]:
        got[t["index"]] = t["prob"]
    assert torch.allclose(got, want, atol=1e-5)


def test_workers(start_server, serve_runs, images):
    server = start_server(serve_runs("classify")["classify"], "--workers", "2")
    assert "2 workers" in server.start_line
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: server.post_image(images(i % 4)), range(16)))
    assert all(r.status_code == 200 for r in answers)
    classes = [str(i) for i in range(10)]
    for i in range(4):  # every worker answers the same image the same way (to the float noise of batching)
        probs = [all_probs(r.json(), classes) for r in answers[i::4]]
        assert all(torch.allclose(p, probs[0], atol=1e-5) for p in probs)


def test_onnx_classify(start_server, serve_runs, images, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="--onnx needs the onnx extra")
    pytest.importorskip("onnxscript", reason="the export needs the onnx extra")
    from vitkit.cli import main
    run = serve_runs("classify")["classify"]
    graph = tmp_path / "m.onnx"
    assert main(["export", str(run), "--onnx", str(graph)]) == 0
    server = start_server(run, "--onnx", str(graph))
    info = server.client.get("/v1/model").json()
    assert info["backend"] == "onnxruntime" and "ONNX" in info["precision"]
    classes = [str(i) for i in range(10)]
    got = all_probs(server.post_image(images(3), topk=10).json(), classes)
    assert torch.allclose(got, predict_probs(monkeypatch, run, images(3)), atol=1e-4)
    assert server.post_image(images(3), route="/v1/embed").status_code == 200  # embed stays in PyTorch


def test_startup_errors_are_one_line(serve_runs, tmp_path):
    import subprocess
    import sys
    for argv, expect in (([str(tmp_path / "nothing")], "no run folder"),
                         ([str(serve_runs("classify")["classify"]), "--onnx", str(tmp_path / "missing.onnx")], "no such file")):
        p = subprocess.run([sys.executable, "-m", "vitkit.serve", *argv, "--port", "0"], capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == 1 and p.stderr.startswith("vitkit: error: ") and expect in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    p = subprocess.run([sys.executable, "-m", "vitkit.serve", "x", "--max-batch", "0"], capture_output=True, text=True)
    assert p.returncode == 2 and "--max-batch" in p.stderr


def test_wired_into_vitkit():
    from vitkit.cli import build_parser
    sub = build_parser()._subparsers._group_actions[0].choices
    if "serve" not in sub:
        pytest.skip("`vitkit serve` is not wired into vitkit.cli yet (add_arguments/cmd_serve of vitkit.cli.serve)")
    args = build_parser().parse_args(["serve", "runs/x", "--port", "0", "--max-batch", "4"])
    assert args.max_batch == 4 and args.host == "127.0.0.1"
