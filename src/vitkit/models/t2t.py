"""T2T-ViT (Yuan et al. 2021, "Tokens-to-Token ViT: Training Vision Transformers from Scratch on ImageNet").

    T    = T2TModule(image)                 soft splits + token transformers (layers/t2t.py), (B, N, D)
    z_0  = [x_class; T] + E_pos             fixed sin-cos table (zeros on the class token)
    z_L  = Blocks(z_0)                      a deep-narrow backbone of the shared pre-LN Block
    y    = head(LN(z_L^0))

vitkit's T2T layers are the paper's transformer layers (``layers/t2t.py``), so the models are named
as the official code names them, ``t2t_vit_t_*``: T2T-ViT_t-14 D=384, 14 blocks, 6 heads, MLP x3;
_t-19 D=448, 19 blocks, 7 heads; _t-24 D=512, 24 blocks, 8 heads (MLP x3); token_dim 64, splits
(7,4,2), (3,2,1), (3,2,1) at 224px. The official ``t2t_vit_7`` / ``t2t_vit_14`` (no ``_t``) use
Performer T2T layers, which vitkit does not implement; ``t2t_vit_t_7`` is T2T-ViT-7's size (D=256,
7 blocks, 4 heads, MLP x2) with transformer layers, a model the official code does not have.
The paper's position table is 1D sinusoidal; vitkit uses its 2D sin-cos table (both fixed).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..layers import Block, Linear, SinCosPosEmbed, check_image, to_2tuple
from ..layers.t2t import T2TModule
from .heads import linear_head, pack_intermediates
from .registry import build_from_config, register_model


@dataclass(frozen=True)
class T2TViTConfig:
    img_size: int | tuple[int, int] = 224
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 384
    depth: int = 14
    num_heads: int = 6
    mlp_ratio: float = 3.0
    qkv_bias: bool = False
    token_dim: int = 64
    splits: tuple[tuple[int, int, int], ...] = ((7, 4, 2), (3, 2, 1), (3, 2, 1))  # (kernel, stride, padding)
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "img_size", self.img_size if isinstance(self.img_size, int) else tuple(self.img_size))
        object.__setattr__(self, "splits", tuple(tuple(int(v) for v in s) for s in self.splits))
        if any(len(s) != 3 for s in self.splits):
            raise ValueError(f"splits are (kernel, stride, padding) triples, got {self.splits}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")


class T2TViT(nn.Module):
    """(B, C, H, W) -> logits (B, num_classes); ``forward_features`` -> normed tokens (B, 1 + N, D)."""

    def __init__(self, cfg: T2TViTConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.num_classes, self.num_features, self.num_prefix_tokens = cfg.num_classes, D, 1
        img = to_2tuple(cfg.img_size)
        self.input_size = (cfg.in_chans, *img)
        self.tokens_to_token = T2TModule(img, cfg.in_chans, D, cfg.token_dim, cfg.splits, norm_eps=cfg.norm_eps)
        self.grid_size = self.tokens_to_token.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = SinCosPosEmbed(self.grid_size, D, num_prefix_tokens=1)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        dpr = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList([
            Block(D, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, drop=cfg.drop_rate, attn_drop=cfg.attn_drop_rate,
                  drop_path=dpr[i], norm_eps=cfg.norm_eps) for i in range(cfg.depth)])
        self.norm = nn.LayerNorm(D, eps=cfg.norm_eps)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = Linear(D, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):  # truncated normal, std 0.02, zero bias (as the paper's code)
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.cls_token, std=0.02)  # the class token at std 0.02

    def no_weight_decay(self) -> set[str]:
        return {"cls_token"}

    def reset_classifier(self, num_classes: int) -> None:
        """A new zero-initialised linear head."""
        self.num_classes = num_classes
        self.head = linear_head(self.num_features, num_classes, zero=True, like=self.cls_token)

    def _run(self, x: torch.Tensor, collect: bool = False, return_attention: bool = False):
        check_image(x, self.cfg.in_chans, self.input_size[1:], what="T2T-ViT")
        x = self.tokens_to_token(x)                                     # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(self.pos_embed(x, self.grid_size))
        hidden, attns = [], []
        for blk in self.blocks:
            if collect:
                hidden.append(x)
            if return_attention:
                x, a = blk(x, return_attention=True)
                attns.append(a)
            else:
                x = blk(x)
        if collect:
            hidden.append(x)
        return self.norm(x), hidden, attns

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> normed tokens (B, 1 + N, D)."""
        return self._run(x)[0]

    def forward_intermediates(self, x: torch.Tensor, return_attention: bool = False) -> dict:
        """``features``, ``hidden_states`` (each backbone block's input, then the last output), and with
        ``return_attention`` the backbone's attention maps."""
        feats, hidden, attns = self._run(x, collect=True, return_attention=return_attention)
        return pack_intermediates(feats, attns, return_attention, hidden_states=hidden)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x[:, 0])
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _t2t(base: T2TViTConfig, **overrides) -> T2TViT:
    return T2TViT(build_from_config(T2TViTConfig, base, overrides))


@register_model
def t2t_vit_t_7(**kw) -> T2TViT:
    """T2T-ViT-7's size with transformer T2T layers (no official model; the official t2t_vit_7 is
    Performer) at 224px: D=256, 7 blocks, 4 heads, MLP x2."""
    return _t2t(T2TViTConfig(embed_dim=256, depth=7, num_heads=4, mlp_ratio=2.0, name="t2t_vit_t_7"), **kw)


@register_model
def t2t_vit_t_14(**kw) -> T2TViT:
    """T2T-ViT_t-14 (official t2t_vit_t_14) at 224px: D=384, 14 blocks, 6 heads, MLP x3."""
    return _t2t(T2TViTConfig(embed_dim=384, depth=14, num_heads=6, mlp_ratio=3.0, name="t2t_vit_t_14"), **kw)


@register_model
def t2t_vit_t_19(**kw) -> T2TViT:
    """T2T-ViT_t-19 (official t2t_vit_t_19) at 224px: D=448, 19 blocks, 7 heads, MLP x3."""
    return _t2t(T2TViTConfig(embed_dim=448, depth=19, num_heads=7, mlp_ratio=3.0, name="t2t_vit_t_19"), **kw)


@register_model
def t2t_vit_t_24(**kw) -> T2TViT:
    """T2T-ViT_t-24 (official t2t_vit_t_24) at 224px: D=512, 24 blocks, 8 heads, MLP x3."""
    return _t2t(T2TViTConfig(embed_dim=512, depth=24, num_heads=8, mlp_ratio=3.0, name="t2t_vit_t_24"), **kw)


@register_model
def t2t_vit_nano_28(**kw) -> T2TViT:
    """T2T-ViT for 28x28 digits: splits (3,2,1) 14x14 -> (3,2,1) 7x7 -> (3,1,1) 7x7, token_dim 32, D=64, 4 blocks."""
    return _t2t(T2TViTConfig(img_size=28, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4,
                             mlp_ratio=2.0, token_dim=32, splits=((3, 2, 1), (3, 2, 1), (3, 1, 1)),
                             name="t2t_vit_nano_28"), **kw)


@register_model
def t2t_vit_nano_8(**kw) -> T2TViT:
    """T2T-ViT for scikit-learn's 8x8 digits: splits (3,1,1) 8x8 -> (3,2,1) 4x4, token_dim 32, D=64, 4 blocks."""
    return _t2t(T2TViTConfig(img_size=8, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4,
                             mlp_ratio=2.0, token_dim=32, splits=((3, 1, 1), (3, 2, 1)), name="t2t_vit_nano_8"), **kw)
