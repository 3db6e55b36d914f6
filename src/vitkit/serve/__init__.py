"""``vitkit serve``: a trained or pretrained model behind an HTTP API and a page.

    vitkit serve runs/demo                       # http://127.0.0.1:8000/ : the page; /v1/... : the API
    vitkit serve hf:google/vit-base-patch16-224 --max-batch 32 --max-wait-ms 5 --workers 2

Modules: ``config`` (the settings), ``decode`` (request bytes -> pixels, with the pixel limit),
``model`` (loading, THE preprocessing, batched forward passes), ``batcher`` (dynamic batching on a
worker thread, bounded queue), ``app`` (FastAPI routes, limits, one-line JSON errors), ``page`` (the
offline page), ``server`` (socket + uvicorn, one process or N workers).
"""
from .config import ServeConfig

__all__ = ["ServeConfig", "create_app", "load_served", "serve"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app
        return create_app
    if name == "load_served":
        from .model import load_served
        return load_served
    if name == "serve":
        from .server import serve
        return serve
    raise AttributeError(f"module 'vitkit.serve' has no attribute {name!r}")
