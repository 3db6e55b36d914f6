"""Deployment transforms of trained models for CPU inference: ``freeze`` (prepacked fp32 weights, same
outputs) and ``quantize_int8`` (int8 dynamic quantisation); ONNX export in ``vitkit.export.onnx``."""
from ..layers.linear import freeze
from .quantize import quantize_int8

__all__ = ["freeze", "quantize_int8"]
