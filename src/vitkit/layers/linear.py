"""``Linear``: ``nn.Linear`` (y = x W^T + b) whose CPU fp32 matmuls run on oneDNN instead of MKL.

Why: PyTorch's CPU build sends ``F.linear`` to MKL's sgemm, which on AMD processors (this project's
CI and dev machines are AMD EPYC, Zen 5) takes a slower code path: MKL reaches ~180-230 GFLOP/s on
2 cores where oneDNN (also inside PyTorch, ``torch.ops.mkldnn``) reaches ~290-480 GFLOP/s on the
same ViT-S shapes (``python benchmarks/kernels.py`` measures both, side by side). Same fp32 math, a
different GEMM library: outputs agree with ``F.linear`` to float rounding (~1e-6 relative).

Every Linear layer of vitkit is this class, so every model gets it. It is a plain ``nn.Linear`` to
everything else: same parameters, same state_dict keys, same init, ``isinstance(m, nn.Linear)``.
The oneDNN path is taken only for CPU fp32 tensors in eager mode; CUDA, other dtypes, tracing,
``torch.compile`` and ONNX export see ``F.linear``. ``fast_linear(False)`` (or the environment
variable ``VITKIT_ONEDNN=0``) turns it off, e.g. to count FLOPs or compare with the reference.

Backward (the GEMMs of training): dx = g W, dW = g^T x, db = sum over rows of g, the GEMMs on oneDNN,
which reads transposed operands in place (see ``_weight_grad``).

bf16 (issue 19): under ``torch.autocast("cpu", torch.bfloat16)`` on a CPU with native bf16 (avx512_bf16
or AMX; elsewhere autocast's ``F.linear`` as before) the layer runs oneDNN's bf16 GEMM, with the bias,
the MLP's GELU (inference) and a residual add (``residual=``, vitkit's Block) fused into it as
post-ops, bf16 out, as autocast's ``F.linear`` gives. The weight is cast to bf16 on each call, as
autocast does (the cast is kept for the backward, the fp32 weight stays the master copy and gets an
fp32 gradient); a model made by :func:`freeze` keeps a packed bf16 copy instead. Tensors already bf16
(a model cast with ``.bfloat16()``) take the same GEMMs.
"""
from __future__ import annotations

import contextlib
import functools
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

_ENABLED = os.environ.get("VITKIT_ONEDNN", "1") != "0"


def _available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_AVAILABLE = _available()


@contextlib.contextmanager
def fast_linear(enabled: bool = True):
    """Context manager: vitkit's fast paths on (``True``, the default) or off: Linear layers on oneDNN
    or on ``F.linear``, short sequences through ``short_attention`` or the split-heads path, the bf16
    paths (``bf16_fast_path``), and a class-token ViT's last block computing that token only. The
    fast paths are once differentiable; turn them off for a double backward (a gradient penalty), to
    count FLOPs, or to compare with the reference ops."""
    global _ENABLED
    old, _ENABLED = _ENABLED, enabled
    try:
        yield
    finally:
        _ENABLED = old


def fast_linear_enabled() -> bool:
    return _ENABLED and _AVAILABLE


