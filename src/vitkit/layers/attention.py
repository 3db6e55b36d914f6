"""Multi-head self-attention (Vaswani et al.; ViT eq. 2): softmax(q k^T / sqrt(d_h) + bias) v.

One fused qkv Linear. The default path is ``F.scaled_dot_product_attention`` and never builds the
N x N matrix in Python; short sequences on the CPU (``SMALL_ATTENTION``) and ``return_attention=True``
take the explicit path, which with ``return_attention`` also returns the attention probabilities (for
rollout, pictures and the parity test). Plain self-attention over a short sequence on the CPU (no bias,
no attention dropout) runs ``short_attention``: all heads straight from the fused qkv, with a written-out
backward; ``vitkit.layers.fast_linear(False)`` turns it off with vitkit's other CPU fast paths. A
``KVCache`` lets a decoder feed only its new tokens at each generation step (incremental decoding, as
GPT-2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from . import linear as _linear
from .linear import Linear


# On the CPU, for short sequences, the explicit ops beat PyTorch's fused SDPA kernel where there is a bias
# (Swin's 7x7 windows: forward + backward 24.4 vs 29.1 ms), and short_attention (below) beats
# both where there is none: from the fused qkv at 17 tokens (the demo's ViT) short_attention 0.41,
# SDPA 0.47, explicit 0.50 ms; at 65 tokens 5.82, 7.13, 5.91 ms. At 197 tokens (ViT-S/16) the three are
# within 6% (SDPA 48.9, explicit 45.9, short_attention 46.8 ms) and SDPA, which never holds the N x N
# matrix, is used (batch 32, 2 threads; `python benchmarks/kernels.py`). Up to Nq * Nk = 128^2 the
# explicit path and short_attention are used.
SMALL_ATTENTION = 128 * 128
# Under bf16 (``linear.bf16_fast_path``) short_attention runs in bf16 and stays ahead of SDPA's bf16 kernel
# further: at ViT-S/16's 197 tokens forward + backward XX vs XX ms (`python benchmarks/kernels.py`, bf16
# section). Up to Nq * Nk = 256^2 Attention takes short_attention under bf16.
SMALL_ATTENTION_BF16 = 256 * 256


def _is_short(x: torch.Tensor, nq: int, nk: int) -> bool:
    return x.device.type == "cpu" and nq * nk <= SMALL_ATTENTION


def _takes_short(x: torch.Tensor, n: int) -> bool:
    """Whether self-attention over n tokens of ``x`` takes short_attention (given no bias, no dropout)."""
    return _linear._ENABLED and (_is_short(x, n, n)
                                 or (n * n <= SMALL_ATTENTION_BF16 and _linear.bf16_fast_path(x)))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_bias: torch.Tensor | None = None,
           dropout_p: float = 0.0, return_attention: bool = False):
    """The attention core, ``softmax(q k^T / sqrt(d) + attn_bias) v``, for layers whose q and k/v do
    not come from one fused qkv (spatial reduction, local neighbourhoods).

    q: (..., Nq, d); k: (..., Nk, d); v: (..., Nk, dv); ``attn_bias`` broadcastable to (..., Nq, Nk).
    Returns (..., Nq, dv): by SDPA, or by the explicit path (on the CPU for short sequences, where it
    is faster, and with ``return_attention``, which also returns the probabilities (..., Nq, Nk)).
    ``attn_bias`` may also be a bool mask (True = may attend), as SDPA's. ``dropout_p`` drops attention
    weights (pass 0 in eval).
    """
    if not return_attention and not _is_short(q, q.shape[-2], k.shape[-2]):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=dropout_p)
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)             # (..., Nq, Nk)
    if attn_bias is not None:
        attn = attn.masked_fill(~attn_bias, float("-inf")) if attn_bias.dtype == torch.bool else attn + attn_bias
    attn = attn.softmax(dim=-1)
    out = F.dropout(attn, dropout_p) @ v
    return (out, attn) if return_attention else out


def split_heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused qkv (B, N, 3 * nh * hd) -> q, k, v, each (B, nh, N, hd) (views, no copy)."""
    B, N, _ = qkv.shape
    return qkv.reshape(B, N, 3, num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)


