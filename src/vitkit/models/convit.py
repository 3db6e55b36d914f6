"""ConViT (d'Ascoli et al. 2021, "ConViT: Improving Vision Transformers with Soft Convolutional Inductive Biases").

    z_0 = [x_p^1 E; ...; x_p^N E] + E_pos                       patch tokens only
    z_l = Block_GPSA(z_{l-1})           l = 1 .. L_local       gated positional self-attention
    z   = [x_class; z_{L_local}]                               the class token joins here (Sec. 3)
    z_l = Block_SA(z_{l-1})             l = L_local+1 .. L      plain self-attention
    y   = head(LN(z_L^0))

Every block is the shared pre-LN ``Block``; the first ``local_up_to_layer`` get ``attn=GPSA(...)``.
Sizes as the paper (Table 1) and timm: Ti D=192/4 heads, S D=432/9 heads, B D=768/16 heads, 12 blocks,
10 of them GPSA.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..layers import Block, LearnedPosEmbed, Linear, PatchEmbed
from ..layers.gpsa import GPSA
from ..layers.init import init_patch_embed_, init_transformer_
from .heads import linear_head, pack_intermediates
from .registry import build_from_config, register_model


@dataclass(frozen=True)
class ConViTConfig:
    img_size: int | tuple[int, int] = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    local_up_to_layer: int = 10       # blocks 0 .. local_up_to_layer-1 use GPSA, the rest plain SA
    locality_strength: float = 1.0    # alpha of the locality init
    pos_embed: bool = True            # a learned absolute table on the patch tokens (the paper keeps it)
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        if isinstance(self.img_size, list):
            object.__setattr__(self, "img_size", tuple(self.img_size))
        if not 0 <= self.local_up_to_layer <= self.depth:
            raise ValueError(f"local_up_to_layer must be in [0, depth={self.depth}], got {self.local_up_to_layer}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")


class ConViT(nn.Module):
    """(B, C, H, W) -> logits (B, num_classes); ``forward_features`` -> normed tokens (B, 1 + N, D)."""

    def __init__(self, cfg: ConViTConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.num_classes, self.num_features, self.num_prefix_tokens = cfg.num_classes, D, 1
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, D)
        self.grid_size = self.patch_embed.grid_size
        self.input_size = (cfg.in_chans, *self.patch_embed.img_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = LearnedPosEmbed(self.grid_size, D, num_prefix_tokens=0) if cfg.pos_embed else None
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        dpr = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList()
        for i in range(cfg.depth):
            attn = (GPSA(D, cfg.num_heads, self.grid_size, cfg.qkv_bias, cfg.attn_drop_rate, cfg.drop_rate,
                         cfg.locality_strength) if i < cfg.local_up_to_layer else None)
            self.blocks.append(Block(D, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, drop=cfg.drop_rate,
                                     attn_drop=cfg.attn_drop_rate, drop_path=dpr[i], norm_eps=cfg.norm_eps,
                                     attn=attn))
        self.norm = nn.LayerNorm(D, eps=cfg.norm_eps)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = Linear(D, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        init_transformer_(self)                   # Linear: truncated normal 0.02; LayerNorm: 1, 0
        init_patch_embed_(self.patch_embed.proj)  # patch embed initialised like a Linear
        nn.init.trunc_normal_(self.cls_token, std=0.02)  # tokens and the position table at std 0.02
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed.weight, std=0.02)
        for m in self.modules():  # after the generic init: GPSA's locality init (values = identity)
            if isinstance(m, GPSA):
                m.local_init()

    def no_weight_decay(self) -> set[str]:
        """Class token, position table and the GPSA gates get no weight decay."""
        return {n for n, _ in self.named_parameters()
                if n in ("cls_token", "pos_embed.weight") or n.endswith(".gating_param")}

    def reset_classifier(self, num_classes: int) -> None:
        """A new zero-initialised linear head."""
        self.num_classes = num_classes
        self.head = linear_head(self.num_features, num_classes, zero=True, like=self.cls_token)

    def _run(self, x: torch.Tensor, return_attention: bool = False):
        x = self.patch_embed(x)                                         # (B, N, D), checks input
        if self.pos_embed is not None:
            x = self.pos_embed(x, self.grid_size)
        x = self.pos_drop(x)
        hidden, attns = [], []
        for i, blk in enumerate(self.blocks):
            if i == self.cfg.local_up_to_layer:                         # the class token joins after GPSA
                x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            hidden.append(x)
            if return_attention:
                x, a = blk(x, return_attention=True)
                attns.append(a)
            else:
                x = blk(x)
        if self.cfg.local_up_to_layer == len(self.blocks):
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        hidden.append(x)
        return self.norm(x), hidden, attns

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> normed tokens (B, 1 + N, D), the class token first."""
        return self._run(x)[0]

    def forward_intermediates(self, x: torch.Tensor, return_attention: bool = False) -> dict:
        """``features``, ``hidden_states`` (each block's input, then the last output: GPSA blocks hold
        N tokens, the rest 1 + N) and with ``return_attention`` every block's attention."""
        feats, hidden, attns = self._run(x, return_attention)
        return pack_intermediates(feats, attns, return_attention, hidden_states=hidden)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x[:, 0])
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _convit(base: ConViTConfig, **overrides) -> ConViT:
    return ConViT(build_from_config(ConViTConfig, base, overrides))


# ConViT Table 1 / timm: Ti 5.7M, S 27.8M, B 86.5M parameters.
for _size, _dim, _heads in (("tiny", 192, 4), ("small", 432, 9), ("base", 768, 16)):
    def _make(_base=ConViTConfig(embed_dim=_dim, num_heads=_heads, name=f"convit_{_size}"), **kw):
        return _convit(_base, **kw)

    _make.__doc__ = (f"ConViT-{_size[0].upper()} (timm convit_{_size}): D={_dim}, {_heads} heads, "
                     "12 blocks (10 GPSA), 224px.")
    register_model(_make, name=f"convit_{_size}")


@register_model
def convit_nano_patch4_28(**kw) -> ConViT:
    """ConViT for 28x28 digits: P=4 (7x7 patches), D=64, 4 heads, 4 blocks, the first 2 GPSA."""
    return _convit(ConViTConfig(img_size=28, in_chans=1, num_classes=10, patch_size=4, embed_dim=64, depth=4,
                                num_heads=4, mlp_ratio=2.0, local_up_to_layer=2, name="convit_nano_patch4_28"), **kw)


@register_model
def convit_nano_patch2_8(**kw) -> ConViT:
    """ConViT for scikit-learn's 8x8 digits: P=2 (4x4 patches), D=64, 4 heads, 4 blocks, the first 2 GPSA."""
    return _convit(ConViTConfig(img_size=8, in_chans=1, num_classes=10, patch_size=2, embed_dim=64, depth=4,
                                num_heads=4, mlp_ratio=2.0, local_up_to_layer=2, name="convit_nano_patch2_8"), **kw)
