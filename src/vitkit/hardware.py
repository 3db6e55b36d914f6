"""What this machine computes natively, and its description for every record.

    native_bf16("cpu")   # avx512_bf16 or AMX-BF16 on the CPU; a bf16-capable GPU on CUDA
    host_line()          # "AMD EPYC (AuthenticAMD family 25 model 17; avx2, avx512f, avx512_bf16), 2 cores"

A speed ratio measured on one CPU does not carry to another (Zen 4 and Zen 5 differ by 1.5x on the
same ratio), so every figure is quoted beside ``host()`` (benchmark headers, a run's config.json).
torch and the standard library only: any package of vitkit may import it.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

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
