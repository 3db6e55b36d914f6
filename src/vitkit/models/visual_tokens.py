"""Visual Transformer (Wu et al. 2020, "Visual Transformers: Token-based Image Representation and
Processing for Computer Vision").

A CNN stem gives a feature map X (HW pixels of C channels, C = ``embed_dim`` after a 1x1 conv); VT
modules then work on L semantic *visual tokens* instead of the HW pixels:

    T     = softmax_HW(X W_A)^T X                       filter-based tokenizer (eq. 1), W_A: C x L
    W_R   = T_in W_{T->R};  T = softmax_HW(X W_R)^T X   recurrent tokenizer (eq. 2), W_{T->R}: C x C
    T_out = Transformer(T)                              self-attention over the L tokens (Sec. 3.2)
    X_out = X_in + softmax_L((X_in W_Q)(T W_K)^T) T      projector (eq. 4), W_Q, W_K: C x C

softmax_HW normalises over the pixels, so every token is a convex combination of pixels (the
weights of each token sum to 1). The first module uses the filter-based tokenizer, later ones the
recurrent tokenizer fed with the previous module's tokens and the projected feature map.

Classification (paper Sec. 4, VT-ResNet): the output tokens of the last module are pooled
(mean over L, after a LayerNorm) and classified; the last module's projector would feed nothing,
so it is not built (an unused module would also stall DDP).

vitkit choices, where the paper leaves room:
- the transformer over tokens is vitkit's pre-LN ``Block`` (MHSA + MLP); the paper's eq. 3 is a
  lighter variant of the same (no value projection, no LayerNorm, key/query width C/2);
- the tokenizers and the projector run through ``layers.attend`` (SDPA), whose 1/sqrt(C) logit
  scale only reparametrises W_A, W_R and W_Q;
- no position embedding: tokens are pooled from the map, so any image size is taken.

``vt_resnet18_224`` follows the paper's VT-ResNet-18 layout (ResNet-18 up to stage 4, its 14x14
map at 224px, stage 5 replaced by VT modules on L = 16 tokens); the token width (512, the width
of the stage it replaces), heads and MLP ratio are ours, not checked against the paper's table.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from ..layers import Block, Linear, attend, check_image, to_2tuple
from ..layers.init import init_patch_embed_, init_transformer_
from .heads import linear_head, pack_intermediates
from .registry import build_from_config, register_model
from .resnet import ResNet, ResNetConfig


# ---------------------------------------------------------------------------- the three VT pieces
class FilterTokenizer(nn.Module):
    """T = softmax_HW(X W_A)^T X (eq. 1): L learned filters, each pools the pixels it responds to.

    x: pixels (B, HW, C) -> tokens (B, L, C); ``return_attention`` also gives the spatial weights
    A^T (B, L, HW), each row a softmax over the pixels (sums to 1).
    """

    def __init__(self, dim: int, num_tokens: int):
        super().__init__()
        self.w_a = Linear(dim, num_tokens, bias=False)             # W_A: C x L (weight is L x C)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        q = self.w_a.weight.expand(x.shape[0], -1, -1)                 # (B, L, C): one query per token
        return attend(q, x, x, return_attention=return_attention)     # softmax over HW, then pool X


class RecurrentTokenizer(nn.Module):
    """W_R = T_in W_{T->R};  T = softmax_HW(X W_R)^T X (eq. 2): filters read from the previous tokens.

    x: pixels (B, HW, C), t_in: tokens (B, L, C) -> tokens (B, L, C) (+ weights (B, L, HW)).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.w_tr = Linear(dim, dim, bias=False)                    # W_{T->R}: C x C

    def forward(self, x: torch.Tensor, t_in: torch.Tensor, return_attention: bool = False):
        w_r = self.w_tr(t_in)                                          # (B, L, C): this image's filters
        return attend(w_r, x, x, return_attention=return_attention)