def fast_paths_enabled() -> bool:
    """Whether vitkit's fast paths are on (``fast_linear``), on any device and build: also those that need
    no oneDNN (a class-token model's last block computing that token only, ``VisionTransformer.forward``)."""
    return _ENABLED


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (avx512_bf16 or AMX-BF16): where the bf16 fast paths run."""
    from ..hardware import native_bf16 as native
    return native("cpu")


def bf16_fast_path(x: torch.Tensor) -> bool:
    """True where vitkit's bf16 fast paths apply to ``x``: CPU bf16 autocast on a CPU with native bf16, the
    fast paths on (``fast_linear``), eager mode. They keep activations in bf16 (the residual stream of
    vitkit's Block included), fuse the bias, GELU and residual adds into oneDNN's bf16 GEMMs and run
    attention in bf16."""
    return (_ENABLED and _AVAILABLE and x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16 and _eager() and native_bf16())


def _eager() -> bool:
    # tracing first: under torch.export a size test on the symbolic batch would become a guard
    return (not torch.compiler.is_compiling()                               # dynamo, torch.export, ONNX
            and not torch.jit.is_tracing() and not torch.jit.is_scripting())  # TorchScript / legacy ONNX


def _onednn(a: torch.Tensor, b_t: torch.Tensor, bias: torch.Tensor | None = None, post_op: str = "none",
            algorithm: str = "") -> torch.Tensor:
    """post_op(a @ b_t^T + bias) on oneDNN: a (..., K), b_t (N, K) -> (..., N); ``post_op`` "none" or
    "gelu" (``algorithm`` then "none" = exact or "tanh"). bf16 a and b_t give bf16 out (the bias may
    stay fp32)."""
    return torch.ops.mkldnn._linear_pointwise(a, b_t, bias, post_op, [], algorithm)


def _onednn_add(a: torch.Tensor, residual: torch.Tensor, b_t: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """residual + a @ b_t^T + bias on oneDNN, the add a post-op of the GEMM (one rounding, no extra pass
    over the output). residual: the output's shape and dtype; bias: that dtype too."""
    return torch.ops.mkldnn._linear_pointwise.binary(a, residual.contiguous(), b_t, bias, "add")


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b (+ residual) on oneDNN, with its backward (dx = g W, dW = g^T x, db = 1^T g,
    d residual = g) on oneDNN too. x and W of one dtype (fp32 or bf16: the caller casts)."""

    @staticmethod
    def forward(ctx, x, weight, bias, residual=None, packed=None):
        # dx needs W and dW needs x: keep only what a gradient will be asked for (a frozen weight's
        # layer does not hold on to its input). ``packed``: W in oneDNN's blocked layout, for this GEMM only.
        ctx.save_for_backward(x if weight.requires_grad else None, weight if x.requires_grad else None)
        ctx.bias_dtype = None if bias is None else bias.dtype
        w = weight if packed is None else packed
        return _onednn(x, w, bias) if residual is None else _onednn_add(x, residual, w, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        saved = weight if weight is not None else x                          # None: only db / d residual
        g = (g if saved is None else g.to(saved.dtype)).contiguous()
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = _onednn(g, weight.t())                                      # (..., N) @ (N, K)
        g2 = g.reshape(-1, g.shape[-1])                                     # (M, N)
        if ctx.needs_input_grad[1]:
            x2 = x.reshape(-1, x.shape[-1])
            # bf16: ATen's mm (oneDNN's matmul) reads both transposes in place and beats _weight_grad
            dw = torch.mm(g2.t(), x2) if x2.dtype == torch.bfloat16 else _weight_grad(g2, x2)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            # summed in g's dtype (a bf16 sum accumulates in fp32 on the CPU; sum(dtype=fp32) is 3x slower)
            db = g2.sum(0).to(ctx.bias_dtype)
        return dx, dw, db, (g if ctx.needs_input_grad[3] else None), None


def _weight_grad(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dW = g^T x for g (M, N), x (M, K), on oneDNN without copying a transpose by hand.

    oneDNN's op computes a @ b^T and takes its second operand b in either layout for free (it reads
    ``x.t()``, a view, as x itself), while a transposed first operand is copied inside. So the
    smaller of the two is passed first: dW = (x^T g)^T when K < N, else g^T x (at K = N this needs no
    transposed copy of the result). Measured against
    copying both transposes (the earlier code) and against MKL's ``torch.mm(g.t(), x)``: on ViT-S's
    qkv at batch 32 (M = 6304, K = 384, N = 1152) 14.5 vs 20.3 vs 25.0 ms, on its fc2 (6304, 1536,
    384) 19.9 vs 38.9 vs 35.6 ms, on the demo's qkv (544, 128, 384) 0.20 vs 0.34 vs 0.26 ms (2
    threads; ``python benchmarks/kernels.py``). What remains is the copy of the first operand's
    transpose: PyTorch's transposed copy runs 5-10x slower than a plain copy of the same matrix (same
    file)."""
    if x.shape[1] < g.shape[1]:
        return _onednn(x.t(), g.t()).t().contiguous()                    # (K, N)^T
    return _onednn(g.t(), x.t())                                          # (N, K)


# Below this many multiply-adds per call, oneDNN's call overhead outweighs its faster kernel
# (`python benchmarks/kernels.py`, x (M, 128) @ W (128, 384): at 17 rows, 0.8M MACs, oneDNN runs at 0.66x
# of F.linear; at 34 rows, 1.7M, 0.85x; at 68 rows 1.08x; at 544 rows 1.79x. The crossover moves with the
# machine's load: 34 rows ran at 1.09x in the previous run, kernels.md at 6bacc26.)
MIN_MACS = 1 << 20

# From this many rows on, a call reorders the weight into oneDNN's blocked layout itself (for this batch
# size) before the GEMM, rather than passing the plain weight: at ViT-S/16's batch 32 (6304 rows) fc1 runs
# 1.14x faster in bf16 (1.05x in fp32), qkv and fc2 1.02-1.06x, the reorder included; at the demo's 1088
# rows it loses (0.80x), at 1576-2176 it is even (1 thread; `python benchmarks/kernels.py`, "Weight packed
# per call").
PACK_ROWS = 3000


def _needs_grad(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                residual: torch.Tensor | None = None) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad)
                                        or (residual is not None and residual.requires_grad))


