"""Swin Transformer (Liu et al. 2021, "Hierarchical Vision Transformer using Shifted Windows").

    patch partition:  P x P patches -> Linear to C (a conv, kernel = stride = P) -> LayerNorm   (Sec. 3.1)
    stage 1..S:       [patch merging (stages 2..S): each 2x2 neighbourhood concatenated (4C),
                       LayerNorm, Linear 4C -> 2C, no bias]  then depth_i blocks alternating
                       W-MSA (even blocks) and SW-MSA (odd blocks, shift M // 2)                 (eqs. 3)
    head:             LayerNorm -> global average pool -> Linear

Blocks are vitkit's pre-LN ``Block`` with a ``WindowAttention`` (relative position bias, padding
when a map is not a multiple of the window M). Maps stay channels-last, (B, H, W, C), throughout, so
the stage-i map is (H/(P 2^i), W/(P 2^i), C 2^i) (odd maps are padded before merging, as Swin's code).
Patch merging sits at the start of a stage (timm's layout), so each stage's output is one map at
the stage's resolution and width.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import nn

from ..layers import Block, Linear, PatchEmbed, WindowAttention
from ..layers.init import init_patch_embed_, init_transformer_
from .heads import linear_head, pack_intermediates
from .registry import build_from_config, register_model


@dataclass(frozen=True)
class SwinConfig:
    img_size: int | tuple[int, int] = 224
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 96                          # C, the width of stage 1; stage i has C * 2^i
    depths: tuple[int, ...] = (2, 2, 6, 2)       # blocks per stage (even: W-MSA / SW-MSA pairs)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)  # heads per stage (head dim 32 in the paper)
    window_size: int = 7                         # M
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1                  # stochastic depth, linear over all blocks
    norm_eps: float = 1e-5                       # nn.LayerNorm's default, as Swin
    dynamic_img_size: bool = False               # accept any H, W divisible by P
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        for f in ("depths", "num_heads"):
            if isinstance(getattr(self, f), list):  # from config.json
                object.__setattr__(self, f, tuple(getattr(self, f)))
        if isinstance(self.img_size, list):
            object.__setattr__(self, "img_size", tuple(self.img_size))
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} must name the same "
                             f"number of stages (at least one)")
        for i, h in enumerate(self.num_heads):
            if (self.embed_dim * 2 ** i) % h:
                raise ValueError(f"stage {i} width {self.embed_dim * 2 ** i} is not divisible by {h} heads")
        if self.window_size < 1:
            raise ValueError(f"window_size must be positive, got {self.window_size}")

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)


class PatchMerging(nn.Module):
    """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C): an odd side is zero-padded at the bottom/right,
    each 2x2 neighbourhood is concatenated in Swin's order (top-left, bottom-left, top-right,
    bottom-right: ``x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]``), LayerNorm(4C),
    then Linear 4C -> 2C without bias."""

    def __init__(self, dim: int, out_dim: int | None = None, norm_eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=norm_eps)
        self.reduction = Linear(4 * dim, out_dim or 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[1:3]
        if H % 2 or W % 2:
            x = nn.functional.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = rearrange(x, "b (h dh) (w dw) c -> b h w (dw dh c)", dh=2, dw=2)  # dh fastest: TL, BL, TR, BR
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """[PatchMerging] then ``depth`` blocks, W-MSA and SW-MSA alternating. (B, H, W, C_in) -> (B, H', W', C)."""

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, window_size: int,
                 downsample: bool, mlp_ratio: float, qkv_bias: bool, drop: float, attn_drop: float,
                 drop_path: list[float], norm_eps: float):
        super().__init__()
        self.downsample = PatchMerging(in_dim, dim, norm_eps) if downsample else nn.Identity()
        self.blocks = nn.ModuleList([
            Block(dim, num_heads, mlp_ratio, drop=drop, drop_path=drop_path[j], norm_eps=norm_eps,
                  attn=WindowAttention(dim, num_heads, window_size,
                                       shift_size=0 if j % 2 == 0 else window_size // 2,
                                       qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop))
            for j in range(depth)])

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        x = self.downsample(x)
        attns = []
        for blk in self.blocks:
            if return_attention:
                x, a = blk(x, return_attention=True)
                attns.append(a)
            else:
                x = blk(x)
        return (x, attns) if return_attention else x


class SwinTransformer(nn.Module):
    """Swin classifier. (B, C, H, W) -> logits (B, num_classes).

    ``forward_features`` -> the normed last-stage map (B, H/(P 2^(S-1)), W/(P 2^(S-1)), num_features),
    channels-last; ``forward_head`` average-pools it and classifies; ``forward_intermediates`` also
    returns every stage's map (B, C_i, H_i, W_i) and, on request, every block's window attention.
    """

    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.cfg = cfg
        C, S = cfg.embed_dim, len(cfg.depths)
        self.num_classes = cfg.num_classes
        self.num_features = cfg.num_features
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, C,
                                      strict_img_size=not cfg.dynamic_img_size)
        self.patch_norm = nn.LayerNorm(C, eps=cfg.norm_eps)
        self.grid_size = self.patch_embed.grid_size
        self.input_size = (cfg.in_chans, *self.patch_embed.img_size)  # (C, H, W)
        self.pos_drop = nn.Dropout(cfg.drop_rate)

        dpr = [cfg.drop_path_rate * i / max(sum(cfg.depths) - 1, 1) for i in range(sum(cfg.depths))]
        self.stages = nn.ModuleList()
        for i in range(S):
            first = sum(cfg.depths[:i])
            self.stages.append(SwinStage(
                C * 2 ** max(i - 1, 0), C * 2 ** i, cfg.depths[i], cfg.num_heads[i], cfg.window_size,
                downsample=i > 0, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, drop=cfg.drop_rate,
                attn_drop=cfg.attn_drop_rate, drop_path=dpr[first:first + cfg.depths[i]],
                norm_eps=cfg.norm_eps))
        self.norm = nn.LayerNorm(self.num_features, eps=cfg.norm_eps)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = linear_head(self.num_features, cfg.num_classes)
        self.init_weights()

    # ---------------------------------------------------------------- init and parameter groups
    def init_weights(self) -> None:
        init_transformer_(self)                       # Linear: trunc normal 0.02; LayerNorm: 1, 0
        init_patch_embed_(self.patch_embed.proj)      # patch embed initialised like a Linear (MAE)
        for name, p in self.named_parameters():  # relative position tables at std 0.02 (Swin)
            if name.endswith("rel_pos.table"):
                nn.init.trunc_normal_(p, std=0.02)

    def reset_classifier(self, num_classes: int) -> None:
        """Install a new zero-initialised linear head (``num_classes=0``: no head, pooled features)."""
        self.num_classes = num_classes
        self.head = linear_head(self.num_features, num_classes, zero=True, like=next(self.parameters()))

    def no_weight_decay(self) -> set[str]:
        """Relative position tables get no weight decay (norms and biases are ndim < 2)."""
        return {n for n, _ in self.named_parameters() if n.endswith("rel_pos.table")}

    # ---------------------------------------------------------------- forward
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        gh, gw = self.patch_embed.dynamic_grid(x.shape[-2], x.shape[-1])
        x = self.patch_embed(x)                                         # (B, N, C), checks input
        x = rearrange(x, "b (h w) c -> b h w c", h=gh, w=gw)
        return self.pos_drop(self.patch_norm(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> normed last-stage map (B, h, w, num_features)."""
        x = self._embed(x)
        for stage in self.stages:
            x = stage(x)
        return self.norm(x)

    def forward_intermediates(self, x: torch.Tensor, return_attention: bool = False) -> dict:
        """Every stage's output, for dense tasks, probes and interop tests.

        Returns ``features`` (B, h, w, num_features) (after the final norm), ``stages``: one map per
        stage, (B, C * 2^i, H_i, W_i) (channels-first, before the final norm), and with
        ``return_attention`` also ``attentions``: one (B, nW, heads, N, N) tensor of window
        attention probabilities per block, stage by stage.
        """
        x = self._embed(x)
        maps, attns = [], []
        for stage in self.stages:
            if return_attention:
                x, a = stage(x, return_attention=True)
                attns.extend(a)
            else:
                x = stage(x)
            maps.append(rearrange(x, "b h w c -> b c h w"))
        return pack_intermediates(self.norm(x), attns, return_attention, stages=maps)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, h, w, D) -> global average pool (B, D) -> logits (B, num_classes)."""
        x = self.head_drop(x.mean(dim=(1, 2)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# -------------------------------------------------------------------- registered variants
# Published sizes (Swin Table 1 / Sec. 3.3): name -> (C, depths, heads).
SIZES = {"tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
         "small": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
         "base": (128, (2, 2, 18, 2), (4, 8, 16, 32)),
         "large": (192, (2, 2, 18, 2), (6, 12, 24, 48))}
# Stochastic depth of the paper's ImageNet-1k recipes (T 0.2, S 0.3, B 0.5); L was trained on 22k at 0.2.
DROP_PATH = {"tiny": 0.2, "small": 0.3, "base": 0.5, "large": 0.2}


def _swin(base: SwinConfig, **overrides) -> SwinTransformer:
    return SwinTransformer(build_from_config(SwinConfig, base, overrides))


def _register_paper_variants() -> None:
    """``swin_{size}_patch4_window{M}_{res}`` as timm names them."""
    for size, (dim, depths, heads) in SIZES.items():
        for window, res in [(7, 224), (12, 384)]:
            if window == 12 and size in ("tiny", "small"):
                continue  # timm has no 384 T/S Swin
            name = f"swin_{size}_patch4_window{window}_{res}"
            base = SwinConfig(img_size=res, patch_size=4, embed_dim=dim, depths=depths, num_heads=heads,
                              window_size=window, drop_path_rate=DROP_PATH[size], name=name)

            def make(_base=base, **kw):
                return _swin(_base, **kw)

            make.__doc__ = (f"Swin-{size[0].upper()} at {res}x{res}, window {window} (C={dim}, depths "
                            f"{depths}, heads {heads}).")
            register_model(make, name=name)


_register_paper_variants()


@register_model
def swin_nano_patch2_window4_28(**kw) -> SwinTransformer:
    """A small Swin for 28x28 digits: P=2 (14x14 map), window 4, C=32, 3 stages (2, 2, 2).

    Maps 14 -> 7 -> 4: stage 1 pads 14 to 16 (4x4 windows, shift 2), stage 2 pads 7 to 8 (2x2
    windows) after merging, stage 3 merges the odd 7x7 map (padded to 8) into one 4x4 window.
    """
    return _swin(SwinConfig(img_size=28, in_chans=1, num_classes=10, patch_size=2, embed_dim=32,
                            depths=(2, 2, 2), num_heads=(2, 4, 8), window_size=4, drop_path_rate=0.1,
                            name="swin_nano_patch2_window4_28"), **kw)
