"""Mixed precision on every device, and the host it runs on.

    dtype = resolve_amp("auto", device)      # torch.bfloat16 where the hardware has native bf16, else None
    with autocast(device, dtype): ...        # torch.autocast(device.type, dtype), or nothing for fp32

``amp`` is one of AMP_CHOICES: "auto" (bf16 where the hardware computes it natively: on the CPU the
``avx512_bf16`` or AMX-BF16 instructions, on CUDA a GPU that supports bf16; fp32 elsewhere), "bf16",
"fp16" or "none" (fp32; ``None`` means the same). Under autocast the weights, the optimizer state and
the EMA stay fp32; matmuls run in the low precision and PyTorch's autocast policy keeps the
precision-sensitive ops (softmax, layer norm, the losses) in fp32.

The host itself (CPU flags, cores, ``host()`` / ``host_line()`` for every record) is
`vitkit.hardware`, which any layer may import.
"""
from __future__ import annotations

import contextlib

import torch

from ..hardware import available_cpus, cpu_flags, host, host_line, native_bf16  # noqa: F401 (re-exported)

AMP_CHOICES = ("auto", "bf16", "fp16", "none")


def resolve_amp(amp: str | None, device: torch.device | str = "cpu") -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``: torch.bfloat16, torch.float16, or None (fp32)."""
    if amp is None or amp == "none":
        return None
    if amp == "auto":
        return torch.bfloat16 if native_bf16(device) else None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    raise ValueError(f"amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")


def autocast(device: torch.device | str, dtype: torch.dtype | str | None):
    """``torch.autocast(device.type, dtype)``; a no-op context for fp32 (``dtype`` None or "none").
    ``dtype`` may also be an amp name ("auto", "bf16", ...), resolved for ``device``."""
    device = torch.device(device)
    if isinstance(dtype, str) or dtype is None:
        dtype = resolve_amp(dtype, device)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
