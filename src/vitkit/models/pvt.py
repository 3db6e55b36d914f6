"""Pyramid Vision Transformer (Wang et al. 2021, "Pyramid Vision Transformer: A Versatile Backbone for
Dense Prediction without Convolutions"), PVT-Tiny / Small / Medium / Large.

    stage i:  patch embedding (P x P conv, P = patch_size for stage 1 and 2 after, then LayerNorm)
              -> + learned position embedding (stage i's grid) -> depths[i] pre-LN blocks whose
              attention is spatial-reduction attention (K/V from the map reduced by sr_ratios[i],
              ``layers.SpatialReductionAttention``) and whose MLP has ratio mlp_ratios[i]
    last stage: a class token joins the tokens (with its own position embedding); its sr ratio is 1,
              so that stage is global attention
    head:     LayerNorm -> the class token -> Linear

So stage i works at 1/(P 2^i) of the input, with widths embed_dims[i] (Sec. 3, Table 1). Names follow
PVT's code where they can (``q``, ``kv``, ``sr``, ``norm``), and the published sizes are whai362/PVT's
``pvt_tiny`` / ``pvt_small`` / ``pvt_medium`` / ``pvt_large`` (classification/pvt.py): norms eps 1e-6 in
blocks and head (``norm_eps``), 1e-5 in patch embeddings and SR (``conv_norm_eps``, the LayerNorms after
a conv). transformers' port (``PvtModel``) uses its one ``layer_norm_eps`` (1e-6) for all of them: the
default pretrained sources (``weights/pvt.py``) load with ``conv_norm_eps=1e-6`` to compute its function.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import nn

from ..layers import Block, PatchEmbed, SpatialReductionAttention, check_image, resample_pos_embed, to_2tuple
from ..layers.init import init_transformer_
from .heads import linear_head
from .registry import build_from_config, register_model


@dataclass(frozen=True)
class PVTConfig:
    img_size: int | tuple[int, int] = 224
    patch_size: int = 4                               # stage 1's patch; later stages merge 2x2
    in_chans: int = 3
    num_classes: int = 1000
    embed_dims: tuple[int, ...] = (64, 128, 320, 512)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)         # K/V reduction per stage (the last must be 1)
    mlp_ratios: tuple[float, ...] = (8, 8, 4, 4)
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1                       # stochastic depth, linear over all blocks
    norm_eps: float = 1e-6                            # blocks and head (PVT)
    conv_norm_eps: float = 1e-5                       # patch-embedding and SR LayerNorms (PVT: the default)
    dynamic_img_size: bool = False                    # any H, W divisible by the total stride
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        for f in ("embed_dims", "depths", "num_heads", "sr_ratios", "mlp_ratios", "img_size"):
            if isinstance(getattr(self, f), list):  # from config.json
                object.__setattr__(self, f, tuple(getattr(self, f)))
        n = len(self.depths)
        if not n or any(len(getattr(self, f)) != n for f in ("embed_dims", "num_heads", "sr_ratios", "mlp_ratios")):
            raise ValueError("embed_dims, depths, num_heads, sr_ratios and mlp_ratios must name the same number "
                             f"of stages (at least one), got {self.embed_dims}, {self.depths}, {self.num_heads}, "
                             f"{self.sr_ratios}, {self.mlp_ratios}")
        for d, h in zip(self.embed_dims, self.num_heads):
            if d % h:
                raise ValueError(f"stage width {d} is not divisible by {h} heads")
        if self.sr_ratios[-1] != 1:
            raise ValueError(f"the class token joins the last stage, whose sr ratio must be 1, got {self.sr_ratios}")
        for side in to_2tuple(self.img_size):
            if side % self.stride:
                raise ValueError(f"img_size {self.img_size} is not divisible by the total stride {self.stride}")

    @property
    def stride(self) -> int:
        return self.patch_size * 2 ** (len(self.depths) - 1)

    @property
    def num_features(self) -> int:
        return self.embed_dims[-1]


class PVTStage(nn.Module):
    """Patch embedding (conv + LayerNorm) + position embedding, then blocks on the (B, h, w, C) map.
    ``cls_token`` (last stage): the blocks see [cls | tokens] as a 1 x (1 + h*w) map (sr ratio 1)."""

    def __init__(self, grid: tuple[int, int], patch_size: int, in_dim: int, dim: int, depth: int,
                 num_heads: int, sr_ratio: int, mlp_ratio: float, qkv_bias: bool, drop: float,
                 attn_drop: float, drop_path: list[float], norm_eps: float, cls_token: bool,
                 conv_norm_eps: float = 1e-5):
        super().__init__()
        self.patch_embed = PatchEmbed(grid, patch_size, in_dim, dim, strict_img_size=False)
        self.norm = nn.LayerNorm(dim, eps=conv_norm_eps)                 # PVT: default eps here
        self.grid_size = self.patch_embed.grid_size
        self.num_prefix_tokens = int(cls_token)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + self.patch_embed.num_patches, dim))
        self.pos_drop = nn.Dropout(drop)
        self.blocks = nn.ModuleList([
            Block(dim, num_heads, mlp_ratio, drop=drop, drop_path=drop_path[j], norm_eps=norm_eps,
                  attn=SpatialReductionAttention(dim, num_heads, sr_ratio, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                                 proj_drop=drop, norm_eps=conv_norm_eps))
            for j in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C, H/P, W/P), or with a class token (B, 1 + H/P * W/P, C)."""
        gh, gw = self.patch_embed.dynamic_grid(*x.shape[-2:])
        x = self.norm(self.patch_embed(x))                               # (B, gh*gw, C)
        pos = resample_pos_embed(self.pos_embed, (gh, gw), self.grid_size, self.num_prefix_tokens, mode="bilinear")
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + pos)
        x = x[:, None] if self.cls_token is not None else rearrange(x, "b (h w) c -> b h w c", h=gh)
        for blk in self.blocks:
            x = blk(x)
        return x[:, 0] if self.cls_token is not None else rearrange(x, "b h w c -> b c h w")


