"""Mixed precision on every device, and the host it runs on.

    dtype = resolve_amp("auto", device)      # torch.bfloat16 where the hardware has native bf16, else None
    with autocast(device, dtype): ...        # torch.autocast(device.type, dtype), or nothing for fp32

``amp`` is one of AMP_CHOICES: "auto" (bf16 where the hardware computes it natively: on the CPU the
``avx512_bf16`` or AMX-BF16 instructions, on CUDA a GPU that supports bf16; fp32 elsewhere), "bf16",
"fp16" or "none" (fp32; ``None`` means the same). Under autocast the weights, the optimizer state and
the EMA stay fp32; matmuls run in the low precision and PyTorch's autocast policy keeps the
precision-sensitive ops (softmax, layer norm, the losses) in fp32.

``host()`` describes the machine for every record (benchmark headers, a run's config.json): a speed
ratio measured on one CPU does not carry to another (Zen 4 and Zen 5 differ by 1.5x on the same
ratio), so a figure is only quoted beside its host.
"""
from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch

AMP_CHOICES = ("auto", "bf16", "fp16", "none")
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_fp16")
"""The CPU flags that decide which kernels run (what a speed figure depends on)."""


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """True where bf16 matmuls run natively: avx512_bf16 or AMX-BF16 on the CPU, a bf16 GPU on CUDA."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


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


def host(device: torch.device | str = "cpu") -> dict:
    """What a record says about the machine: the CPU (vendor, family/model, the ISA flags that matter,
    the cores this process may use) and, on CUDA, the GPU."""
    info = {"cpu": _cpuinfo("model name") or platform.processor() or platform.machine(),
            "vendor": _cpuinfo("vendor_id"), "family": _cpuinfo("cpu family"), "model": _cpuinfo("model"),
            "isa": [f for f in ISA_FLAGS if f in cpu_flags()], "cores": available_cpus()}
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def host_line(device: torch.device | str = "cpu") -> str:
    """One line for a report header: ``AMD EPYC (AuthenticAMD family 25 model 17; avx2, avx512f,
    avx512_bf16), 2 cores`` (+ the GPU)."""
    h = host(device)
    cpu = f"{h['cpu']} ({h['vendor']} family {h['family']} model {h['model']}; {', '.join(h['isa']) or 'no AVX-512'})"
    return f"{cpu}, {h['cores']} cores" + (f"; GPU {h['gpu']}" if "gpu" in h else "")


def _cpuinfo(key: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key:
                return value.strip()
    except OSError:
        pass
    return ""


def available_cpus() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
