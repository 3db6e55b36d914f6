"""Gated positional self-attention (ConViT, d'Ascoli et al. 2021, eqs. 5-8).

Each head h mixes content attention with a learned positional attention through a gate:

    A^h = (1 - sigma(lambda_h)) softmax(Q_h K_h^T / sqrt(d_h)) + sigma(lambda_h) softmax(v_pos^h . r_ij),
    A^h <- A^h / sum_j A^h_ij

r_ij = (dx, dy, dx^2 + dy^2) is the offset from query patch i to key patch j, so v_pos^h . r_ij is a
quadratic in the offset. The *locality* initialisation (Sec. 3) sets v_pos^h = alpha (2 Dx_h, 2 Dy_h, -1),
i.e. logits -alpha ||delta - Delta_h||^2 + const: head h attends around its own offset Delta_h on a
sqrt(heads) x sqrt(heads) grid of offsets, like a convolution's kernel; alpha (``locality_strength``)
sets how sharply. With lambda_h = 1 (sigma = 0.73) training starts mostly positional and each head
learns how much content to use. The attention is built explicitly (the positional part is not a
dot product), on patch tokens only: ConViT adds its class token after the GPSA blocks.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import merge_heads, split_heads
from .linear import Linear


def relative_offsets(grid_size: tuple[int, int]) -> torch.Tensor:
    """r_ij for a (gh, gw) grid in raster order: (N, N, 3) = (dx, dy, dx^2 + dy^2), dx = x_j - x_i."""
    gh, gw = grid_size
    y, x = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    x, y = x.flatten().float(), y.flatten().float()
    dx, dy = x[None, :] - x[:, None], y[None, :] - y[:, None]      # (N, N): key minus query
    return torch.stack([dx, dy, dx ** 2 + dy ** 2], dim=-1)


class GPSA(nn.Module):
    """x: (B, N, D) patch tokens on a fixed ``grid_size`` (N = gh * gw) -> (B, N, D).

    Same call as ``Attention`` (so ``Block(attn=GPSA(...))`` works); ``attn_bias`` is not supported.
    ``return_attention`` also returns the gated attention (B, heads, N, N). q, k, v come from one fused
    Linear; ``gating_param`` holds lambda_h, ``pos_proj`` holds v_pos (3 -> heads).
    """

    def __init__(self, dim: int, num_heads: int, grid_size: tuple[int, int], qkv_bias: bool = False,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, locality_strength: float = 1.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.grid_size = tuple(grid_size)
        self.locality_strength = locality_strength
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.pos_proj = Linear(3, num_heads)
        self.gating_param = nn.Parameter(torch.ones(num_heads))
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.register_buffer("rel", relative_offsets(self.grid_size), persistent=False)
        self.local_init()

    @torch.no_grad()
    def local_init(self) -> None:
        """Locality init (ConViT Sec. 3): values = identity, head h peaks at offset Delta_h with strength alpha.

        Heads sit on a k x k grid of offsets (k = floor(sqrt(heads)), centred); extra heads start flat.
        """
        D = self.qkv.in_features
        self.qkv.weight[2 * D:].copy_(torch.eye(D))                   # v = x at init
        w = self.pos_proj.weight                                      # (heads, 3): (dx, dy, d^2) weights
        w.zero_()
        k = int(self.num_heads ** 0.5)
        center = (k - 1) / 2
        for h1 in range(k):
            for h2 in range(k):
                h = h1 + k * h2
                w[h] = torch.tensor([2 * (h1 - center), 2 * (h2 - center), -1.0])  # Delta_h = (h1, h2) - centre
        w.mul_(self.locality_strength)
        nn.init.zeros_(self.pos_proj.bias)

    def positional_attention(self) -> torch.Tensor:
        """softmax_j(v_pos^h . r_ij): (heads, N, N), independent of the input."""
        return self.pos_proj(self.rel).permute(2, 0, 1).softmax(dim=-1)

    def gate(self) -> torch.Tensor:
        """sigma(lambda_h): (heads,), the positional share of each head."""
        return torch.sigmoid(self.gating_param)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None, return_attention: bool = False):
        if attn_bias is not None:
            raise ValueError("GPSA has its own positional attention and takes no attn_bias")
        B, N, D = x.shape
        if N != self.rel.shape[0]:
            raise ValueError(f"GPSA was built for a {self.grid_size} grid ({self.rel.shape[0]} patch tokens), got {N} "
                             "tokens (GPSA takes patch tokens only, no class token)")
        q, k, v = split_heads(self.qkv(x), self.num_heads)                   # each (B, nh, N, hd)
        content = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)   # (B, nh, N, N)
        g = self.gate().view(1, -1, 1, 1)
        attn = (1.0 - g) * content + g * self.positional_attention()[None]
        attn = attn / attn.sum(dim=-1, keepdim=True)                           # normalised (eq. 8)
        out = merge_heads(self.attn_drop(attn) @ v)                            # (B, N, nh*hd)
        out = self.proj_drop(self.proj(out))
        return (out, attn) if return_attention else out

