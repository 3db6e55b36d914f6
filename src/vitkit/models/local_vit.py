"""Vision transformers whose attention sees only part of the map: axial attention (Ho et al. 2019,
"Axial Attention in Multidimensional Transformers") and stand-alone local self-attention
(Ramachandran et al. 2019, "Stand-Alone Self-Attention in Vision Models").

    patch embedding:  P x P patches -> D (a conv, kernel = stride = P) -> the (B, h, w, D) token map
                      [+ a learned absolute position table (ViT eq. 1's E_pos), when ``pos_embed``]
    blocks:           ``depth`` pre-LN ``Block`` s (ViT eqs. 2-3) whose attention is
        axial:  row attention (each token attends to the w tokens of its row), then column
                attention (the h tokens of its column), alternating (Ho et al. Sec. 3, "axial
                attention layers"; unmasked, the encoder form of Axial-DeepLab): a row block and
                the column block after it connect every token to every other for O(hw (h + w))
                instead of O((hw)^2);
        local:  each token (i, j) attends to its k x k neighbourhood N_k(i, j) with relative
                embeddings (Ramachandran et al. eq. 3):
                    y_ij = sum_{(a,b) in N_k(i,j)} softmax_ab(q_ij^T k_ab + q_ij^T r_{a-i, b-j}) v_ab
                (with the 1/sqrt(d) scale of ViT), r = [row-offset embedding | column-offset
                embedding] (eq. 4's factorisation); neighbours outside the map are masked out.
    head:             LayerNorm -> global average pool over the tokens -> Linear

The layers are ``vitkit.layers.AxialAttention`` / ``LocalAttention`` in the shared ``Block``; the
model is isotropic (one width and resolution throughout) like ViT, with ViT's parameter names
(``patch_embed``, ``pos_embed``, ``blocks.i``, ``norm``, ``head``). Ramachandran et al. replace the
spatial convolutions of a ResNet and keep its stem; here the stem is ViT's patch embedding, so the
comparison with ViT and the other families isolates the attention pattern. Local attention needs no
absolute position (the relative embeddings place every neighbour; the paper uses none); axial
attention without one is blind to where a row or a column sits, so it keeps ViT's learned table.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import nn

from ..layers import AxialAttention, Block, LearnedPosEmbed, LocalAttention, PatchEmbed, check_image, to_2tuple
from ..layers.init import init_patch_embed_, init_transformer_
from .heads import linear_head, pack_intermediates
from .registry import build_from_config, register_model
from .vit import MNIST

ATTENTIONS = ("axial", "local")


@dataclass(frozen=True)
class LocalViTConfig:
    img_size: int | tuple[int, int] = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 192
    depth: int = 12                  # blocks; axial: even, row and column blocks alternating
    num_heads: int = 3
    attention: str = "local"         # "axial" (row / column) or "local" (k x k neighbourhood)
    kernel_size: int = 7             # k of local attention (odd); unused by axial attention
    pos_embed: bool = False          # a learned absolute table at the input (axial needs one)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0      # stochastic depth, linear over the blocks
    norm_eps: float = 1e-6
    dynamic_img_size: bool = False   # any H, W divisible by P (the position table is resampled)
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        if isinstance(self.img_size, list):  # from config.json
            object.__setattr__(self, "img_size", tuple(self.img_size))
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.depth < 1 or (self.attention == "axial" and self.depth % 2):
            raise ValueError(f"depth must be positive (and even for axial attention: a row block, then a "
                             f"column block), got {self.depth}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.attention == "local" and self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a neighbourhood centred on its token), got {self.kernel_size}")


class LocalViT(nn.Module):
    """Axial or local-attention ViT classifier. (B, C, H, W) -> logits (B, num_classes).

    ``forward_features`` -> the normed token map (B, h, w, num_features), channels-last;
    ``forward_head`` average-pools it and classifies; ``forward_intermediates`` also returns every
    block's input map and, on request, every block's attention probabilities (axial row blocks
    (B, h, heads, w, w), column blocks (B, w, heads, h, h); local (B, heads, h*w, 1, k*k)).
    """

    def __init__(self, cfg: LocalViTConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.num_classes = cfg.num_classes
        self.num_features = D
        self.img_size = to_2tuple(cfg.img_size)
        self.patch_embed = PatchEmbed(self.img_size, cfg.patch_size, cfg.in_chans, D, strict_img_size=False)
        self.grid_size = self.patch_embed.grid_size
        self.input_size = (cfg.in_chans, *self.img_size)  # (C, H, W)
        self.pos_embed = LearnedPosEmbed(self.grid_size, D, num_prefix_tokens=0) if cfg.pos_embed else None
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        dpr = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList([
            Block(D, cfg.num_heads, cfg.mlp_ratio, drop=cfg.drop_rate, drop_path=dpr[i], norm_eps=cfg.norm_eps,
                  attn=self._attention(cfg, i))
            for i in range(cfg.depth)])
        self.norm = nn.LayerNorm(D, eps=cfg.norm_eps)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = linear_head(D, cfg.num_classes)
        self.init_weights()

    @staticmethod
    def _attention(cfg: LocalViTConfig, i: int) -> nn.Module:
        kw = dict(qkv_bias=cfg.qkv_bias, attn_drop=cfg.attn_drop_rate, proj_drop=cfg.drop_rate)
        if cfg.attention == "axial":  # even blocks attend along rows, odd blocks along columns
            return AxialAttention(cfg.embed_dim, cfg.num_heads, axis="row" if i % 2 == 0 else "col", **kw)
        return LocalAttention(cfg.embed_dim, cfg.num_heads, kernel_size=cfg.kernel_size, **kw)

    # ---------------------------------------------------------------- init and parameter groups
    def init_weights(self) -> None:
        init_transformer_(self)                      # Linear: trunc normal 0.02; LayerNorm: 1, 0
        init_patch_embed_(self.patch_embed.proj)     # patch embed initialised like a Linear (MAE)
        for name, p in self.named_parameters():  # position tables and relative embeddings at std 0.02
            if name.startswith("pos_embed.") or name.endswith(("rel_row", "rel_col")):
                nn.init.trunc_normal_(p, std=0.02)

    def reset_classifier(self, num_classes: int) -> None:
        """Install a new zero-initialised linear head (``num_classes=0``: no head, pooled features)."""
        self.num_classes = num_classes
        self.head = linear_head(self.num_features, num_classes, zero=True, like=next(self.parameters()))

    def no_weight_decay(self) -> set[str]:
        """The position table and the relative embeddings (norms and biases are ndim < 2)."""
        return {n for n, _ in self.named_parameters()
                if n.startswith("pos_embed.") or n.endswith(("rel_row", "rel_col"))}

    # ---------------------------------------------------------------- forward
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the token map (B, h, w, D) after the position table."""
        check_image(x, self.cfg.in_chans, None if self.cfg.dynamic_img_size else self.img_size,
                    to_2tuple(self.cfg.patch_size), what=self.cfg.name or "LocalViT")
        grid = self.patch_embed.dynamic_grid(*x.shape[-2:])
        x = self.patch_embed(x)                                          # (B, h*w, D)
        if self.pos_embed is not None:
            x = self.pos_embed(x, grid)
        return rearrange(self.pos_drop(x), "b (h w) d -> b h w d", h=grid[0])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> normed token map (B, h, w, num_features)."""
        x = self._embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_intermediates(self, x: torch.Tensor, return_attention: bool = False) -> dict:
        """``features`` (as forward_features), ``hidden_states``: the map before every block and after
        the last (depth + 1 of (B, h, w, D)), and with ``return_attention`` ``attentions`` (one per block)."""
        x = self._embed(x)
        hidden, attns = [], []
        for blk in self.blocks:
            hidden.append(x)
            if return_attention:
                x, a = blk(x, return_attention=True)
                attns.append(a)
            else:
                x = blk(x)
        hidden.append(x)
        return pack_intermediates(self.norm(x), attns, return_attention, hidden_states=hidden)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, h, w, D) -> global average pool (B, D) -> logits (B, num_classes)."""
        x = self.head_drop(x.mean(dim=(1, 2)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# -------------------------------------------------------------------- registered variants
def _local_vit(base: LocalViTConfig, **overrides) -> LocalViT:
    return LocalViT(build_from_config(LocalViTConfig, base, overrides))


@register_model
def axial_vit_nano_28(**kw) -> LocalViT:
    """Axial attention for 28x28 digits: P=4 (7x7 map), D=64, 4 blocks (row, column, row, column), 4 heads,
    MLP x2, learned position table, GAP. (P=2 learned no faster per epoch on mnist5k and cost 4x a step.)"""
    return _local_vit(LocalViTConfig(**MNIST, patch_size=4, embed_dim=64, depth=4, num_heads=4, attention="axial",
                                     pos_embed=True, mlp_ratio=2.0, name="axial_vit_nano_28"), **kw)


@register_model
def local_vit_nano_28(**kw) -> LocalViT:
    """Stand-alone local attention for 28x28 digits: P=4 (7x7 map), 3x3 neighbourhoods, D=64, 4 blocks,
    4 heads, MLP x2, relative embeddings only, GAP. (On mnist5k 3x3 learned faster than 5x5, and cheaper.)"""
    return _local_vit(LocalViTConfig(**MNIST, patch_size=4, embed_dim=64, depth=4, num_heads=4, attention="local",
                                     kernel_size=3, mlp_ratio=2.0, name="local_vit_nano_28"), **kw)