class PyramidVisionTransformer(nn.Module):
    """PVT classifier. (B, C, H, W) -> logits (B, num_classes).

    ``forward_features`` -> the normed last-stage tokens (B, 1 + N_last, num_features), class token
    first; ``forward_head`` takes the class token; ``forward_intermediates`` also returns every stage's
    map (B, C_i, H_i, W_i).
    """

    def __init__(self, cfg: PVTConfig):
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.num_features = cfg.num_features
        self.img_size = to_2tuple(cfg.img_size)
        self.input_size = (cfg.in_chans, *self.img_size)  # (C, H, W)
        S = len(cfg.depths)
        dpr = [cfg.drop_path_rate * i / max(sum(cfg.depths) - 1, 1) for i in range(sum(cfg.depths))]
        self.stages = nn.ModuleList()
        grid = self.img_size
        for i in range(S):
            first, p = sum(cfg.depths[:i]), cfg.patch_size if i == 0 else 2
            stage = PVTStage(grid, p, cfg.in_chans if i == 0 else cfg.embed_dims[i - 1], cfg.embed_dims[i],
                             cfg.depths[i], cfg.num_heads[i], cfg.sr_ratios[i], cfg.mlp_ratios[i], cfg.qkv_bias,
                             cfg.drop_rate, cfg.attn_drop_rate, dpr[first:first + cfg.depths[i]], cfg.norm_eps,
                             cls_token=i == S - 1, conv_norm_eps=cfg.conv_norm_eps)
            self.stages.append(stage)
            grid = stage.grid_size
        self.norm = nn.LayerNorm(self.num_features, eps=cfg.norm_eps)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = linear_head(self.num_features, cfg.num_classes)
        self.init_weights()

    # ---------------------------------------------------------------- init and parameter groups
    def init_weights(self) -> None:
        init_transformer_(self)  # Linear: trunc normal 0.02; LayerNorm: 1, 0; convs keep PyTorch's init (PVT)
        for stage in self.stages:  # position tables and the class token at std 0.02 (PVT)
            nn.init.trunc_normal_(stage.pos_embed, std=0.02)
            if stage.cls_token is not None:
                nn.init.trunc_normal_(stage.cls_token, std=0.02)

    def reset_classifier(self, num_classes: int) -> None:
        """Install a new zero-initialised linear head (``num_classes=0``: no head, the class token)."""
        self.num_classes = num_classes
        self.head = linear_head(self.num_features, num_classes, zero=True, like=next(self.parameters()))

    def no_weight_decay(self) -> set[str]:
        """Position tables and the class token (norms and biases are ndim < 2)."""
        return {n for n, _ in self.named_parameters() if n.endswith(("pos_embed", "cls_token"))}

    # ---------------------------------------------------------------- forward
    def _check(self, x: torch.Tensor) -> None:
        check_image(x, self.cfg.in_chans, None if self.cfg.dynamic_img_size else self.img_size,
                    (self.cfg.stride, self.cfg.stride), what=self.cfg.name or "PVT")

    def forward_intermediates(self, x: torch.Tensor) -> dict:
        """``features`` (as forward_features) and ``stages``: the map of every stage but the last
        (B, C_i, H_i, W_i), then the last stage's tokens (B, 1 + N, C) before the final norm."""
        self._check(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return {"features": self.norm(x), "stages": outs}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> normed tokens of the last stage (B, 1 + N, num_features), class token first."""
        return self.forward_intermediates(x)["features"]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, 1 + N, D) -> the class token (B, D) -> logits (B, num_classes)."""
        x = self.head_drop(x[:, 0])
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# -------------------------------------------------------------------- registered variants
def _pvt(base: PVTConfig, **overrides) -> PyramidVisionTransformer:
    return PyramidVisionTransformer(build_from_config(PVTConfig, base, overrides))


@register_model
def pvt_tiny(**kw) -> PyramidVisionTransformer:
    """PVT-Tiny at 224: widths (64, 128, 320, 512), depths (2, 2, 2, 2), heads (1, 2, 5, 8), sr (8, 4, 2, 1),
    mlp ratios (8, 8, 4, 4)."""
    return _pvt(PVTConfig(depths=(2, 2, 2, 2), name="pvt_tiny"), **kw)


@register_model
def pvt_small(**kw) -> PyramidVisionTransformer:
    """PVT-Small at 224: PVT-Tiny's widths with depths (3, 4, 6, 3)."""
    return _pvt(PVTConfig(depths=(3, 4, 6, 3), name="pvt_small"), **kw)


@register_model
def pvt_medium(**kw) -> PyramidVisionTransformer:
    """PVT-Medium at 224: PVT-Tiny's widths with depths (3, 4, 18, 3); drop path 0.3 (configs/pvt/pvt_medium.py)."""
    return _pvt(PVTConfig(depths=(3, 4, 18, 3), drop_path_rate=0.3, name="pvt_medium"), **kw)


@register_model
def pvt_large(**kw) -> PyramidVisionTransformer:
    """PVT-Large at 224: PVT-Tiny's widths with depths (3, 8, 27, 3); drop path 0.3 (configs/pvt/pvt_large.py)."""
    return _pvt(PVTConfig(depths=(3, 8, 27, 3), drop_path_rate=0.3, name="pvt_large"), **kw)


@register_model
def pvt_nano_patch2_28(**kw) -> PyramidVisionTransformer:
    """A small PVT for 28x28 digits: P=2, maps 14 (sr 2: 7x7 keys) -> 7 (global, with the class token);
    widths (48, 96), depths (2, 2), heads (1, 2), mlp ratios (4, 4)."""
    return _pvt(PVTConfig(img_size=28, patch_size=2, in_chans=1, num_classes=10, embed_dims=(48, 96), depths=(2, 2),
                          num_heads=(1, 2), sr_ratios=(2, 1), mlp_ratios=(4, 4), drop_path_rate=0.0,
                          name="pvt_nano_patch2_28"), **kw)
