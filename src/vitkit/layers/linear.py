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
"""
from __future__ import annotations

import contextlib
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
    """Context manager: vitkit's CPU fast paths on (``True``, the default) or off: Linear layers on oneDNN
    or on ``F.linear``, and short sequences through ``short_attention`` or the split-heads path. Both
    fast paths are once differentiable; turn them off for a double backward (a gradient penalty) or to
    compare with the reference ops."""
    global _ENABLED
    old, _ENABLED = _ENABLED, enabled
    try:
        yield
    finally:
        _ENABLED = old


def fast_linear_enabled() -> bool:
    return _ENABLED and _AVAILABLE


def _onednn(a: torch.Tensor, b_t: torch.Tensor, bias: torch.Tensor | None = None, post_op: str = "none",
            algorithm: str = "") -> torch.Tensor:
    """post_op(a @ b_t^T + bias) on oneDNN: a (..., K), b_t (N, K) -> (..., N); ``post_op`` "none" or
    "gelu" (``algorithm`` then "none" = exact or "tanh")."""
    return torch.ops.mkldnn._linear_pointwise(a, b_t, bias, post_op, [], algorithm)


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b on oneDNN, with its backward (dx = g W, dW = g^T x, db = 1^T g) on oneDNN too."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        # dx needs W and dW needs x: keep only what a gradient will be asked for (a frozen weight's
        # layer does not hold on to its input)
        ctx.save_for_backward(x if weight.requires_grad else None, weight if x.requires_grad else None)
        ctx.has_bias = bias is not None
        return _onednn(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        g = g.contiguous()
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = _onednn(g, weight.t())                                      # (..., N) @ (N, K)
        g2 = g.reshape(-1, g.shape[-1])                                     # (M, N)
        if ctx.needs_input_grad[1]:
            dw = _weight_grad(g2, x.reshape(-1, x.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = g2.sum(0)
        return dx, dw, db


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


def _needs_grad(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad))


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    # tracing first: under torch.export a size test on the symbolic batch would become a guard
    return (_ENABLED and _AVAILABLE
            and not torch.compiler.is_compiling()                           # dynamo, torch.export, ONNX
            and not torch.jit.is_tracing() and not torch.jit.is_scripting()  # TorchScript / legacy ONNX
            and x.dtype == torch.float32 and x.device.type == "cpu" and weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")                         # bf16 autocast: F.linear casts
            and x.dim() >= 2 and x.numel() * weight.shape[0] >= MIN_MACS)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, on oneDNN where that applies (see the module docstring)."""
    if not _use_onednn(x, weight):
        return F.linear(x, weight, bias)
    if _needs_grad(x, weight, bias):
        return _OneDNNLinear.apply(x, weight, bias)
    return _onednn(x, weight, bias)  # inference: no autograd node


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                approximate: str = "none") -> torch.Tensor:
    """``F.gelu(F.linear(x, weight, bias), approximate=approximate)``; in inference on oneDNN, the GELU is
    fused into the GEMM as a post-op (one pass over the MLP's widest activation saved: ViT-S's fc1 +
    GELU at batch 32 takes 27 ms fused vs 37 ms unfused on 2 threads, `python benchmarks/kernels.py`)."""
    if not _use_onednn(x, weight):
        return F.gelu(F.linear(x, weight, bias), approximate=approximate)
    if _needs_grad(x, weight, bias):
        return F.gelu(_OneDNNLinear.apply(x, weight, bias), approximate=approximate)
    return _onednn(x, weight, bias, "gelu", approximate)


class _Packed:
    """A weight reordered into oneDNN's blocked layout by :func:`freeze`: used while the module still
    holds that very weight tensor, on the same storage, at the same version. Copies and pickles of a
    module do not carry it (they use the plain weight)."""

    def __init__(self, weight: torch.Tensor):
        self.source, self.key = weight, (weight.data_ptr(), weight._version)
        self.tensor = torch.ops.mkldnn._reorder_linear_weight(weight.detach())

    def get(self, weight: torch.Tensor) -> torch.Tensor | None:
        """The packed weight, or None when ``weight`` is not (or no longer) what it was made from."""
        fresh = weight is self.source and self.key == (weight.data_ptr(), weight._version)
        return self.tensor if fresh else None

    def __deepcopy__(self, memo):
        return None

    def __reduce__(self):
        return type(None), ()


class Linear(nn.Linear):
    """``nn.Linear`` with the oneDNN fast path on the CPU. x: (..., in_features) -> (..., out_features).

    The weight is used as it is on every call while the module can train. (A cached copy in oneDNN's
    blocked layout runs faster, but nothing tells reliably when a trainable weight changed: fused
    AdamW updates it in place without bumping its version counter, and a stale copy silently
    evaluated old weights.) :func:`freeze` makes an inference-only copy of a model that does use
    such packed weights.
    """

    _packed: _Packed | None = None

    def _packed_for(self, x: torch.Tensor) -> torch.Tensor | None:
        """The prepacked weight if this call may use it (made by freeze, no gradient wanted, the oneDNN path)."""
        if self._packed is None or _needs_grad(x, self.weight, self.bias) or not _use_onednn(x, self.weight):
            return None
        return self._packed.get(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = self._packed_for(x)
        return linear(x, self.weight, self.bias) if packed is None else _onednn(x, packed, self.bias)

    def forward_gelu(self, x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
        """``F.gelu(self(x), approximate)``, the GELU fused into the GEMM in inference."""
        packed = self._packed_for(x)
        if packed is None:
            return linear_gelu(x, self.weight, self.bias, approximate)
        return _onednn(x, packed, self.bias, "gelu", approximate)


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
