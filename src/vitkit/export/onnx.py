"""ONNX export of a vitkit classifier, with a dynamic batch axis, and its check in ONNX Runtime.

``export_onnx(model, path)`` traces ``model`` in eval mode on a (2, C, H, W) example with
``torch.onnx.export`` (the torch.export-based exporter; needs the ``onnx`` extra: onnx, onnxscript)
and marks the batch axis dynamic, so the file runs at any batch size. The image size and channel
count are fixed by the model (ViT's position embeddings are); the input is named ``pixel_values``
and the output ``logits``. ``onnx_session(path)`` opens it in ONNX Runtime on the CPU and
``max_abs_diff(model, path, x)`` compares the two on a batch: the export test asks for <= 1e-4.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..layers.linear import fast_linear


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(f"ONNX export needs {module!r}: pip install 'vitkit[onnx]' "
                          "(onnx, onnxscript, onnxruntime)") from e


def export_onnx(model: nn.Module, path: str | Path, batch: int = 2, opset: int | None = None) -> Path:
    """Write ``model`` (eval mode, CPU, fp32) as an ONNX graph with a dynamic batch axis; return the path."""
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
    log = logging.getLogger("torch.onnx")  # "torchvision is not installed" notes: not ours to act on
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), fast_linear(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), input_names=["pixel_values"], output_names=["logits"],
                              dynamic_shapes=({0: batch_dim},), dynamo=True, external_data=False,
                              verbose=False, **kwargs)
    finally:
        log.setLevel(level)
    return path


def quantize_onnx_int8(src: str | Path, dst: str | Path) -> Path:
    """ONNX Runtime's dynamic int8 quantisation of ``src``'s MatMul weights (activations quantised per
    batch at run time) -> ``dst``: the int8 path of `vitkit export --int8`."""
    _require("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic
    root = logging.getLogger()  # ONNX Runtime advises "pre-processing" on the root logger: not ours to act on
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return Path(dst)


def onnx_session(path: str | Path, threads: int | None = None, spinning: bool = True):
    """An ONNX Runtime CPU session for ``path``; ``threads`` = intra-op threads (default: torch's).

    ``spinning=False`` stops ONNX Runtime's worker threads from busy-waiting for work after each run
    (its default, which makes ONNX Runtime itself 5-30% faster on 2 cores). Turn it off when other
    work shares the cores right after: in one process on 2 cores, the demo ViT's batch-32 inference
    in PyTorch ran 2.5x slower measured right after ONNX Runtime calls than without them (which is
    why `vitkit bench` pauses between timed blocks)."""
    ort = _require("onnxruntime")
    opts = ort.SessionOptions()
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_forward(session, x: torch.Tensor) -> np.ndarray:
    """Logits of the ONNX model for a float32 image batch (B, C, H, W)."""
    return session.run(["logits"], {"pixel_values": x.detach().cpu().numpy().astype(np.float32)})[0]


def max_abs_diff(model: nn.Module, path: str | Path, x: torch.Tensor) -> float:
    """max |PyTorch logits - ONNX Runtime logits| on the batch ``x``."""
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    return float(np.abs(onnx_forward(onnx_session(path), x) - ref).max())