_FP32, _BF16 = torch.float32, torch.bfloat16


def _compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype | None:
    """The dtype this call runs in on oneDNN (fp32 or bf16), or None for ``F.linear``: CPU fp32 tensors;
    under CPU bf16 autocast, bf16 (on a CPU with native bf16; elsewhere autocast's ``F.linear``); bf16
    tensors on such a CPU. Eager mode, and calls big enough for oneDNN (``MIN_MACS``)."""
    if not (_ENABLED and _AVAILABLE and x.device.type == "cpu" and weight.device.type == "cpu" and _eager()):
        return None
    if torch.is_autocast_enabled("cpu"):
        if not (torch.get_autocast_dtype("cpu") == _BF16 and x.dtype in (_FP32, _BF16)
                and weight.dtype in (_FP32, _BF16) and native_bf16()):
            return None
        dtype = _BF16
    elif x.dtype == weight.dtype == _FP32 or (x.dtype == weight.dtype == _BF16 and native_bf16()):
        dtype = x.dtype
    else:
        return None
    return dtype if x.dim() >= 2 and x.numel() * weight.shape[0] >= MIN_MACS else None


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return _compute_dtype(x, weight) is not None


def _run(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None,
         gelu: str | None, packed: _Packed | None = None) -> torch.Tensor:
    """residual + gelu(x W^T + b) (each part optional: no residual with gelu), on oneDNN where that
    applies, else the reference ops."""
    dtype = _compute_dtype(x, weight)
    if dtype is None:
        y = F.linear(x, weight, bias)
        if gelu is not None:
            y = F.gelu(y, approximate=gelu)
        return y if residual is None else residual + y
    x = x.to(dtype)
    if residual is not None:
        residual = residual.to(dtype)
        if bias is not None:
            bias = bias.to(dtype)                                           # the binary post-op's rule
    rows = x.numel() // x.shape[-1]
    if _needs_grad(x, weight, bias, residual):
        w = weight.to(dtype)
        y = _OneDNNLinear.apply(x, w, bias, residual, _pack(w.detach(), rows) if rows >= PACK_ROWS else None)
        return y if gelu is None else F.gelu(y, approximate=gelu)
    w = packed.get(weight, dtype) if packed is not None else None           # inference: no autograd node
    if w is None:
        w = weight.to(dtype) if rows < PACK_ROWS else _pack(weight.detach().to(dtype), rows)
    if residual is not None:
        return _onednn_add(x, residual, w, bias)
    return _onednn(x, w, bias) if gelu is None else _onednn(x, w, bias, "gelu", gelu)


