"""vitkit: the Vision Transformer and the methods built on it.

The public names load on first use (PEP 562), so ``import vitkit`` (and the ``vitkit`` command's
start-up, help and argument errors) does not wait for PyTorch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {"create_model": ".models", "list_models": ".models", "register_model": ".models",
           "load_weights": ".weights", "load_clip": ".weights.clip"}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vitkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
