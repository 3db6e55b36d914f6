"""The settings of one server (`vitkit serve` flags), JSON-able so that every worker process gets them."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

ENV = "VITKIT_SERVE_CONFIG"
"""The environment variable that carries the config (JSON) to uvicorn's worker processes (--workers N)."""


@dataclass(frozen=True)
class ServeConfig:
    source: str                          # run folder, hf:org/name, or checkpoint folder
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1                     # processes, each with its own model and batcher
    max_batch: int = 32                  # most requests in one forward pass (1: no batching)
    max_wait_ms: float = 5.0             # longest a request waits for others to join its batch
    amp: str | None = None               # None: a run's own precision (hf: auto)
    onnx: str | None = None              # classify through this ONNX graph (ONNX Runtime)
    weights: str | None = None           # a run's "ema" | "model" weights (None: those it evaluated)
    max_body_mb: float = 8.0             # largest request body (413 above)
    max_pixels: int = 16_000_000         # largest image, width x height (413 above, before decoding)
    timeout_s: float = 30.0              # per request, from its start to its answer (504 after)
    max_queue: int = 128                 # requests admitted at once; more get 503 + Retry-After
    decode_threads: int = 2              # threads decoding a batch's images before its forward pass
    threads: int | None = None           # torch threads per worker (None: the cores / workers)
    topk: int = 5                        # default top-k of /v1/classify and /v1/zero-shot

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        return cls(**json.loads(text))
