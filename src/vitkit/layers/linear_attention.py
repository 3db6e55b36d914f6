"""ReLU linear attention and multi-scale aggregation (EfficientViT, Cai et al. 2023, Sec. 3.1).

Softmax attention costs O(N^2) in the number of tokens N. Replacing the similarity
exp(q_i . k_j) by ReLU(q_i) . ReLU(k_j) lets the sums be reordered (eq. 2-3):

    O_i = sum_j ReLU(q_i) ReLU(k_j)^T v_j / sum_j ReLU(q_i) ReLU(k_j)^T
        = ReLU(q_i) (sum_j ReLU(k_j)^T v_j) / ReLU(q_i) (sum_j ReLU(k_j)^T)

so (ReLU(K)^T V) (d x d_v) and ReLU(K)^T 1 (d) are computed once, and the cost is O(N d d_v).
``relu_linear_attention`` is that O(N) form; ``relu_quadratic_attention`` is the same function
with the N x N matrix written out (the reference, and the attention maps on request).

Multi-scale aggregation (Fig. 3): q/k/v from a 1x1 conv, plus, per scale s, a depthwise s x s conv
and a grouped 1x1 conv (one group per q, k or v of each head) that aggregate nearby tokens into
extra q/k/v; every (scale, head) attends on its own, outputs are concatenated and projected.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def relu_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          eps: float = 1e-15) -> torch.Tensor:
    """O(N): ``ReLU(Q) (ReLU(K)^T V) / (ReLU(Q) ReLU(K)^T 1)``. q, k: (..., N, d); v: (..., N, dv) ->
    (..., N, dv). Computed in float32 (the sums overflow half precision), returned in v's dtype."""
    dtype = v.dtype
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, v = F.relu(q.float()), F.relu(k.float()), v.float()
        kv = k.transpose(-2, -1) @ v                                # (..., d, dv): sum_j k_j^T v_j
        k_sum = k.sum(dim=-2, keepdim=True)                         # (..., 1, d): sum_j k_j
        num = q @ kv                                                # (..., N, dv)
        den = (q * k_sum).sum(dim=-1, keepdim=True)                 # (..., N, 1)
        return (num / (den + eps)).to(dtype)


def relu_quadratic_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-15,
                             return_attention: bool = False):
    """The same function in O(N^2): A = ReLU(Q) ReLU(K)^T, rows normalised, times V.
    q, k: (..., N, d); v: (..., N, dv) -> (..., N, dv) [and A normalised, (..., N, N)]."""
    dtype = v.dtype
    with torch.autocast(device_type=q.device.type, enabled=False):
        a = F.relu(q.float()) @ F.relu(k.float()).transpose(-2, -1)  # (..., N, N)
        a = a / (a.sum(dim=-1, keepdim=True) + eps)
        out = (a @ v.float()).to(dtype)
    return (out, a) if return_attention else out


