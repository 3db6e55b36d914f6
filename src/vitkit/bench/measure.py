"""How the benchmarks measure: interleaved timing, FLOPs, peak memory and the machine's matmul peak.

Every speed claim in vitkit is a ratio measured side by side in one run: ``interleaved`` runs each
implementation once per round (A, B, C, A, B, C, ...), so machine noise hits all alike, and keeps
the median with min and max.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import shlex
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..layers.linear import _AVAILABLE as ONEDNN, _onednn, fast_linear
from ..hardware import host, host_line


def no_sync() -> None:
    pass


def cuda_sync(device: torch.device | str = "cuda") -> Callable[[], None]:
    return lambda: torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: torch.dtype | bool | None):
    """Autocast on ``device`` to ``amp`` (a dtype; True: bf16), else (None, False) a no-op context."""
    if amp is True:
        amp = torch.bfloat16
    return torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()


def machine(device: torch.device) -> str:
    """The host of a figure, one line: the CPU (vendor, family/model, ISA flags, cores) and the GPU
    (`vitkit.train.precision.host_line`)."""
    return host_line(device)


def environment(device: torch.device | str = "cpu") -> dict:
    """What a results file records about where it was measured: machine (one line), host (the fields),
    torch, threads."""
    device = torch.device(device)
    return {"machine": machine(device), "host": host(device), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def command(prog: str, args: argparse.Namespace, parser: argparse.ArgumentParser,
            skip: tuple[str, ...] = ("out",)) -> str:
    """The command line that made a report, runnable as it is (shell-quoted): ``prog`` and every option of
    ``args`` that ``parser`` knows and that is not at its default, except those in ``skip`` (the output
    folder). A flag set to True is written alone, a list as its items."""
    defaults = vars(parser.parse_args([]))
    parts = shlex.split(prog)
    for k, v in vars(args).items():
        if k in skip or k not in defaults or v == defaults[k]:
            continue
        parts.append("--" + k.replace("_", "-"))
        if v is not True:
            parts += [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]
    return shlex.join(parts)


def load_before(path: Path | str | None, rows: Callable[[dict], dict]) -> dict | None:
    """The rows a report showed before a change, for a before/after table: the ``"before"`` a results
    file carries (a re-run keeps the first one), else ``rows(saved)`` of the file itself with its
    ``"source"`` (the path, relative to the repository when it lies in it); None without a file."""
    if path is None or not Path(path).is_file():
        return None
    saved = json.loads(Path(path).read_text())
    if saved.get("before"):
        return saved["before"]
    try:
        source = str(Path(path).resolve().relative_to(Path(__file__).resolve().parents[3]))
    except ValueError:
        source = str(path)
    return {"source": source, **rows(saved)}


def write_results(out: Path, stem: str, results: dict, markdown: str) -> str:
    """Write ``out/stem.json`` (the numbers) and ``out/stem.md`` (the report made from them); return the
    report. Every benchmark writes its results through this."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str))
    (out / f"{stem}.md").write_text(markdown)
    return markdown


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, calls: int = 1,
                sync: Callable[[], None] = no_sync, warmup: int = 1, min_block_s: float = 0.0,
                settle_s: float = 0.0, clock: Callable[[], float] | None = None) -> dict[str, dict]:
    """{name: {"median", "min", "max"} seconds per call, "calls": calls per block} over ``repeats``
    interleaved rounds; in each round every fn runs one block of consecutive calls.

    Every fn is first run ``warmup`` times. A block is ``calls`` calls, or, with ``min_block_s``, as many
    as fill ``min_block_s`` seconds: counted in one untimed block run before the rounds (so a slow first
    call, a first optimizer step or a cold cache, does not shorten every block). Consecutive calls are
    how a model runs in practice (a training loop, a stream of batches); a block of one call after
    another model's would measure a start with cold caches and freshly faulted-in memory instead.
    ``settle_s``: a pause before each block, untimed, so that worker threads still busy-waiting after
    the previous block (ONNX Runtime's spin by default) do not slow the next one down.
    ``clock``: what a block is timed with (default ``time.perf_counter``, wall time); ``time.process_time``
    counts this process's CPU time instead, which on a shared, loaded host at one thread estimates the
    time the work takes on a quiet one (wall time there includes the waits for a core).
    """
    clock = clock or time.perf_counter
    n = {}
    for k, fn in fns.items():
        for _ in range(warmup):
            fn()
        sync()
        if settle_s:
            time.sleep(settle_s)
        n[k], t = 0, time.perf_counter()
        while min_block_s and (n[k] < calls or time.perf_counter() - t < min_block_s):
            fn()
            sync()
            n[k] += 1
        n[k] = max(n[k], calls)
    sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            sync()
            if settle_s:
                time.sleep(settle_s)
            t = clock()
            for _ in range(n[k]):
                fn()
            sync()
            times[k].append((clock() - t) / n[k])
    return {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "calls": n[k]}
            for k, v in times.items()}


