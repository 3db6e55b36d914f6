"""Deployment transforms of trained models: int8 dynamic quantisation for CPU inference."""
from .quantize import quantize_int8

__all__ = ["quantize_int8"]