def _channels_last(x: torch.Tensor) -> bool:
    """True for a 4-d map stored channels-last (and not also channels-first, as a 1x1 map is)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class MultiScaleLinearAttention(nn.Module):
    """EfficientViT's lightweight multi-scale linear attention (LiteMLA). x: (B, C, H, W) -> (B, C_out, H, W).

    ``heads`` defaults to ``in_channels // head_dim * heads_ratio``. q/k/v: a 1x1 conv to
    3 * heads * head_dim channels, laid out head by head as [q | k | v]; each scale in ``scales`` adds
    ``heads`` more (depthwise s x s conv, then a 1x1 conv grouped per q/k/v of each head). The
    (1 + len(scales)) * heads groups attend with ReLU linear attention; ``proj`` (1x1 conv + BatchNorm)
    maps their concatenation to ``out_channels``. With ``return_attention`` the quadratic reference
    path runs and the maps come back as (B, (1 + len(scales)) * heads, N, N).

    The output keeps the input's memory layout. A channels-last map (EfficientViT's fused inference
    mode) takes a path without layout copies: q, k, v are views of each scale's map, and the groups'
    outputs are written straight into the channels-last input of ``proj`` (same function).
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, head_dim: int = 8,
                 heads: int | None = None, heads_ratio: float = 1.0, scales: tuple[int, ...] = (5,),
                 eps: float = 1e-15):
        super().__init__()
        out_channels = out_channels or in_channels
        heads = heads or int(in_channels // head_dim * heads_ratio)
        if heads < 1:
            raise ValueError(f"{in_channels} channels give no head of dim {head_dim}; pass heads=")
        inner = heads * head_dim
        self.heads, self.head_dim, self.scales, self.eps = heads, head_dim, tuple(scales), eps
        self.qkv = nn.Conv2d(in_channels, 3 * inner, 1, bias=False)
        self.aggreg = nn.ModuleList([
            nn.Sequential(
                nn.Conv2d(3 * inner, 3 * inner, s, padding=s // 2, groups=3 * inner, bias=False),  # depthwise
                nn.Conv2d(3 * inner, 3 * inner, 1, groups=3 * heads, bias=False))  # per q/k/v of a head
            for s in self.scales])
        self.proj = nn.Sequential(nn.Conv2d(inner * (1 + len(self.scales)), out_channels, 1, bias=False),
                                  nn.BatchNorm2d(out_channels))

    def multi_scale_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> q, k, v, each (B, G, H*W, head_dim) with G = (1 + len(scales)) * heads.

        On a channels-last map (what EfficientViT's fused inference mode runs on) q, k and v are views
        of the concatenated map, whose memory is already token by token; a channels-first map is
        copied once, as before."""
        qkv = self.qkv(x)
        qkv = torch.cat([qkv] + [agg(qkv) for agg in self.aggreg], dim=1)
        if _channels_last(qkv):
            return self._split(qkv)
        return rearrange(qkv, "b (g three d) h w -> three b g (h w) d", three=3, d=self.head_dim).unbind(0)

    def _split(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A channels-last (B, g 3 d, H, W) map -> q, k, v: three (B, g, H*W, d) views of its memory."""
        B, C, H, W = qkv.shape  # memory (B, H, W, C): C = (g three d)
        t = qkv.permute(0, 2, 3, 1).reshape(B, H * W, C // (3 * self.head_dim), 3, self.head_dim)
        return t.permute(3, 0, 2, 1, 4).unbind(0)

    def _forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """forward on a channels-last map, the same function without concatenating the scales' q/k/v
        maps: each scale's groups attend on views of its own map and write their outputs into one
        (B, H, W, G d) buffer, which ``proj`` reads as a channels-last map."""
        B, _, H, W = x.shape
        qkv = self.qkv(x)
        maps = [qkv] + [agg(qkv) for agg in self.aggreg]  # channels-last maps (_split copies any other)
        width = self.heads * self.head_dim
        out = None
        for i, m in enumerate(maps):
            o = relu_linear_attention(*self._split(m), self.eps)       # (B, heads, N, d)
            if out is None:
                out = torch.empty(B, H, W, len(maps) * width, dtype=o.dtype, device=o.device)
            out[..., i * width:(i + 1) * width].view(B, H * W, self.heads, self.head_dim).copy_(o.transpose(1, 2))
        return self.proj(out.permute(0, 3, 1, 2))

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if not return_attention and _channels_last(x):
            return self._forward_channels_last(x)
        H, W = x.shape[-2:]
        q, k, v = self.multi_scale_qkv(x)
        if return_attention:
            out, attn = relu_quadratic_attention(q, k, v, self.eps, return_attention=True)
        else:
            out = relu_linear_attention(q, k, v, self.eps)              # (B, G, N, d)
        if _channels_last(x):  # the map for proj in the input's layout: (B, H, W, G d) in memory
            B, G, _, d = out.shape
            out = out.transpose(1, 2).reshape(B, H, W, G * d).permute(0, 3, 1, 2)
        else:
            out = rearrange(out, "b g (h w) d -> b (g d) h w", h=H, w=W)
        out = self.proj(out)
        return (out, attn) if return_attention else out

    def extra_repr(self) -> str:
        return f"heads={self.heads}, head_dim={self.head_dim}, scales={self.scales}"
