"""ONNX export of a vitkit classifier, with a dynamic batch axis, and its check in ONNX Runtime.

``export_onnx(model, path)`` traces ``model`` in eval mode on a (2, C, H, W) example with
``torch.onnx.export`` (the torch.export-based exporter; needs the ``onnx`` extra: onnx, onnxscript)
and marks the batch axis dynamic, so the file runs at any batch size. The image size and channel
count are fixed by the model (ViT's position embeddings are); the input is named ``pixel_values``
and the output ``logits``. ``onnx_session(path)`` opens it in ONNX Runtime on the CPU and
``max_abs_diff(model, session, x)`` compares the two on a batch: the export test asks for <= 1e-4.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(f"ONNX export needs {module!r}: pip install 'vitkit[onnx]' "
                          "(onnx, onnxscript, onnxruntime)") from e


@contextlib.contextmanager
def _quiet(logger: str | None):
    """Silence warnings and ``logger``'s notes below ERROR (the exporters' advice is not the user's to act on)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def export_onnx(model: nn.Module, path: str | Path, batch: int = 2, opset: int | None = None) -> Path:
    """Write ``model`` as an fp32 ONNX graph with a dynamic batch axis; return the path. ``model`` itself is
    put in eval mode and moved to the CPU (export a copy to keep it where it is)."""
    _require("onnx"), _require("onnxscript")
    input_size = getattr(model, "input_size", None)
    if input_size is None:
        raise ValueError(f"{type(model).__name__} has no input_size (C, H, W): only vitkit image models export")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    x = torch.randn(batch, *input_size)
    batch_dim = torch.export.Dim("batch", min=1, max=4096)
    kwargs = {"opset_version": opset} if opset else {}
    with _quiet("torch.onnx"), torch.no_grad():  # (its "torchvision is not installed" notes)
        torch.onnx.export(model, (x,), str(path), input_names=["pixel_values"], output_names=["logits"],
                          dynamic_shapes=({0: batch_dim},), dynamo=True, external_data=False,
                          verbose=False, **kwargs)
    return path


def quantize_onnx_int8(src: str | Path, dst: str | Path) -> Path:
    """ONNX Runtime's dynamic int8 quantisation of ``src``'s MatMul weights (activations quantised per
    batch at run time) -> ``dst``: the int8 path of `vitkit export --int8`."""
    _require("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic
    with _quiet(None):  # (its "pre-processing" advice goes to the root logger)
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    return Path(dst)


def onnx_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session for ``path``; ``threads`` = intra-op threads (default: torch's).
    Its worker threads busy-wait for a while after each run (ONNX Runtime's default), which slows
    other work on the same cores right after (`vitkit bench` pauses between timed blocks for this)."""
    ort = _require("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_forward(session, x: torch.Tensor) -> torch.Tensor:
    """Logits (B, num_classes) of the ONNX model for a float32 image batch (B, C, H, W)."""
    return torch.from_numpy(session.run(["logits"], {"pixel_values": x.detach().cpu().numpy().astype(np.float32, copy=False)})[0])


def max_abs_diff(model: nn.Module, session, x: torch.Tensor) -> float:
    """max |PyTorch logits - ONNX Runtime logits| of ``model`` and its exported ``session`` on the batch ``x``."""
    with torch.no_grad():
        return (onnx_forward(session, x) - model.eval()(x)).abs().max().item()