class Projector(nn.Module):
    """X_out = X_in + softmax_L((X_in W_Q)(T W_K)^T) T (eq. 4): each pixel reads back the tokens.

    x: pixels (B, HW, C), t: tokens (B, L, C) -> pixels (B, HW, C).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.w_q = Linear(dim, dim, bias=False)
        self.w_k = Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x + attend(self.w_q(x), self.w_k(t), t)                 # softmax over the L tokens


# ---------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class VTConfig:
    img_size: int | tuple[int, int] = 224   # the default input size (no position tables: any size is taken)
    in_chans: int = 3
    num_classes: int = 1000
    stem: ResNetConfig = field(default_factory=lambda: ResNetConfig(widths=(64, 128, 256), depths=(2, 2, 2)))
    embed_dim: int = 512          # C: channels of the feature map (1x1 conv from the stem) and of the tokens
    num_tokens: int = 16          # L
    depth: int = 2                # VT modules: the first tokenizes with filters, the others recurrently
    blocks_per_module: int = 1    # transformer blocks over the tokens in each module
    num_heads: int = 8
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        if isinstance(self.stem, dict):  # from config.json
            object.__setattr__(self, "stem", ResNetConfig(**self.stem))
        if isinstance(self.img_size, list):
            object.__setattr__(self, "img_size", tuple(self.img_size))
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.depth < 1 or self.blocks_per_module < 1 or self.num_tokens < 1:
            raise ValueError(f"depth, blocks_per_module and num_tokens must be >= 1, got {self.depth}, "
                             f"{self.blocks_per_module}, {self.num_tokens}")


class VTModule(nn.Module):
    """Tokenizer -> transformer blocks -> projector (the projector only when ``project``)."""

    def __init__(self, cfg: VTConfig, first: bool, project: bool, drop_path: list[float]):
        super().__init__()
        D = cfg.embed_dim
        self.tokenizer = FilterTokenizer(D, cfg.num_tokens) if first else RecurrentTokenizer(D)
        self.blocks = nn.ModuleList([
            Block(D, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, drop=cfg.drop_rate, attn_drop=cfg.attn_drop_rate,
                  drop_path=dp, norm_eps=cfg.norm_eps) for dp in drop_path])
        self.projector = Projector(D) if project else None

    def tokenize(self, x: torch.Tensor, t_in: torch.Tensor | None) -> torch.Tensor:
        return self.tokenizer(x) if t_in is None else self.tokenizer(x, t_in)


class VisualTransformer(nn.Module):
    """(B, C, H, W) -> logits (B, num_classes); ``forward_features`` -> normed visual tokens (B, L, D)."""

    def __init__(self, cfg: VTConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.num_classes, self.num_features, self.num_prefix_tokens = cfg.num_classes, D, 0
        self.input_size = (cfg.in_chans, *to_2tuple(cfg.img_size))
        self.stem = ResNet(dataclasses.replace(cfg.stem, in_chans=cfg.in_chans, num_classes=0))
        self.embed = nn.Conv2d(self.stem.num_features, D, kernel_size=1)  # stem map -> C channels
        n = cfg.depth * cfg.blocks_per_module
        dpr = [cfg.drop_path_rate * i / max(n - 1, 1) for i in range(n)]   # linear over all blocks
        k = cfg.blocks_per_module
        self.vt_modules = nn.ModuleList([
            VTModule(cfg, first=i == 0, project=i < cfg.depth - 1, drop_path=dpr[i * k:(i + 1) * k])
            for i in range(cfg.depth)])
        self.norm = nn.LayerNorm(D, eps=cfg.norm_eps)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = linear_head(D, cfg.num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        init_transformer_(self)           # Linear: truncated normal 0.02, zero bias; LayerNorm: 1, 0
        self.stem.init_weights()          # He init, last BN of each residual branch zeroed
        init_patch_embed_(self.embed)     # the 1x1 conv initialised like a Linear (xavier)

    def no_weight_decay(self) -> set[str]:
        return set()                      # no tokens or position tables; norms and biases have ndim < 2

    def reset_classifier(self, num_classes: int) -> None:
        """A new zero-initialised linear head."""
        self.num_classes = num_classes
        self.head = linear_head(self.num_features, num_classes, zero=True, like=self.embed.weight)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> the stem's map projected to D channels, (B, D, h, w)."""
        check_image(x, self.cfg.in_chans, None, what="VT")
        return self.embed(self.stem.forward_features(x))

    def _run(self, x: torch.Tensor, return_attention: bool = False):
        fmap = self.feature_map(x)
        B, D, h, w = fmap.shape
        pix = fmap.flatten(2).transpose(1, 2)                           # X: (B, hw, D)
        t, hidden, maps, attns = None, [], [], []
        for mod in self.vt_modules:
            maps.append(pix.transpose(1, 2).reshape(B, D, h, w))
            t = mod.tokenize(pix, t)                                    # (B, L, D)
            if not hidden:
                hidden.append(t)
            for blk in mod.blocks:
                if return_attention:
                    t, a = blk(t, return_attention=True)
                    attns.append(a)
                else:
                    t = blk(t)
            hidden.append(t)
            if mod.projector is not None:
                pix = mod.projector(pix, t)                             # X_out = X_in + ...
        return self.norm(t), hidden, maps, attns

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the last module's visual tokens after the final LayerNorm, (B, L, D)."""
        return self._run(x)[0]

    def forward_intermediates(self, x: torch.Tensor, return_attention: bool = False) -> dict:
        """``features`` (B, L, D); ``hidden_states``: the first tokenizer's tokens then every module's
        output tokens (depth + 1 tensors (B, L, D)); ``feature_maps``: the map (B, D, h, w) each module
        tokenizes; with ``return_attention`` the token self-attention of every block."""
        feats, hidden, maps, attns = self._run(x, return_attention)
        return pack_intermediates(feats, attns, return_attention, hidden_states=hidden, feature_maps=maps)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x.mean(dim=1))                               # pool the L tokens
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------- registered variants
def _vt(base: VTConfig, **overrides) -> VisualTransformer:
    return VisualTransformer(build_from_config(VTConfig, base, overrides))


