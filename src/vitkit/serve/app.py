"""The HTTP API (FastAPI on Starlette, run by uvicorn) and the page at ``/``.

    app = create_app(served, config)        # a FastAPI app; `vitkit.serve.server.serve` runs it

Routes (the OpenAPI schema at ``/openapi.json`` describes them):
    POST /v1/classify     one image (multipart field ``file``, or the raw bytes with an image/* or
                          application/octet-stream content type) -> top-k labels with probabilities;
                          ``?rollout=true`` adds the attention rollout map (models with attention maps)
    POST /v1/embed        one image -> its pooled features (a CLIP: the normalised image embedding)
    POST /v1/zero-shot    CLIP models: one image + ``labels=a,b,c`` (query or form field) -> probabilities
    GET  /v1/model        name, kind, input size, classes, precision, limits
    GET  /v1/stats        requests, batches and their sizes, rejections (what the load test reads)
    GET  /healthz         200 while the model worker runs
    GET  /                the page: drop an image, see the top-5 and the rollout (no build step, no CDN)

Every error is a one-line JSON body ``{"error": "..."}`` with a 4xx status for what the client
can fix (400 unreadable or empty image, 413 body or image too large, 415 wrong content type,
422 bad parameter), 503 + Retry-After when the server is full, 504 past the request timeout, and
500 for a model failure (its traceback goes to the server's log, never into the body).

Limits are enforced before the work they protect: the admission count and the Content-Length check
run before a body is read (`Guard`, a plain ASGI middleware), the byte count while it is read, the
pixel count before an image is decoded (`decode.decode_image`), and the queue is bounded (`Batcher`).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import queue
import time

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batcher import Batcher
from .config import ServeConfig
from .decode import RequestError, decode_image
from .model import Job, ServedModel

log = logging.getLogger("vitkit.serve")

RAW_TYPES = ("application/octet-stream",)
RETRY_AFTER_S = 1


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": _one_line(message)}, status_code=status, headers=headers)


# ---------------------------------------------------------------------------------------- limits
class Guard:
    """ASGI middleware for the POST routes: admission (at most ``max_inflight`` requests at once, 503
    with Retry-After beyond), the body size limit (413 from Content-Length before reading, or while
    reading a body sent without one), and counts for /v1/stats."""

    def __init__(self, app, max_inflight: int, max_body: int):
        self.app = app
        self.max_inflight = max_inflight
        self.max_body = max_body
        self.inflight = 0
        self.counts = {"admitted": 0, "rejected_busy": 0, "rejected_too_large": 0}

    async def _send_error(self, send, status: int, message: str, headers: dict | None = None) -> None:
        response = error(status, message, headers)
        await response({"type": "http"}, None, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            self.counts["rejected_too_large"] += 1
            return await self._send_error(send, 413, f"the body is {int(length):,} bytes, over this server's limit "
                                                     f"of {self.max_body:,} (--max-body-mb)")
        if self.inflight >= self.max_inflight:
            self.counts["rejected_busy"] += 1
            return await self._send_error(send, 503, f"the server is full ({self.max_inflight} requests in "
                                                     "progress); retry shortly", {"Retry-After": str(RETRY_AFTER_S)})
        received = 0
        max_body = self.max_body

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    self.counts["rejected_too_large"] += 1
                    raise RequestError(413, f"the body is over this server's limit of {max_body:,} bytes "
                                            "(--max-body-mb)")
            return message

        self.inflight += 1
        self.counts["admitted"] += 1
        try:
            await self.app(scope, counted_receive, send)
        finally:
            self.inflight -= 1


# ---------------------------------------------------------------------------------------- schema
class Label(BaseModel):
    label: str
    index: int
    prob: float


class Rollout(BaseModel):
    grid: list[int]
    map: list[list[float]]


class ClassifyResponse(BaseModel):
    model: str
    topk: list[Label]
    rollout: Rollout | None = None


class EmbedResponse(BaseModel):
    model: str
    dim: int
    embedding: list[float]


class ErrorResponse(BaseModel):
    error: str


IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "the image (PNG, JPEG, BMP, GIF, WebP)"},
        "labels": {"type": "string", "description": "zero-shot only: comma-separated labels"}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
ERRORS = {code: {"model": ErrorResponse, "description": text} for code, text in (
    (400, "empty body, or not a readable image"), (413, "body or image over the limits"),
    (415, "content type neither multipart/form-data nor image/* nor application/octet-stream"),
    (422, "a bad query parameter"), (500, "the model failed"), (503, "the server is full: retry after Retry-After"),
    (504, "past the per-request timeout"))}


# ---------------------------------------------------------------------------------------- the app
def create_app(served: ServedModel, config: ServeConfig) -> FastAPI:
    batcher = Batcher(served, config.max_batch, config.max_wait_ms, config.max_queue, config.decode_threads)
    started = time.time()
    counts = {"ok": 0, "client_errors": 0, "model_errors": 0, "timeouts": 0}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()

    app = FastAPI(title="vitkit serve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="A vitkit model behind an HTTP API: classify, embed, zero-shot (CLIP). "
                              "Errors are one-line JSON: {\"error\": \"...\"}.")
    guard_holder: dict = {}

    def make_guard(app_):
        guard_holder["guard"] = Guard(app_, config.max_queue, config.max_body_bytes)
        return guard_holder["guard"]

    # ---- errors: one line of JSON, never a traceback
    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        if exc.status < 500:
            counts["client_errors"] += 1
        return error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code < 500:
            counts["client_errors"] += 1
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        counts["client_errors"] += 1
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()]
        return error(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        log.error("internal error on %s", request.url.path, exc_info=exc)
        return error(500, f"internal error ({type(exc).__name__}); the server log has the details")

    # ---- the work of one image request
    async def read_image(request: Request) -> tuple[bytes, dict[str, str]]:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media == "multipart/form-data":
            async with request.form(max_files=1, max_fields=8) as form:
                files = [v for v in form.values() if isinstance(v, UploadFile)]
                if not files:
                    raise RequestError(400, "the multipart body has no file: send the image in the field 'file'")
                data = await files[0].read()
                fields = {k: v for k, v in form.items() if isinstance(v, str)}
            return data, fields
        if media.startswith("image/") or media in RAW_TYPES:
            return await request.body(), {}
        raise RequestError(415, f"content type {media or '(none)'!r} is not an image upload: send multipart/form-data "
                                "(field 'file'), or the raw bytes as image/* or application/octet-stream")

    def prepare(data: bytes):  # on the batcher's decoding threads, before the batch's forward pass
        return served.preprocess(decode_image(data, served.input_size[0], config.max_pixels))

    async def answer(request: Request, op: str, rollout: bool = False, labels: str | None = None) -> tuple[dict, Job]:
        if op not in served.ops:
            raise RequestError(404, f"this {served.kind} model has no /v1/{op}; it serves "
                                    f"{', '.join('/v1/' + o for o in served.ops)}")
        job = None
        try:
            with anyio.fail_after(config.timeout_s):
                data, fields = await read_image(request)
                label_list: tuple[str, ...] = ()
                if op == "zero-shot":
                    text = labels if labels is not None else fields.get("labels", "")
                    label_list = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
                    if len(label_list) < 2:
                        raise RequestError(400, "zero-shot needs at least two labels: labels=cat,dog (query or "
                                                "form field)")
                    if len(label_list) > 1000 or max(len(s) for s in label_list) > 200:
                        raise RequestError(400, "at most 1000 labels of at most 200 characters each")
                if not data:
                    decode_image(data)  # raises its 400 now, without queueing
                job = Job(None, op, label_list, rollout and served.has_rollout, prepare=functools.partial(prepare, data))
                try:
                    future = batcher.submit(job)
                except queue.Full:
                    raise RequestError(503, "the queue is full; retry shortly",
                                       {"Retry-After": str(RETRY_AFTER_S)}) from None
                try:
                    result = await future
                except RequestError:  # the image: empty, unreadable, too large (400 / 413)
                    raise
                except Exception as e:  # the model failed on this batch
                    counts["model_errors"] += 1
                    log.error("model error in /v1/%s", op, exc_info=e)
                    raise RequestError(500, f"the model failed on this request ({type(e).__name__}); the "
                                            "server log has the details") from None
        except TimeoutError:
            if job is not None:
                job.cancelled = True
            counts["timeouts"] += 1
            raise RequestError(504, f"no answer within {config.timeout_s:g} s (--timeout-s)") from None
        counts["ok"] += 1
        return result, job

    def ranked(probs, names: list[str] | tuple[str, ...], topk: int) -> list[dict]:
        top = probs.topk(min(topk, probs.numel()))
        return [{"label": names[i], "index": i, "prob": p} for p, i in zip(top.values.tolist(), top.indices.tolist())]

    def rollout_json(result: dict) -> dict | None:
        m = result.get("rollout")
        if m is None:
            return None
        return {"grid": list(m.shape), "map": [[round(v, 4) for v in row] for row in m.tolist()]}

    # ---- routes
    if "classify" in served.ops:
        @app.post("/v1/classify", response_model=ClassifyResponse, responses=ERRORS, openapi_extra=IMAGE_BODY,
                  summary="Top-k classes of one image")
        async def classify(request: Request, topk: int = Query(config.topk, ge=1, le=100000),
                           rollout: bool = Query(False, description="add the attention rollout map")):
            result, _ = await answer(request, "classify", rollout)
            return JSONResponse({"model": served.name, "topk": ranked(result["probs"], served.classes, topk),
                                 "rollout": rollout_json(result)})

    @app.post("/v1/embed", response_model=EmbedResponse, responses=ERRORS, openapi_extra=IMAGE_BODY,
              summary="Pooled features of one image")
    async def embed(request: Request):
        result, _ = await answer(request, "embed")
        e = result["embedding"]
        return JSONResponse({"model": served.name, "dim": e.numel(), "embedding": e.tolist()})

    if "zero-shot" in served.ops:
        @app.post("/v1/zero-shot", response_model=ClassifyResponse, responses=ERRORS, openapi_extra=IMAGE_BODY,
                  summary="CLIP zero-shot: probabilities over the given labels")
        async def zero_shot(request: Request, labels: str | None = Query(None, description="comma-separated labels"),
                            topk: int = Query(config.topk, ge=1, le=1000),
                            rollout: bool = Query(False, description="add the attention rollout map")):
            result, job = await answer(request, "zero-shot", rollout, labels)
            return JSONResponse({"model": served.name, "topk": ranked(result["probs"], job.labels, topk),
                                 "rollout": rollout_json(result)})

    @app.get("/v1/model", summary="The model: name, kind, input size, classes, precision, limits")
    async def model_info():
        return {**served.describe(), "max_batch": config.max_batch, "max_wait_ms": config.max_wait_ms,
                "limits": {"max_body_bytes": config.max_body_bytes, "max_pixels": config.max_pixels,
                           "timeout_s": config.timeout_s, "max_queue": config.max_queue}}

    @app.get("/v1/stats", summary="Requests, batches, rejections since start")
    async def stats():
        guard = guard_holder.get("guard")
        return {"uptime_s": round(time.time() - started, 3), "requests": dict(counts),
                "admission": dict(guard.counts) if guard else {}, "inflight": guard.inflight if guard else 0,
                "batcher": batcher.stats()}

    @app.get("/healthz", summary="200 while the model worker runs")
    async def healthz():
        if not batcher.alive:
            return error(503, "the model worker has stopped")
        return {"status": "ok", "model": served.name}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        from .page import PAGE
        return HTMLResponse(PAGE)

    app.add_middleware(make_guard)  # Starlette builds it lazily with the app it wraps
    app.state.batcher = batcher
    return app


def create_app_from_env() -> FastAPI:
    """The app of one uvicorn worker process (``--workers N``): the config from $VITKIT_SERVE_CONFIG."""
    import os

    from .config import ENV
    from .model import load_served
    from .server import setup_threads
    config = ServeConfig.from_json(os.environ[ENV])
    threads = setup_threads(config)
    served = load_served(config.source, config.amp, config.onnx, config.weights, threads)
    served.warm_up()
    return create_app(served, config)