# ---------------------------------------------------------------------------------------- FLOPs
def _sdpa_cpu_flops(q, k, v, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count
    return sdpa_flop_count(q, k, v)


def forward_flops(fn: Callable, *args) -> int:
    """FLOPs of ``fn(*args)`` (2 per multiply-add, no grad), counted by ``FlopCounterMode`` with vitkit's
    Linear on ``F.linear`` (the counter does not see oneDNN calls) and the CPU flash-attention op counted."""
    from torch.utils.flop_counter import FlopCounterMode
    extra = {}
    if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        extra[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flops
    with fast_linear(False), torch.no_grad(), FlopCounterMode(display=False, custom_mapping=extra) as counter:
        fn(*args)
    return counter.get_total_flops()


# ---------------------------------------------------------------------------------------- memory
def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_peak(fn: Callable[[], object]) -> int | None:
    """Peak growth in bytes of this process's resident memory during fn() (Linux; None elsewhere).

    Free heap pages are handed back first (glibc malloc_trim) so that fn() cannot hide in memory
    freed earlier, the kernel's high-water mark is reset (write "5" to /proc/self/clear_refs), and
    VmHWM after fn() minus VmRSS before it is what fn() made resident."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        base = _proc_status_kib("VmRSS")
    except (OSError, KeyError, AttributeError):
        return None
    fn()
    return max(0, _proc_status_kib("VmHWM") - base) * 1024


def alloc_peak(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes of tensor memory allocated during fn() above the level at its start.

    CUDA: the caching allocator's max_memory_allocated. CPU: the allocator's events recorded by
    torch.profiler (profile_memory=True), +bytes per allocation and -bytes per free, summed in time
    order; None where this PyTorch does not expose them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                  if e.name() == "[memory]" and e.device_type() == torch._C._autograd.DeviceType.CPU]
    except AttributeError:
        return None
    live = peak = 0
    for _, n in sorted(events):
        live += n
        peak = max(peak, live)
    return peak


# ---------------------------------------------------------------------------------------- peak
# ViT-S/16 at batch 32: (tokens, in, out) of its qkv / fc1 / fc2 GEMMs, and a square one
PEAK_SHAPES = ((6304, 384, 1152), (6304, 384, 1536), (6304, 1536, 384), (2048, 2048, 2048))


def matmul_peak(shapes=PEAK_SHAPES, repeats: int = 5, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """GFLOP/s of (M, K) @ (K, N) matmuls by each GEMM library PyTorch has here: the best over ``shapes``
    per library, and the best of all ("peak").

    CPU: ``torch.mm`` (MKL in PyTorch's CPU build for fp32; oneDNN's matmul for bf16) and oneDNN's inner
    product (``torch.ops.mkldnn._linear_pointwise``, what vitkit's Linear uses), fp32 or bf16; CUDA:
    ``torch.mm`` (cuBLAS). The models' achieved GFLOP/s are quoted
    as a fraction of this peak, measured in the same run; the GEMM rate depends on the shape, so the
    peak is taken over the shapes the models run (ViT-S's) and a large square one."""
    device = torch.device(device)
    best: dict[str, float] = {}
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        fns = {"torch.mm": lambda: torch.mm(a, b)}
        if device.type == "cpu" and dtype in (torch.float32, torch.bfloat16) and ONEDNN:
            fns["onednn"] = lambda: _onednn(a, b.t())  # a (M, K) @ b (K, N), b read in place
        sync = cuda_sync(device) if device.type == "cuda" else no_sync
        res = interleaved(fns, repeats, calls=3, sync=sync, warmup=2)
        for name, v in res.items():
            best[name] = max(best.get(name, 0.0), 2 * m * k * n / v["median"] / 1e9)
    best["peak"] = max(best.values())
    return best
