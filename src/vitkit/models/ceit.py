"""CeiT (Yuan et al. 2021, "Incorporating Convolution Designs into Visual Transformers").

    x'  = MaxPool(BN(Conv_k(x)))                    Image-to-Tokens (I2T): a small conv stem
    z_0 = [x_class; patches_P'(x') E] + E_pos       patches of the stem's map (P' = P / 4 at 224px)
    z_l = z_{l-1} + MSA(LN(z_{l-1}));  z_l = z_l + LeFF(LN(z_l))     LeFF: layers.mlp.LeFF
    c   = LCA([z_1^0; ...; z_L^0])                   layer-wise class-token attention (Sec. 3.4)
    y   = head(LN(c))

LCA is one more pre-LN block over the L class tokens in which only the last one's output is kept: in
a block every token's output depends only on its own query, so this equals attending from the last
class token alone. Sizes (paper Table 2): CeiT-T D=192/3 heads, CeiT-S D=384/6 heads, CeiT-B D=768/12,
12 blocks, MLP x4, a 7x7 stride-2 32-channel conv + 3x3 stride-2 max-pool, P'=4, LeFF kernel 3.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..layers import Block, LearnedPosEmbed, Linear, PatchEmbed, check_image, to_2tuple
from ..layers.init import init_transformer_
from ..layers.mlp import LeFF
from .heads import linear_head, pack_intermediates
from .registry import build_from_config, register_model


@dataclass(frozen=True)
class CeiTConfig:
    img_size: int | tuple[int, int] = 224
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    stem_width: int = 32           # I2T: conv (stem_kernel, stem_stride) -> BN -> [3x3 stride-2 max-pool]
    stem_kernel: int = 7
    stem_stride: int = 2
    stem_pool: bool = True
    patch_size: int = 4            # patches of the stem's feature map
    leff_kernel: int = 3
    lca: bool = True               # layer-wise class-token attention; False: the last class token
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        if isinstance(self.img_size, list):
            object.__setattr__(self, "img_size", tuple(self.img_size))
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def reduction(self) -> int:
        return self.stem_stride * (2 if self.stem_pool else 1)


class CeiT(nn.Module):
    """(B, C, H, W) -> logits (B, num_classes); ``forward_features`` -> normed tokens (B, 1 + N, D)."""

    def __init__(self, cfg: CeiTConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.num_classes, self.num_features, self.num_prefix_tokens = cfg.num_classes, D, 1
        img = to_2tuple(cfg.img_size)
        r = cfg.reduction
        if img[0] % (r * cfg.patch_size) or img[1] % (r * cfg.patch_size):
            raise ValueError(f"image size {img} must be divisible by stem stride x patch size = {r * cfg.patch_size}")
        self.input_size = (cfg.in_chans, *img)
        k = cfg.stem_kernel
        self.stem = nn.Sequential(  # I2T
            nn.Conv2d(cfg.in_chans, cfg.stem_width, k, cfg.stem_stride, k // 2, bias=False),
            nn.BatchNorm2d(cfg.stem_width),
            nn.MaxPool2d(3, 2, 1) if cfg.stem_pool else nn.Identity())
        self.patch_embed = PatchEmbed((img[0] // r, img[1] // r), cfg.patch_size, cfg.stem_width, D)
        self.grid_size = self.patch_embed.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = LearnedPosEmbed(self.grid_size, D, num_prefix_tokens=1)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        dpr = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        hidden = int(D * cfg.mlp_ratio)
        self.blocks = nn.ModuleList([
            Block(D, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, drop=cfg.drop_rate, attn_drop=cfg.attn_drop_rate,
                  drop_path=dpr[i], norm_eps=cfg.norm_eps,
                  mlp=LeFF(D, hidden, self.grid_size, cfg.leff_kernel, num_prefix_tokens=1))
            for i in range(cfg.depth)])
        # LCA: a plain block (MSA + MLP) over the class tokens of every block
        self.lca = Block(D, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, drop=cfg.drop_rate,
                         attn_drop=cfg.attn_drop_rate, norm_eps=cfg.norm_eps) if cfg.lca else None
        self.norm = nn.LayerNorm(D, eps=cfg.norm_eps)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = Linear(D, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        init_transformer_(self)  # Linear: truncated normal 0.02, zero bias; LayerNorm: 1, 0
        for m in self.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):  # He init for the conv stem and the depthwise convs
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.cls_token, std=0.02)  # tokens and the position table at std 0.02
        nn.init.trunc_normal_(self.pos_embed.weight, std=0.02)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_embed.weight"}

    def reset_classifier(self, num_classes: int) -> None:
        """A new zero-initialised linear head."""
        self.num_classes = num_classes
        self.head = linear_head(self.num_features, num_classes, zero=True, like=self.cls_token)

    def _run(self, x: torch.Tensor, return_attention: bool = False):
        check_image(x, self.cfg.in_chans, self.input_size[1:], what="CeiT")
        x = self.patch_embed(self.stem(x))                              # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(self.pos_embed(x, self.grid_size))
        hidden, attns = [x], []
        for blk in self.blocks:
            if return_attention:
                x, a = blk(x, return_attention=True)
                attns.append(a)
            else:
                x = blk(x)
            hidden.append(x)
        return x, hidden, attns

    def class_tokens(self, hidden: list[torch.Tensor]) -> torch.Tensor:
        """Every block's output class token, stacked: (B, depth, D)."""
        return torch.stack([h[:, 0] for h in hidden[1:]], dim=1)

    def _features(self, x: torch.Tensor, hidden: list[torch.Tensor]) -> torch.Tensor:
        """The last block's tokens (B, 1 + N, D) -> normed; with LCA the class token is LCA's output."""
        if self.lca is not None:
            cls = self.lca(self.class_tokens(hidden))[:, -1:]           # the last class token's output
            x = torch.cat([cls, x[:, 1:]], dim=1)
        return self.norm(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> normed tokens (B, 1 + N, D); with LCA the class token is LCA's output."""
        x, hidden, _ = self._run(x)
        return self._features(x, hidden)

    def forward_intermediates(self, x: torch.Tensor, return_attention: bool = False) -> dict:
        """``features`` (as forward_features, from the same pass), ``hidden_states``: the embedded input
        then every block's output (B, 1 + N, D), and with ``return_attention`` every block's attention."""
        x, hidden, attns = self._run(x, return_attention)
        return pack_intermediates(self._features(x, hidden), attns, return_attention, hidden_states=hidden)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x[:, 0])
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _ceit(base: CeiTConfig, **overrides) -> CeiT:
    return CeiT(build_from_config(CeiTConfig, base, overrides))


