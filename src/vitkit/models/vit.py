"""Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words").

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos            (eq. 1, patch + position embedding)
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                           (eq. 2)
    z_l = MLP(LN(z'_l)) + z'_l                                  (eq. 3)
    y = LN(z_L^0)  (class token) or mean of LN(z_L^{1..N})    (eq. 4, or global average pooling)

Options from the paper's appendix D are config fields: pooling (class token or GAP), the position
embedding (none / learned 1D / learned 2D / fixed sin-cos / relative bias) and where it is added
(input only, before every block, before every block with one shared table), the pre-logits layer
(Linear + tanh, used in pre-training), and the hybrid input from a CNN feature map.

DeiT (Touvron et al. 2021, "Training data-efficient image transformers & distillation through
attention") is the same network with ``distilled=True``: a distillation token after the class token,

    z_0 = [x_class; x_distil; x_p^1 E; ...; x_p^N E] + E_pos    (E_pos covers both prefix tokens)

and a second head on it, trained against a teacher by ``vitkit.tasks.Distill``. In training mode the
model returns both heads' logits ``(cls, dist)``; in eval mode their average (DeiT Sec. 5.2).

CLIP's image tower (Radford et al. 2021, Sec. 2.4) is this ViT with three config fields set: a patch
conv without bias (``patch_bias=False``), a LayerNorm on the embedded tokens before the first block
(``norm_pre=True``: "an additional layer normalization to the combined patch and position embeddings
before the transformer"), and the QuickGELU activation (``act="quick_gelu"``). Its final norm on the
class token is ``norm`` here (a LayerNorm acts per token, so norming every token and then pooling the
class token equals HF's ``post_layernorm`` on the pooled token).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..layers import POS_EMBEDS, Block, HybridEmbed, Linear, PatchEmbed, RelativePositionBias
from ..layers.drop import keep_random_tokens
from ..layers.init import init_patch_embed_, init_transformer_
from ..layers.linear import fast_paths_enabled
from ..layers.mlp import get_act_layer
from .heads import linear_head, pack_intermediates
from .registry import build_from_config, register_model
from .resnet import ResNet, ResNetConfig

POS_KINDS = ("learn", "learn2d", "sincos", "sincos_learn", "rel", "none")
POS_WHERE = ("input", "every", "every_shared")


@dataclass(frozen=True)
class ViTConfig:
    img_size: int | tuple[int, int] = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    class_token: bool = True
    global_pool: str = "token"          # "token" (class token) or "avg" (GAP over patch tokens)
    fc_norm: bool = False               # with "avg": MAE fine-tuning's fc_norm(mean(x)), no final norm on the tokens
    pos_embed: str = "learn"            # one of POS_KINDS ("sincos_learn": learned, starting as sin-cos: MAE fine-tuning)
    pos_embed_where: str | None = None  # POS_WHERE; None = "input" ("every" for "rel")
    pre_logits: bool = False            # Linear + tanh before the head, as pre-trained in the paper
    pre_logits_dim: int | None = None   # default: embed_dim
    drop_rate: float = 0.0              # dropout after position embedding, in MLPs/proj, before head
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0         # stochastic depth, linearly increasing with depth
    norm_eps: float = 1e-6
    dynamic_img_size: bool = False      # accept any size divisible by P, resampling E_pos on the fly
    hybrid: ResNetConfig | None = None  # CNN stem: its feature map is patchified with P = 1
    distilled: bool = False             # DeiT: a distillation token after the class token + head_dist
    act: str = "gelu"                   # MLP activation: "gelu" (exact) or "quick_gelu" (OpenAI CLIP)
    norm_pre: bool = False              # LayerNorm on the embedded tokens before block 0 (CLIP's ln_pre)
    patch_bias: bool = True             # bias in the patch-embedding conv (CLIP's conv has none)
    layer_scale: float | None = None    # CaiT/DINOv2 layer scale: each residual branch x gamma (init value); None: off
    reg_tokens: int = 0                 # register tokens (Darcet et al. 2024) after the class token, no position
    pos_embed_antialias: bool = False   # resample a loaded table with antialiasing (DINOv2 with registers does)
    patch_drop: float = 0.0             # PatchDropout (Liu et al. 2022): training keeps a random (1 - p) of the patch tokens
    name: str | None = field(default=None, compare=False)  # registered name, for reports only

    def __post_init__(self):
        if isinstance(self.hybrid, dict):  # from config.json
            object.__setattr__(self, "hybrid", ResNetConfig(**self.hybrid))
        if isinstance(self.img_size, list):
            object.__setattr__(self, "img_size", tuple(self.img_size))
        if self.global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {self.global_pool!r}")
        if self.global_pool == "token" and not self.class_token:
            raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg' (GAP)")
        if self.fc_norm and self.global_pool != "avg":
            raise ValueError("fc_norm=True normalises the average of the patch tokens: it needs global_pool='avg'")
        if self.distilled and not (self.class_token and self.global_pool == "token"):
            raise ValueError("distilled=True (DeiT) needs class_token=True and global_pool='token': "
                             "the two heads read the class and the distillation token")
        if self.pos_embed not in POS_KINDS:
            raise ValueError(f"pos_embed must be one of {POS_KINDS}, got {self.pos_embed!r}")
        if self.pos_embed_where is not None and self.pos_embed_where not in POS_WHERE:
            raise ValueError(f"pos_embed_where must be one of {POS_WHERE}, got {self.pos_embed_where!r}")
        if self.pos_embed == "rel" and self.pos_embed_where == "input":
            raise ValueError("a relative bias lives inside attention: use pos_embed_where 'every' "
                             "(a table per block) or 'every_shared' (one table)")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        get_act_layer(self.act)  # a ValueError naming the valid activations
        if self.reg_tokens < 0:
            raise ValueError(f"reg_tokens must be >= 0, got {self.reg_tokens}")
        if self.reg_tokens and self.where != "input":
            raise ValueError("register tokens join after the position embedding at the input; "
                             f"pos_embed_where={self.pos_embed_where!r} adds tables inside the encoder")
        if not 0.0 <= self.patch_drop < 1.0:
            raise ValueError(f"patch_drop is the share of patch tokens dropped in training, in [0, 1), got {self.patch_drop}")
        if self.patch_drop and self.where != "input":
            raise ValueError("patch_drop drops tokens after the position embedding at the input; "
                             f"pos_embed_where={self.pos_embed_where!r} (or a relative bias) needs every token's place")
        if self.hybrid is not None and not self.patch_bias:
            raise ValueError("patch_bias=False removes the patch conv's bias; a hybrid stem has no patch conv "
                             "(its 1x1 projection keeps its bias): leave patch_bias=True with hybrid")

    @property
    def where(self) -> str:
        if self.pos_embed_where is not None:
            return self.pos_embed_where
        return "every" if self.pos_embed == "rel" else "input"


class VisionTransformer(nn.Module):
    """ViT classifier. (B, C, H, W) -> logits (B, num_classes).

    ``forward_features`` -> normed tokens (B, num_prefix_tokens + N, D); ``forward_head`` pools and
    classifies; ``forward_intermediates`` also returns every block's tokens and attention maps.
    """

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.num_classes = cfg.num_classes
        self.num_features = D
        self.global_pool = cfg.global_pool
        # [class, distillation, registers]; the position table covers the first two kinds only
        self.num_prefix_tokens = int(cfg.class_token) + int(cfg.distilled) + cfg.reg_tokens
        if cfg.hybrid is not None:
            stem = ResNet(ResNetConfig(**{**cfg.hybrid.__dict__, "in_chans": cfg.in_chans, "num_classes": 0}))
            self.patch_embed = HybridEmbed(stem, cfg.img_size, cfg.in_chans, D,
                                           strict_img_size=not cfg.dynamic_img_size)
        else:
            self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, D, bias=cfg.patch_bias,
                                          strict_img_size=not cfg.dynamic_img_size)
        self.grid_size = self.patch_embed.grid_size
        self.input_size = (cfg.in_chans, *self.patch_embed.img_size)  # (C, H, W)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if cfg.class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, D)) if cfg.distilled else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.reg_tokens, D)) if cfg.reg_tokens else None

        # Position information: an additive table at the input or before every block, or a
        # relative bias inside every block's attention.
        self.pos_embed = self.rel_pos = None
        n_tables = cfg.depth if cfg.where == "every" else 1
        if cfg.pos_embed == "rel":
            tables = [RelativePositionBias(self.grid_size, cfg.num_heads, self.num_prefix_tokens)
                      for _ in range(n_tables)]
            self.rel_pos = nn.ModuleList(tables)
        elif cfg.pos_embed != "none":
            tables = [POS_EMBEDS[cfg.pos_embed](self.grid_size, D, self.num_prefix_tokens - cfg.reg_tokens)
                      for _ in range(n_tables)]
            self.pos_embed = tables[0] if n_tables == 1 else nn.ModuleList(tables)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.norm_pre = nn.LayerNorm(D, eps=cfg.norm_eps) if cfg.norm_pre else nn.Identity()  # CLIP's ln_pre

        act_layer = get_act_layer(cfg.act)
        dpr = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # linear decay rule
        self.blocks = nn.ModuleList([
            Block(D, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, drop=cfg.drop_rate,
                  attn_drop=cfg.attn_drop_rate, drop_path=dpr[i], norm_eps=cfg.norm_eps, act_layer=act_layer,
                  layer_scale=cfg.layer_scale)
            for i in range(cfg.depth)])
        # MAE's fine-tuning pool (models_vit.py, global_pool=True): no final norm on the tokens, a new
        # LayerNorm after the average. Registered after the blocks: layer decay puts it with the head.
        self.norm = nn.Identity() if cfg.fc_norm else nn.LayerNorm(D, eps=cfg.norm_eps)
        self.fc_norm = nn.LayerNorm(D, eps=cfg.norm_eps) if cfg.fc_norm else nn.Identity()

        self.head_hidden_size = (cfg.pre_logits_dim or D) if cfg.pre_logits else D
        self.pre_logits = (nn.Sequential(Linear(D, self.head_hidden_size), nn.Tanh())
                           if cfg.pre_logits else nn.Identity())
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = linear_head(self.head_hidden_size, cfg.num_classes)
        self.head_dist = linear_head(self.head_hidden_size, cfg.num_classes) if cfg.distilled else None  # DeiT
        self.distilled_training = cfg.distilled  # train mode returns (cls, dist); see set_distilled_training
        self.init_weights()

    # ---------------------------------------------------------------- init and parameter groups
    def init_weights(self) -> None:
        init_transformer_(self)  # Linear: truncated normal 0.02, zero bias; LayerNorm: 1, 0
        if isinstance(self.patch_embed, PatchEmbed):  # patch embed initialised like a Linear (MAE)
            init_patch_embed_(self.patch_embed.proj)
        else:
            self.patch_embed.backbone.init_weights()
        for tok in (self.cls_token, self.dist_token, self.reg_token):  # tokens at std 0.02
            if tok is not None:
                nn.init.trunc_normal_(tok, std=0.02)
        for name, p in self.named_parameters():  # learned position tables at std 0.02
            if name.startswith(("pos_embed.", "rel_pos.")):
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():  # ... except those that start from a formula (a learned sin-cos table)
            if getattr(m, "starts_from_formula", False):
                m.reset_parameters()
        # The head stays at std 0.02 from scratch: a zero head (the paper's fine-tuning head, see
        # reset_classifier) blocks the backbone's gradient at the start and trained mnist5k far slower.

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Install a new zero-initialised linear head (and optionally another pooling)."""
        if global_pool is not None:
            if global_pool not in ("token", "avg") or (global_pool == "token" and self.cls_token is None):
                raise ValueError(f"cannot pool with {global_pool!r} on this model")
            self.global_pool = global_pool
        self.num_classes = num_classes
        like = next(self.parameters())
        self.head = linear_head(self.head_hidden_size, num_classes, zero=True, like=like)
        if self.head_dist is not None:
            self.head_dist = linear_head(self.head_hidden_size, num_classes, zero=True, like=like)

    def set_distilled_training(self, enable: bool = True) -> None:
        """DeiT: whether training mode returns both heads' logits (for ``tasks.Distill``, the default) or
        their average like eval mode (to fine-tune with ``tasks.Classify``, which expects one tensor)."""
        if enable and self.head_dist is None:
            raise ValueError("this model has no distillation head (build it with distilled=True)")
        self.distilled_training = enable

    def no_weight_decay(self) -> set[str]:
        """Class / distillation tokens and position tables get no weight decay (norms and biases are ndim < 2)."""
        return {n for n, _ in self.named_parameters()
                if n in ("cls_token", "dist_token", "reg_token") or n.startswith(("pos_embed.", "rel_pos."))}

    # ---------------------------------------------------------------- forward
    def _pos(self, i: int) -> nn.Module | None:
        """The additive table to add before block ``i`` (None if nothing is added there)."""
        if self.pos_embed is None or (self.cfg.where == "input" and i > 0):
            return None
        return self.pos_embed[i] if isinstance(self.pos_embed, nn.ModuleList) else self.pos_embed

    def _bias(self, i: int, grid: tuple[int, int]) -> torch.Tensor | None:
        if self.rel_pos is None:
            return None
        return self.rel_pos[i if len(self.rel_pos) > 1 else 0](grid)

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        grid = self.patch_embed.dynamic_grid(x.shape[-2], x.shape[-1])
        x = self.patch_embed(x)                                         # (B, N, D), checks input
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.dist_token) if t is not None]
        if prefix:
            x = torch.cat([*prefix, x], dim=1)                          # (B, P + N, D), class token first
        return x, grid

    def _patch_dropout(self, x: torch.Tensor) -> torch.Tensor:
        """PatchDropout (Liu et al. 2022): keep the prefix tokens and a random round((1 - p) N) of the N
        positioned patch tokens of each image (a fresh draw per image and step; training only)."""
        k = self.num_prefix_tokens - self.cfg.reg_tokens  # registers join after this
        n = x.shape[1] - k
        kept, _ = keep_random_tokens(x[:, k:], max(1, round((1.0 - self.cfg.patch_drop) * n)))
        return torch.cat([x[:, :k], kept], dim=1)

    def _run(self, x: torch.Tensor, collect: bool = False, return_attention: bool = False, first: int = 0):
        """``first`` > 0: the last block computes (and the result holds) only the first ``first`` tokens."""
        x, grid = self._embed(x)
        hidden, attns = [], []
        for i, blk in enumerate(self.blocks):
            pos = self._pos(i)
            if pos is not None:
                x = pos(x, grid)
            if i == 0:
                if self.training and self.cfg.patch_drop:
                    x = self._patch_dropout(x)
                if self.reg_token is not None:  # registers join after the class/distillation tokens, unpositioned
                    k = self.num_prefix_tokens - self.cfg.reg_tokens
                    x = torch.cat([x[:, :k], self.reg_token.expand(x.shape[0], -1, -1), x[:, k:]], dim=1)
                x = self.norm_pre(self.pos_drop(x))
            if collect:
                hidden.append(x)
            if return_attention:
                x, a = blk(x, attn_bias=self._bias(i, grid), return_attention=True)
                attns.append(a)
            elif first and i == len(self.blocks) - 1 and hasattr(blk, "forward_first"):
                x = blk.forward_first(x, first, attn_bias=self._bias(i, grid))
            else:
                x = blk(x, attn_bias=self._bias(i, grid))
        if collect:
            hidden.append(x)
        return self.norm(x), hidden, attns

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> normed tokens (B, num_prefix_tokens + N, D) (not normed with ``fc_norm``: the
        norm follows the pooling then)."""
        return self._run(x)[0]

    def forward_intermediates(self, x: torch.Tensor, return_attention: bool = False) -> dict:
        """Everything the encoder computed, for interop tests, probes and pictures.

        Returns ``features`` (B, P+N, D) (after the final norm), ``hidden_states``: depth + 1 tensors
        (B, P+N, D), the input of each block then the last block's output (HF's layout), and with
        ``return_attention`` also ``attentions``: depth tensors (B, heads, P+N, P+N) of probabilities.
        """
        feats, hidden, attns = self._run(x, collect=True, return_attention=return_attention)
        return pack_intermediates(feats, attns, return_attention, hidden_states=hidden)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """(B, P+N, D) -> (B, D): the class token, or the mean of the patch tokens (GAP), through ``fc_norm``
        when the model has one (MAE's fine-tuning pool; its tokens then come without the final norm)."""
        return x[:, 0] if self.global_pool == "token" else self.fc_norm(x[:, self.num_prefix_tokens:].mean(dim=1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        """Normed tokens (B, P+N, D) -> logits (B, K), or the pooled features with ``pre_logits``.

        DeiT (``distilled``): ``head`` reads the class token and ``head_dist`` the distillation token.
        In training mode the result is the pair ``(cls_logits, dist_logits)``, each (B, K), for
        ``tasks.Distill``; in eval mode it is their average ``(cls + dist) / 2``, DeiT's inference rule
        (also in training mode after ``set_distilled_training(False)``).
        ``pre_logits`` gives the average of the two tokens' (B, D) features in either mode.
        """
        if self.head_dist is None:
            x = self.head_drop(self.pre_logits(self.pool(x)))
            return x if pre_logits else self.head(x)
        x_cls = self.head_drop(self.pre_logits(x[:, 0]))
        x_dist = self.head_drop(self.pre_logits(x[:, 1]))
        if pre_logits:
            return (x_cls + x_dist) / 2
        x_cls, x_dist = self.head(x_cls), self.head_dist(x_dist)
        if self.training and self.distilled_training:
            return x_cls, x_dist
        return (x_cls + x_dist) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> logits. A head reading the class (and distillation) token needs only those
        tokens of the last block: it computes just them (``Block.forward_first``), the other tokens still
        serving as keys and values; same logits as ``forward_head(forward_features(x))``, about one
        block less of work (issue 19). Off with vitkit's other fast paths (``vitkit.layers.fast_linear``)."""
        first = 0 if self.global_pool != "token" or not fast_paths_enabled() else (1 if self.head_dist is None else 2)
        return self.forward_head(self._run(x, first=first)[0])


# -------------------------------------------------------------------- registered variants
# Paper sizes (ViT Table 1; Ti and S from DeiT): name -> (width D, depth, heads).
SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12),
         "large": (1024, 24, 16), "huge": (1280, 32, 16)}


def _vit(base: ViTConfig, **overrides) -> VisionTransformer:
    return VisionTransformer(build_from_config(ViTConfig, base, overrides))


def _register_paper_variants() -> None:
    """``vit_{size}_patch{P}_{res}`` as timm names them, so timm checkpoints map one to one."""
    for size, (dim, depth, heads) in SIZES.items():
        for patch, res in [(8, 224), (14, 224), (16, 224), (32, 224), (16, 384), (32, 384)]:
            name = f"vit_{size}_patch{patch}_{res}"
            base = ViTConfig(img_size=res, patch_size=patch, embed_dim=dim, depth=depth,
                             num_heads=heads, name=name)

            def make(_base=base, **kw):
                return _vit(_base, **kw)

            make.__doc__ = f"ViT-{size[0].upper()}/{patch} at {res}x{res} (D={dim}, depth {depth}, {heads} heads)."
            register_model(make, name=name)


_register_paper_variants()


def _register_deit_variants() -> None:
    """DeiT-Ti/S/B at 224 (the ViT widths, DeiT Table 1), plain and with the distillation token, as timm names them."""
    for size in ("tiny", "small", "base"):
        dim, depth, heads = SIZES[size]
        for distilled in (False, True):
            name = f"deit_{size}_{'distilled_' if distilled else ''}patch16_224"
            base = ViTConfig(img_size=224, patch_size=16, embed_dim=dim, depth=depth, num_heads=heads,
                             distilled=distilled, name=name)

            def make(_base=base, **kw):
                return _vit(_base, **kw)

            make.__doc__ = (f"DeiT-{size[0].upper()}/16 at 224 (D={dim}, depth {depth}, {heads} heads)"
                            + (", distillation token and head" if distilled else ""))
            register_model(make, name=name)


_register_deit_variants()


def _register_dinov2_variants() -> None:
    """DINOv2 ViT-S/14 and ViT-B/14 (Oquab et al. 2024), plain and with 4 registers (Darcet et al. 2024), as
    timm names them: 518x518 (the released position table: 37x37), layer scale (init 1.0), LayerNorm eps 1e-6,
    no head (a feature backbone: forward gives the normed class token). The sizes are those of transformers'
    convert_dinov2_with_registers_to_hf.py (get_dinov2_with_registers_config) and the hub configs."""
    for size in ("small", "base"):
        dim, depth, heads = SIZES[size]
        for regs in (0, 4):
            name = f"vit_{size}_patch14_{f'reg{regs}_' if regs else ''}dinov2"
            base = ViTConfig(img_size=518, patch_size=14, embed_dim=dim, depth=depth, num_heads=heads,
                             num_classes=0, layer_scale=1.0, reg_tokens=regs, pos_embed_antialias=bool(regs),
                             norm_eps=1e-6, name=name)

            def make(_base=base, **kw):
                return _vit(_base, **kw)

            make.__doc__ = (f"DINOv2 ViT-{size[0].upper()}/14 (D={dim}, depth {depth}, {heads} heads), layer scale"
                            + (f", {regs} register tokens" if regs else "") + "; 518x518, no head.")
            register_model(make, name=name)


_register_dinov2_variants()

# Small named configs for 28x28 digits (mnist5k) and 8x8 digits, used by the demo and tests.
MNIST = dict(img_size=28, in_chans=1, num_classes=10)


@register_model
def vit_mnist_patch4_28(**kw) -> VisionTransformer:
    """The demo's ViT for 28x28 digits: P=4 (7x7=49 patches), D=128, 6 blocks, 4 heads, GAP."""
    return _vit(ViTConfig(**MNIST, patch_size=4, embed_dim=128, depth=6, num_heads=4, mlp_ratio=2.0,
                          class_token=False, global_pool="avg", name="vit_mnist_patch4_28"), **kw)


@register_model
def vit_mnist_patch7_28(**kw) -> VisionTransformer:
    """The demo's ViT for 28x28 digits: P=7 (4x4=16 patches), D=128, 6 blocks, 4 heads, MLP x2, GAP.

    With 16 tokens a step costs a third of P=4, so the same CPU time buys three times the epochs,
    which on 4,000 digits is worth more than the finer grid (README.md: 97.6% vs 93.9% held-out).
    """
    return _vit(ViTConfig(**MNIST, patch_size=7, embed_dim=128, depth=6, num_heads=4, mlp_ratio=2.0,
                          class_token=False, global_pool="avg", name="vit_mnist_patch7_28"), **kw)


@register_model
def vit_nano_patch4_28(**kw) -> VisionTransformer:
    """A very small ViT for 28x28 digits and fast tests: D=64, 4 blocks, 4 heads, class token."""
    return _vit(ViTConfig(**MNIST, patch_size=4, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0,
                          name="vit_nano_patch4_28"), **kw)


@register_model
def vit_nano_patch2_8(**kw) -> VisionTransformer:
    """A very small ViT for scikit-learn's 8x8 digits: P=2 (16 patches), D=64, 4 blocks."""
    return _vit(ViTConfig(img_size=8, in_chans=1, num_classes=10, patch_size=2, embed_dim=64, depth=4,
                          num_heads=4, mlp_ratio=2.0, name="vit_nano_patch2_8"), **kw)


@register_model
def vit_hybrid_nano_28(**kw) -> VisionTransformer:
    """Hybrid ViT for 28x28: a 2-stage ResNet stem (stride 2) -> 14x14 map -> P=1 tokens, D=64."""
    stem = ResNetConfig(widths=(32, 64), depths=(1, 1), stem_width=32, stem_kernel=3, stem_stride=1,
                        stem_pool=False)
    return _vit(ViTConfig(**MNIST, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0, hybrid=stem,
                          name="vit_hybrid_nano_28"), **kw)


@register_model
def deit_nano_distilled_patch4_28(**kw) -> VisionTransformer:
    """DeiT for 28x28 digits: vit_nano_patch4_28 (D=64, 4 blocks) with a distillation token and head."""
    return _vit(ViTConfig(**MNIST, patch_size=4, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0,
                          distilled=True, name="deit_nano_distilled_patch4_28"), **kw)


@register_model
def deit_nano_distilled_patch2_8(**kw) -> VisionTransformer:
    """DeiT for scikit-learn's 8x8 digits: vit_nano_patch2_8 with a distillation token and head."""
    return _vit(ViTConfig(img_size=8, in_chans=1, num_classes=10, patch_size=2, embed_dim=64, depth=4,
                          num_heads=4, mlp_ratio=2.0, distilled=True, name="deit_nano_distilled_patch2_8"), **kw)
