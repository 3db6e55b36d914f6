"""Multi-head self-attention (Vaswani et al.; ViT eq. 2): softmax(q k^T / sqrt(d_h) + bias) v.

One fused qkv Linear. The default path is ``F.scaled_dot_product_attention`` and never builds the
N x N matrix in Python; short sequences on the CPU (``SMALL_ATTENTION``) and ``return_attention=True``
take the explicit path, which with ``return_attention`` also returns the attention probabilities (for
rollout, pictures and the parity test). A ``KVCache`` lets a decoder feed only its new tokens at each
generation step (incremental decoding, as GPT-2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import Linear


# On the CPU, PyTorch's fused SDPA kernel costs more than the three explicit ops for short sequences:
# forward + backward at 17 tokens (the demo's ViT) 0.46 vs 0.42 ms, at 65 tokens 8.1 vs 6.3 ms; at 197 tokens
# (ViT-S/16) SDPA is level (58 vs 59 ms) and never holds the N x N matrix (batch 32, 2 threads;
# `python benchmarks/kernels.py`). Up to Nq * Nk = 128^2 the explicit path is used.
SMALL_ATTENTION = 128 * 128


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
    if not return_attention and not (q.device.type == "cpu" and q.shape[-2] * k.shape[-2] <= SMALL_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=dropout_p)
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)             # (..., Nq, Nk)
    if attn_bias is not None:
        attn = attn.masked_fill(~attn_bias, float("-inf")) if attn_bias.dtype == torch.bool else attn + attn_bias
    attn = attn.softmax(dim=-1)
    out = F.dropout(attn, dropout_p) @ v
    return (out, attn) if return_attention else out


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
                return_attention: bool = False, kv_cache: KVCache | None = None):
        *lead, N, D = x.shape
        if kv_cache is not None and len(lead) != 1:
            raise ValueError(f"a KV cache needs tokens (B, N, D), got shape {tuple(x.shape)}")
        if len(lead) != 1:  # fold the leading dims into one batch dim (SDPA's fast kernels are 4D)
            if attn_bias is not None and attn_bias.ndim > 3:
                attn_bias = attn_bias.expand(*lead, self.num_heads, N, N).reshape(-1, self.num_heads, N, N)
            out = Attention.forward(self, x.reshape(-1, N, D), attn_bias, return_attention)
            if return_attention:
                return out[0].view(*lead, N, D), out[1].view(*lead, self.num_heads, N, N)
            return out.view(*lead, N, D)
        B = lead[0]
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)                                         # each (B, nh, N, hd)
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)                                # each (B, nh, L + N, hd)
        out = attend(q, k, v, attn_bias, self.attn_drop if self.training else 0.0, return_attention)
        if return_attention:
            out, attn = out
        out = out.transpose(1, 2).reshape(B, N, D)                      # (B, N, nh*hd)
        out = self.proj_drop(self.proj(out))
        return (out, attn) if return_attention else out