@register_model
def ceit_tiny_patch16_224(**kw) -> CeiT:
    """CeiT-T: D=192, 12 blocks, 3 heads, I2T stem + P'=4 (14x14 tokens at 224px)."""
    return _ceit(CeiTConfig(embed_dim=192, num_heads=3, name="ceit_tiny_patch16_224"), **kw)


@register_model
def ceit_small_patch16_224(**kw) -> CeiT:
    """CeiT-S: D=384, 12 blocks, 6 heads."""
    return _ceit(CeiTConfig(embed_dim=384, num_heads=6, name="ceit_small_patch16_224"), **kw)


@register_model
def ceit_base_patch16_224(**kw) -> CeiT:
    """CeiT-B: D=768, 12 blocks, 12 heads."""
    return _ceit(CeiTConfig(embed_dim=768, num_heads=12, name="ceit_base_patch16_224"), **kw)


@register_model
def ceit_nano_28(**kw) -> CeiT:
    """CeiT for 28x28 digits: 3x3 stride-1 conv stem (16 ch, no pool), P'=4 (7x7 tokens), D=64, 4 blocks."""
    return _ceit(CeiTConfig(img_size=28, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4,
                            mlp_ratio=2.0, stem_width=16, stem_kernel=3, stem_stride=1, stem_pool=False,
                            patch_size=4, name="ceit_nano_28"), **kw)


@register_model
def ceit_nano_8(**kw) -> CeiT:
    """CeiT for scikit-learn's 8x8 digits: 3x3 stride-1 conv stem (16 ch, no pool), P'=2 (4x4 tokens), D=64."""
    return _ceit(CeiTConfig(img_size=8, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4,
                            mlp_ratio=2.0, stem_width=16, stem_kernel=3, stem_stride=1, stem_pool=False,
                            patch_size=2, name="ceit_nano_8"), **kw)