def _pack(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """``weight`` reordered into oneDNN's blocked layout for GEMMs of ``rows`` rows (see PACK_ROWS)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, rows)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` (+ ``residual``), on oneDNN where that applies (see the module
    docstring); the residual add is then a post-op of the GEMM."""
    return _run(x, weight, bias, residual, None)


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                approximate: str = "none") -> torch.Tensor:
    """``F.gelu(F.linear(x, weight, bias), approximate=approximate)``; in inference on oneDNN, the GELU is
    fused into the GEMM as a post-op (one pass over the MLP's widest activation saved: ViT-S's fc1 +
    GELU at batch 32 takes 27 ms fused vs 37 ms unfused on 2 threads, `python benchmarks/kernels.py`)."""
    return _run(x, weight, bias, None, approximate)


class _Packed:
    """A weight reordered into oneDNN's blocked layout by :func:`freeze`: used while the module still
    holds that very weight tensor, on the same storage, at the same version. Copies and pickles of a
    module do not carry it (they use the plain weight). The fp32 copy is made at once, a bf16 one on
    the first call under bf16 autocast."""

    def __init__(self, weight: torch.Tensor):
        self.source, self.key = weight, (weight.data_ptr(), weight._version)
        self.tensors = {weight.dtype: torch.ops.mkldnn._reorder_linear_weight(weight.detach())}

    def get(self, weight: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor | None:
        """The packed weight in ``dtype`` (default: the weight's), or None when ``weight`` is not (or no
        longer) what it was made from."""
        if not (weight is self.source and self.key == (weight.data_ptr(), weight._version)):
            return None
        dtype = dtype or weight.dtype
        if dtype not in self.tensors:
            self.tensors[dtype] = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype))
        return self.tensors[dtype]

    def __deepcopy__(self, memo):
        return None

    def __reduce__(self):
        return type(None), ()


class Linear(nn.Linear):
    """``nn.Linear`` with the oneDNN fast path on the CPU. x: (..., in_features) -> (..., out_features).

    The weight is read afresh on every call while the module can train (from ``PACK_ROWS`` rows on, a
    call reorders it into oneDNN's blocked layout first, for that call only). (A copy cached across
    calls runs faster, but nothing tells reliably when a trainable weight changed: fused AdamW updates
    it in place without bumping its version counter, and a stale copy silently evaluated old weights.)
    :func:`freeze` makes an inference-only copy of a model that does keep such packed weights.
    """

    _packed: _Packed | None = None

    def _packed_for(self, x: torch.Tensor) -> torch.Tensor | None:
        """The prepacked weight if this call may use it (made by freeze, no gradient wanted, the oneDNN path)."""
        dtype = _compute_dtype(x, self.weight)
        if self._packed is None or _needs_grad(x, self.weight, self.bias) or dtype is None:
            return None
        return self._packed.get(self.weight, dtype)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``x W^T + b``, plus ``residual`` (the output's shape) if given: on oneDNN a post-op of the GEMM."""
        return _run(x, self.weight, self.bias, residual, None, self._packed)

    def forward_gelu(self, x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
        """``F.gelu(self(x), approximate)``, the GELU fused into the GEMM in inference."""
        return _run(x, self.weight, self.bias, None, approximate, self._packed)


def freeze(model: nn.Module) -> nn.Module:
    """An inference-only copy of ``model`` whose Linear weights are prepacked in oneDNN's blocked layout.

    The copy is in eval mode with every parameter frozen (``requires_grad=False``); the original is
    untouched. Same outputs bit for bit, faster on the CPU (``vitkit bench``'s "vitkit frozen" rows: 8-11%
    at batch 32; per GEMM 1.1-1.3x, ``python benchmarks/kernels.py``), since oneDNN no longer reorders the weight on
    every call. Like ``torch.jit.freeze`` or an ONNX export it is a snapshot: freeze again after
    training further. A weight replaced or changed in place through autograd-visible ops (a new
    tensor, ``load_state_dict``, ``mul_``) makes that layer fall back to the plain weight; writes that
    bypass the version counter (``weight.data.copy_``, fused optimizers) are not seen, so do not
    edit a frozen model's weights. Input gradients (saliency maps) take the plain path. Costs one
    more copy of the Linear weights in memory.
    """
    import copy
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    if _AVAILABLE:
        for m in frozen.modules():
            if isinstance(m, Linear) and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32:
                m._packed = _Packed(m.weight)
    return frozen