@register_model
def vt_resnet18_224(**kw) -> VisualTransformer:
    """VT-ResNet-18 layout: ResNet-18 stages 1-4 (14x14x256 at 224px), stage 5 replaced by 2 VT modules
    on L=16 tokens of width 512, 8 heads."""
    return _vt(VTConfig(name="vt_resnet18_224"), **kw)


_SMALL_STEM = dict(stem_width=32, stem_kernel=3, stem_stride=1, stem_pool=False)


@register_model
def vt_resnet_nano_28(**kw) -> VisualTransformer:
    """VT for 28x28 digits: a 2-stage ResNet stem (32/64 ch, 14x14 map), D=64, L=8 tokens, 2 VT modules."""
    stem = ResNetConfig(widths=(32, 64), depths=(1, 1), **_SMALL_STEM)
    return _vt(VTConfig(img_size=28, in_chans=1, num_classes=10, stem=stem, embed_dim=64, num_tokens=8,
                        num_heads=4, name="vt_resnet_nano_28"), **kw)


@register_model
def vt_resnet_nano_8(**kw) -> VisualTransformer:
    """VT for scikit-learn's 8x8 digits: a 1-stage ResNet stem (32 ch, 8x8 map), D=64, L=8 tokens, 2 VT modules."""
    stem = ResNetConfig(widths=(32,), depths=(1,), **_SMALL_STEM)
    return _vt(VTConfig(img_size=8, in_chans=1, num_classes=10, stem=stem, embed_dim=64, num_tokens=8,
                        num_heads=4, name="vt_resnet_nano_8"), **kw)