def merge_heads(o: torch.Tensor) -> torch.Tensor:
    """(B, nh, N, hd) -> (B, N, nh * hd): the heads concatenated per token (the layout ``proj`` reads)."""
    B, nh, N, hd = o.shape
    return o.transpose(1, 2).reshape(B, N, nh * hd)


def _heads(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The fused qkv (B, N, 3 * nh * hd) -> (3, B * nh, N, hd): q, k, v of every head, each one (N, hd)
    matrix that the batched matmuls read without further copies (one copy makes it, except at B = 1)."""
    B, N, _ = qkv.shape
    return qkv.view(B, N, 3, num_heads, -1).permute(2, 0, 3, 1, 4).reshape(3, B * num_heads, N, -1)


class _ShortAttention(torch.autograd.Function):
    """O = P V with P = softmax(s Q K^T), s = d_h^-1/2, for every head at once from the fused qkv.

    Two layouts of the scores (``rows``): False keeps them transposed, S^T = s K Q^T, normalised over
    dim 1: in fp32, PyTorch's softmax over a short last dim is its slow case (at the demo's 17 tokens
    forward + backward 0.039 vs 0.029 ms over dim 1; at 65 tokens the last dim is as fast, 0.34 vs
    0.37; ``python benchmarks/kernels.py``). True keeps S = s Q K^T, normalised over its last dim:
    faster in bf16 at ViT-S's 197 tokens (kernels.md, bf16 sections). The bmm's read transposed views
    at no cost; s is applied inside the GEMMs (``baddbmm``'s alpha), the softmax overwrites the scores.
    Backward, from dO: dV = P^T dO; dP = dO V^T; dS = P * (dP - rowsum(dP * P)) (the softmax
    Jacobian); dQ = s dS K; dK = s dS^T Q (transposed alike for ``rows=False``). dQ, dK, dV are
    written into one (3, B * nh, N, hd) buffer, which one copy rearranges into the qkv Linear's layout
    (no stack of three gradients).
    """

    @staticmethod
    def forward(ctx, qkv, num_heads, rows=False):
        t = _heads(qkv, num_heads)                                        # (3, B*nh, N, hd)
        q, k, v = t
        a, b = (q, k) if rows else (k, q)
        p = _scaled_bmm(a, b.transpose(1, 2), q.shape[-1] ** -0.5)        # S, or S^T
        p = torch._softmax(p, -1 if rows else 1, False, out=p)            # P, or P^T, in place
        ctx.save_for_backward(t, p)
        ctx.rows = rows
        o = torch.bmm(p if rows else p.transpose(1, 2), v)               # (B*nh, N, hd)
        return merge_heads(o.view(qkv.shape[0], -1, *o.shape[1:]))

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        if torch.is_autocast_enabled("cpu"):  # a backward called under autocast keeps the forward's dtype
            with torch.autocast("cpu", enabled=False):
                return _short_attention_backward(*ctx.saved_tensors, g, ctx.rows), None, None
        return _short_attention_backward(*ctx.saved_tensors, g, ctx.rows), None, None


def _scaled_bmm(a: torch.Tensor, b: torch.Tensor, alpha: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """alpha * (a @ b), batched, the scale applied by the GEMM (no pass over the product)."""
    zero = a.new_zeros(()).expand(a.shape[0], a.shape[1], b.shape[2])   # ignored at beta=0
    return torch.baddbmm(zero, a, b, beta=0, alpha=alpha, out=out)


def _short_attention_backward(t: torch.Tensor, p: torch.Tensor, g: torch.Tensor, rows: bool = False) -> torch.Tensor:
    """d qkv (B, N, 3 D) from the saved heads t (3, B*nh, N, hd), P (``rows``) or P^T, and dO = g (B, N, D)."""
    q, k, v = t
    B, N, D = g.shape
    scale = q.shape[-1] ** -0.5
    do = g.to(t.dtype).reshape(B, N, -1, q.shape[-1]).transpose(1, 2).reshape(q.shape)  # (B*nh, N, hd)
    dt = torch.empty_like(t)
    pt = p.transpose(1, 2) if rows else p                                    # P^T
    torch.bmm(pt, do, out=dt[2])                                              # dV = P^T dO
    if rows:
        ds = torch._softmax_backward_data(torch.bmm(do, v.transpose(1, 2)), p, -1, p.dtype)   # dS
        dst = ds.transpose(1, 2)
    else:
        dst = torch._softmax_backward_data(torch.bmm(v, do.transpose(1, 2)), p, 1, p.dtype)  # dS^T
    _scaled_bmm(dst.transpose(1, 2), k, scale, out=dt[0])                    # dQ = s dS K
    _scaled_bmm(dst, q, scale, out=dt[1])                                    # dK = s dS^T Q
    nh = q.shape[0] // B
    return dt.view(3, B, nh, N, -1).permute(1, 3, 0, 2, 4).reshape(B, N, 3 * D)


def short_attention(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Multi-head self-attention ``softmax(q k^T / sqrt(d_h)) v`` from the fused qkv, (B, N, 3 D) ->
    (B, N, D), heads concatenated; no bias, no dropout. Once differentiable (no double backward: for a
    gradient penalty, turn it off with ``vitkit.layers.fast_linear(False)``).

    The same function as splitting q, k, v and calling :func:`attend`, in fewer passes over memory:
    one copy brings every head's q, k, v into place and one merges the heads; in training one
    autograd node (``_ShortAttention``) instead of about ten. It suits short sequences on the CPU,
    where those passes and per-op costs, not the N x N products, take the time: at the demo's 17
    tokens forward + backward take 0.41 ms instead of 0.50 (0.47 by SDPA), and its whole
    training step is 1.03x faster (``python benchmarks/kernels.py``). For long sequences use SDPA
    (``attend``), which never builds the N x N matrix.
    """
    if torch.is_autocast_enabled("cpu"):  # the written-out backward keeps one dtype: autocast off inside
        # bf16 where vitkit's bf16 fast paths run (a CPU with native bf16), else fp32 (bf16 matmuls are
        # slow on CPUs without a bf16 unit)
        dtype = torch.bfloat16 if _linear.bf16_fast_path(qkv) else torch.float32
        with torch.autocast("cpu", enabled=False):
            return _ShortAttention.apply(qkv.to(dtype), num_heads, _rows(dtype, qkv.shape[1]))
    return _ShortAttention.apply(qkv, num_heads, _rows(qkv.dtype, qkv.shape[1]))


# Scores as S (softmax over the last dim) rather than S^T for bf16 from this many tokens on: at ViT-S's 197
# tokens forward + backward XX vs XX ms; at the demo's 17 the transposed layout stays ahead, XX vs XX
# (bf16 softmax backward over a short last dim is slow) (`python benchmarks/kernels.py`, bf16 sections).
ROWS_FROM_BF16 = 64


def _rows(dtype: torch.dtype, n: int) -> bool:
    return dtype == torch.bfloat16 and n >= ROWS_FROM_BF16


class KVCache:
    """The keys and values of the tokens one attention layer has already seen, for incremental decoding.

    Each call feeds only the new tokens; their keys/values are appended here (along the sequence
    axis) and their queries attend to every cached token and to each other. One cache per layer;
    ``k``, ``v``: (B, nh, L, hd), None until the first call.
    """

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new tokens' k, v (B, nh, n, hd); return all keys and values so far (B, nh, L + n, hd)."""
        if self.k is not None:
            if self.k.shape[:2] != k.shape[:2]:
                raise ValueError(f"the cache holds batch/heads {tuple(self.k.shape[:2])}, the new tokens "
                                 f"{tuple(k.shape[:2])}: use one cache per sequence batch (reset it between batches)")
            k, v = torch.cat([self.k, k], dim=-2), torch.cat([self.v, v], dim=-2)
        self.k, self.v = k, v
        return k, v

    def reset(self) -> None:
        self.k = self.v = None


class Attention(nn.Module):
    """x: (B, N, D) -> (B, N, D); ``attn_bias``: additive logits bias broadcastable to (B, heads, N, N).

    Any leading dims are batch dims: x (B, nW, N, D) attends within each of the nW groups (windows,
    rows), with a bias broadcastable to (B, nW, heads, N, N), e.g. a per-window (nW, heads, N, N).

    ``kv_cache`` (x: (B, n, D) only): the n new tokens attend to the L cached ones and to themselves,
    and their keys/values are appended to the cache; ``attn_bias`` is then broadcastable to
    (B, heads, n, L + n).
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None,
                return_attention: bool = False, kv_cache: KVCache | None = None,
                residual: torch.Tensor | None = None):
        """``residual`` (x's shape): return ``residual + attention(x)``, the add fused into ``proj``'s GEMM
        where oneDNN runs it (vitkit's Block passes its residual stream)."""
        *lead, N, D = x.shape
        if kv_cache is not None and len(lead) != 1:
            raise ValueError(f"a KV cache needs tokens (B, N, D), got shape {tuple(x.shape)}")
        if len(lead) != 1:  # fold the leading dims into one batch dim (SDPA's fast kernels are 4D)
            if attn_bias is not None and attn_bias.ndim > 3:
                attn_bias = attn_bias.expand(*lead, self.num_heads, N, N).reshape(-1, self.num_heads, N, N)
            res = None if residual is None else residual.reshape(-1, N, residual.shape[-1])
            out = Attention.forward(self, x.reshape(-1, N, D), attn_bias, return_attention, residual=res)
            if return_attention:
                return out[0].view(*lead, N, -1), out[1].view(*lead, self.num_heads, N, N)
            return out.view(*lead, N, -1)
        if (attn_bias is None and not return_attention and kv_cache is None and _takes_short(x, N)
                and not (self.training and self.attn_drop)):
            out = short_attention(self.qkv(x), self.num_heads)             # (B, N, nh*hd)
        else:
            q, k, v = split_heads(self.qkv(x), self.num_heads)         # each (B, nh, N, hd)
            if kv_cache is not None:
                k, v = kv_cache.append(k, v)                            # each (B, nh, L + N, hd)
            out = attend(q, k, v, attn_bias, self.attn_drop if self.training else 0.0, return_attention)
            if return_attention:
                out, attn = out
            out = merge_heads(out)                                      # (B, N, nh*hd)
        if residual is None:
            out = self.proj_drop(self.proj(out))
        elif type(self.proj) is Linear and not (self.training and self.proj_drop.p):
            out = self.proj(out, residual=residual)                     # residual + proj(out), one GEMM
        else:
            out = residual + self.proj_drop(self.proj(out))
        return (out, attn) if return_attention else out

    def forward_first(self, x: torch.Tensor, n: int, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """The output for the first ``n`` tokens only: x (B, N, D) -> (B, n, D), every token still a key
        and a value; the other tokens' queries are not computed. What a head reading the class token
        needs of the last block (``VisionTransformer.forward``). ``attn_bias`` as in forward."""
        B, N, D = x.shape
        dq = self.num_heads * self.head_dim
        if type(self.qkv) is Linear:
            w, b = self.qkv.weight, self.qkv.bias
            q = _linear.linear(x[:, :n].contiguous(), w[:dq], None if b is None else b[:dq])  # (B, n, nh*hd)
            kv = _linear.linear(x, w[dq:], None if b is None else b[dq:])                      # (B, N, 2 nh*hd)
        else:                                                             # e.g. quantized: the fused layer
            qkv = self.qkv(x)
            q, kv = qkv[:, :n, :dq], qkv[..., dq:]
        q = q.view(B, n, self.num_heads, -1).transpose(1, 2)                               # (B, nh, n, hd)
        k, v = kv.view(B, N, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)       # (B, nh, N, hd)
        if attn_bias is not None and attn_bias.shape[-2] != 1:
            attn_bias = attn_bias[..., :n, :]
        out = attend(q, k, v, attn_bias, self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(merge_heads(out)))
