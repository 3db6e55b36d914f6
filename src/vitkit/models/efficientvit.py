"""EfficientViT (Cai et al. 2023, "EfficientViT: Lightweight Multi-Scale Attention for High-Resolution
Dense Prediction"), the B0-B3 classification models.

    stem:        3x3 conv (stride 2) + BN + Hardswish, then depths[0] residual DSConvs
                 (depthwise 3x3 -> pointwise, BN after each)
    stages 1-2:  depths[i] MBConvs (expand 4); the first one downsamples (stride 2, no residual),
                 the rest are residual
    stages 3-4:  an MBConv that downsamples (stride 2, fewer norms, no residual), then depths[i]
                 EfficientViT blocks:  x + LiteMLA(x)  (multi-scale ReLU linear attention, Sec. 3.1)
                                       x + MBConv(x)   (the FFN with a depthwise conv, fewer norms)
    head:        1x1 conv to head_widths[0] + BN + Hardswish -> global average pool ->
                 Linear (no bias) to head_widths[1] + LayerNorm + Hardswish -> dropout -> Linear

Widths, depths and head dims of B0-B3 are those of mit-han-lab/efficientvit
(``efficientvit/models/efficientvit/backbone.py`` and ``cls.py``). Maps stay channels-first
(B, C, H, W). Linear attention is O(N) in the number of tokens, so the model takes any resolution.
Its denominator eps (``attn_eps``) is the official 1e-15; timm's port (``efficientvit_mit.py``
``LiteMLA``) adds 1e-5, so the default pretrained sources (timm's files, ``weights/efficientvit.py``)
load with ``attn_eps=1e-5``, timm's function.

Training from scratch follows the official recipe (``applications/efficientvit_cls``):
    zero_last_gamma   the last BatchNorm of every residual branch starts at gamma = 0, so every
                      x + f(x) starts as the identity (``--last_gamma 0``, ``apps/utils/init.py``).
    drop_path_rate    stochastic depth on the residual blocks of the four stages, linear in depth:
                      the i-th of n drops its branch with p = rate (i + 1) / n (``models/nn/drop.py``
                      ``apply_droppath``); 0.05 (``configs/imagenet/default.yaml``), 0.1 for B3.
Both change training only: loaded weights overwrite the zero gammas, and drop path has no weights.
The official drop path also ramps p with training progress (``scheduled=True``: p x the fraction
of the post-warmup steps done, so its mean over a run is half the final p); vitkit's trainer tells
a model nothing of its progress, so here p is constant from the first step.

Inference: ``model.fuse()`` (:func:`fuse_for_inference`) returns an eval-only copy computing the same
function faster, above all at high resolution, where the early stages' convolutions over large maps
dominate: every BatchNorm folded into its conv, channels-last maps, oneDNN convs with the Hardswish
fused, MBConvs run in cache-sized row bands. It also runs under CPU bf16 autocast.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import DropPath, Linear, MultiScaleLinearAttention, check_image, fast_linear_enabled, to_2tuple
from ..layers.linear import freeze
from ..layers.init import init_transformer_
from ..layers.mlp import ConvNormAct, MBConv
from .heads import linear_head
from .registry import build_from_config, register_model


@dataclass(frozen=True)
class EfficientViTConfig:
    img_size: int | tuple[int, int] = 224
    in_chans: int = 3
    num_classes: int = 1000
    widths: tuple[int, ...] = (8, 16, 32, 64, 128)     # stem, stages 1-4
    depths: tuple[int, ...] = (1, 2, 2, 2, 2)          # stem DSConvs, blocks per stage
    strides: tuple[int, ...] = (2, 2, 2, 2, 2)         # stem conv, first block of each stage
    head_dim: int = 16                                 # per-head q/k/v dim of the linear attention
    expand_ratio: float = 4.0                          # MBConv hidden = expand_ratio * in
    scales: tuple[int, ...] = (5,)                     # multi-scale aggregation kernels
    head_widths: tuple[int, int] = (1024, 1280)        # classifier: 1x1 conv width, hidden Linear width
    drop_rate: float = 0.0                             # dropout before the last Linear
    drop_path_rate: float = 0.05                       # stochastic depth of the stages' residual blocks (official)
    zero_last_gamma: bool = True                       # residual branches start at zero (official init)
    norm_eps: float = 1e-5                             # BatchNorm / LayerNorm eps (PyTorch default)
    attn_eps: float = 1e-15                            # linear attention's denominator eps (official; timm: 1e-5)
    dynamic_img_size: bool = False                     # accept any H, W
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        for f in ("widths", "depths", "strides", "scales", "head_widths", "img_size"):
            if isinstance(getattr(self, f), list):  # from config.json
                object.__setattr__(self, f, tuple(getattr(self, f)))
        if not len(self.widths) == len(self.depths) == len(self.strides) == 5:
            raise ValueError(f"widths {self.widths}, depths {self.depths} and strides {self.strides} need 5 "
                             f"entries each (stem + 4 stages)")
        for w in self.widths[3:]:
            if w < self.head_dim:
                raise ValueError(f"attention stage width {w} is below head_dim {self.head_dim}")
        if len(self.head_widths) != 2:
            raise ValueError(f"head_widths needs 2 entries, got {self.head_widths}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    @property
    def num_features(self) -> int:
        return self.widths[-1]


def _add_residual(x: torch.Tensor, y: torch.Tensor, inplace: bool) -> torch.Tensor:
    """x + y; with ``inplace`` (a fused model: y is a branch's fresh output, never kept) into y's memory,
    which saves allocating (and, at high resolution, page-faulting in) one more map."""
    return y.add_(x) if inplace and y.dtype == x.dtype and y.shape == x.shape else x + y


class Residual(nn.Module):
    """x + DropPath(fn(x)) (the official ``ResidualBlock`` with an identity shortcut)."""

    inplace_add = False  # set by fuse_for_inference

    def __init__(self, fn: nn.Module, drop_path: float = 0.0):
        super().__init__()
        self.fn = fn
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _add_residual(x, self.drop_path(self.fn(x)), self.inplace_add)


class DSConv(nn.Sequential):
    """Depthwise 3x3 (BN, Hardswish) -> pointwise 1x1 (BN). (B, C, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_chans: int, out_chans: int, norm_eps: float):
        super().__init__(ConvNormAct(in_chans, in_chans, 3, groups=in_chans, act_layer=nn.Hardswish,
                                     norm_eps=norm_eps),
                         ConvNormAct(in_chans, out_chans, 1, norm_eps=norm_eps))


class EfficientViTBlock(nn.Module):
    """Context (multi-scale linear attention) then local (MBConv) module, each residual (two residual
    blocks, as the official ``context_module`` and ``local_module``). (B, C, H, W) -> (B, C, H, W)."""

    inplace_add = False  # set by fuse_for_inference

    def __init__(self, dim: int, head_dim: int, expand_ratio: float, scales: tuple[int, ...], norm_eps: float,
                 attn_eps: float = 1e-15):
        super().__init__()
        self.context = MultiScaleLinearAttention(dim, dim, head_dim=head_dim, scales=scales, eps=attn_eps)
        self.local = MBConv(dim, dim, expand_ratio, fewer_norm=True, norm_eps=norm_eps)
        self.drop_path_context, self.drop_path_local = DropPath(), DropPath()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _add_residual(x, self.drop_path_context(self.context(x)), self.inplace_add)
        return _add_residual(x, self.drop_path_local(self.local(x)), self.inplace_add)


def _last_batchnorm(branch: nn.Module) -> nn.BatchNorm2d:
    """The last BatchNorm of a residual branch: DSConv's and MBConv's ``point_conv`` norm, LiteMLA's
    ``proj`` norm (the modules the official ``zero_last_gamma`` zeroes)."""
    return [m for m in branch.modules() if isinstance(m, nn.BatchNorm2d)][-1]


class EfficientViT(nn.Module):
    """EfficientViT classifier. (B, C, H, W) -> logits (B, num_classes).

    ``forward_features`` -> the last stage's map (B, num_features, H/32, W/32) (strides 2 everywhere);
    ``forward_head(pre_logits=True)`` -> the head's hidden features (B, head_widths[1]).
    ``fuse()`` -> an inference-only copy with every BatchNorm folded into its conv, channels-last
    (:func:`fuse_for_inference`).
    """

    fused = False  # True on the inference-only copies fuse_for_inference makes

    def __init__(self, cfg: EfficientViTConfig):
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.num_features = cfg.num_features
        self.img_size = to_2tuple(cfg.img_size)
        self.input_size = (cfg.in_chans, *self.img_size)  # (C, H, W)
        w, d, s, eps = cfg.widths, cfg.depths, cfg.strides, cfg.norm_eps

        self.stem = nn.Sequential(
            ConvNormAct(cfg.in_chans, w[0], 3, s[0], act_layer=nn.Hardswish, norm_eps=eps),
            *[Residual(DSConv(w[0], w[0], eps)) for _ in range(d[0])])
        self.stages = nn.ModuleList()
        for i in (1, 2):  # local stages: MBConvs only
            blocks = []
            for j in range(d[i]):
                cin, stride = (w[i - 1], s[i]) if j == 0 else (w[i], 1)
                mb = MBConv(cin, w[i], cfg.expand_ratio, stride=stride, norm_eps=eps)
                blocks.append(Residual(mb) if stride == 1 and cin == w[i] else mb)
            self.stages.append(nn.Sequential(*blocks))
        for i in (3, 4):  # attention stages: a downsampling MBConv, then EfficientViT blocks
            self.stages.append(nn.Sequential(
                MBConv(w[i - 1], w[i], cfg.expand_ratio, stride=s[i], fewer_norm=True, norm_eps=eps),
                *[EfficientViTBlock(w[i], cfg.head_dim, cfg.expand_ratio, cfg.scales, eps, cfg.attn_eps)
                  for _ in range(d[i])]))

        h0, h1 = cfg.head_widths
        self.head_conv = ConvNormAct(w[-1], h0, 1, act_layer=nn.Hardswish, norm_eps=eps)
        self.head_fc = nn.Sequential(Linear(h0, h1, bias=False), nn.LayerNorm(h1, eps=eps), nn.Hardswish())
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = linear_head(self.cfg.head_widths[1], cfg.num_classes)
        drops = self.stage_drop_paths()
        for drop, p in zip(drops, drop_path_rates(cfg.drop_path_rate, len(drops))):
            drop.p = p
        self.init_weights()

    def residual_branches(self) -> list[nn.Module]:
        """The f of every x + f(x), input to output: the stem's DSConvs, the residual MBConvs of
        stages 1-2, and the context and local modules of every EfficientViT block."""
        out = []
        for m in self.modules():
            if isinstance(m, Residual):
                out.append(m.fn)
            elif isinstance(m, EfficientViTBlock):
                out += [m.context, m.local]
        return out

    def stage_drop_paths(self) -> list[DropPath]:
        """The DropPath of every residual block of the four stages, input to output (the official code
        applies drop path to ``backbone.stages``: the stem's residual DSConvs never drop)."""
        return [m for m in self.stages.modules() if isinstance(m, DropPath)]

    # ---------------------------------------------------------------- fused inference mode
    def fuse(self, channels_last: bool = True) -> EfficientViT:
        """An inference-only copy with every Conv + BatchNorm folded into one conv (see
        :func:`fuse_for_inference`); this model is left as it is."""
        return fuse_for_inference(self, channels_last=channels_last)

    def train(self, mode: bool = True) -> EfficientViT:
        if mode and self.fused:
            raise RuntimeError("this EfficientViT was fused for inference (its BatchNorms are folded into the "
                               "convs, so it has no batch statistics to train with): train the model it was "
                               "made from, then call fuse() again")
        return super().train(mode)

    # ---------------------------------------------------------------- init and parameter groups
    def init_weights(self) -> None:
        """Linear (the head): truncated normal 0.02; norms: 1, 0; with ``zero_last_gamma`` (the official
        ``--last_gamma 0``) the last BatchNorm of every residual branch gets gamma = 0."""
        # Convs keep PyTorch's default (Kaiming-uniform) init: at std 0.02 an Adam step moves a conv
        # weight by ~10%, the BatchNorm running statistics lag behind, and eval-mode outputs collapse.
        init_transformer_(self)  # Linear (the head): truncated normal 0.02; LayerNorm: 1, 0
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.cfg.zero_last_gamma:
            for branch in self.residual_branches():
                nn.init.zeros_(_last_batchnorm(branch).weight)

    def reset_classifier(self, num_classes: int) -> None:
        """Install a new zero-initialised linear head (``num_classes=0``: no head, pre-logits)."""
        self.num_classes = num_classes
        self.head = linear_head(self.cfg.head_widths[1], num_classes, zero=True, like=next(self.parameters()))

    def no_weight_decay(self) -> set[str]:
        """Nothing beyond the rule's norms and biases (ndim < 2): there are no tokens or tables."""
        return set()

    # ---------------------------------------------------------------- forward
    def _check(self, x: torch.Tensor) -> None:
        check_image(x, self.cfg.in_chans, None if self.cfg.dynamic_img_size else self.img_size,
                    what=self.cfg.name or "EfficientViT")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the last stage's map (B, num_features, h, w) (channels-last memory in a fused
        channels-last model, whichever layout the image came in)."""
        self._check(x)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_intermediates(self, x: torch.Tensor) -> dict:
        """``features`` (as forward_features) and ``stages``: the stem's and each stage's map (B, C_i, H_i, W_i)."""
        self._check(x)
        maps = [self.stem(x)]
        for stage in self.stages:
            maps.append(stage(maps[-1]))
        return {"features": maps[-1], "stages": maps}

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, num_features, h, w) -> 1x1 conv, pool, hidden Linear (B, head_widths[1]) -> logits."""
        x = self.head_fc(self.head_conv(x).mean(dim=(2, 3)))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def drop_path_rates(rate: float, n: int) -> list[float]:
    """The official linear decay (``apply_droppath``, ``linear_decay=True``): block i of n drops with
    probability rate (i + 1) / n, so the last block drops with ``rate`` and none is skipped."""
    return [rate * (i + 1) / n for i in range(n)]


# -------------------------------------------------------------------- fused inference mode
def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of one conv computing ``bn(conv(x))`` with bn in eval mode (its running
    statistics): with s = gamma / sqrt(var + eps),

        w' = w s (per output channel),   b' = beta + (b - mean) s   (b = 0 for a conv without bias).

    Computed in float64, returned in the conv's dtype. ``bn=None``: the conv's own weight and bias."""
    w = conv.weight.detach()
    b = conv.bias.detach() if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    if bn is None:
        return w.clone(), b.clone()
    if not bn.track_running_stats or bn.running_mean is None:
        raise ValueError("a BatchNorm without running statistics cannot be folded into a conv")
    scale = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.affine:
        scale = scale * bn.weight.detach().double()
    shift = bn.bias.detach().double() if bn.affine else torch.zeros_like(scale)
    w2 = w.double() * scale.reshape(-1, *([1] * (w.dim() - 1)))
    b2 = shift + (b.double() - bn.running_mean.double()) * scale
    return w2.to(w.dtype), b2.to(w.dtype)


# activations oneDNN applies as a post-op of its convolution (the rest run after it)
_POST_OPS = {nn.Identity: "none", nn.Hardswish: "hardswish", nn.ReLU: "relu", nn.SiLU: "swish",
             nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}


def _onednn_conv_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


_ONEDNN_CONV = _onednn_conv_available()


class FusedConv2d(nn.Module):
    """``act(conv(x))`` with a BatchNorm folded into the conv (:func:`fold_batchnorm`): one pass over
    the output instead of three (conv, norm, activation). Inference only: the weights are frozen.

    On the CPU (fp32, or bf16 under ``torch.autocast("cpu", torch.bfloat16)``) it calls oneDNN's
    convolution with the activation as a post-op, ``torch.ops.mkldnn._convolution_pointwise``, for
    every conv: ``F.conv2d`` sends stride-1 1x1 convs at batch 1 on one thread to its slow im2col path
    (and channels-last maps through two layout copies), which EfficientViT's early stages at high
    resolution are made of. Under bf16 autocast it casts as autocast would (input and weight to bf16,
    bf16 out), keeping one bf16 copy of the weights. Elsewhere (CUDA, gradients wanted for the input,
    tracing, ``torch.compile``, ``vitkit.layers.fast_linear(False)``): ``F.conv2d`` and the activation.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, act: nn.Module | None = None):
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"only zero padding given as numbers can be fused, got {conv}")
        w, b = fold_batchnorm(conv, bn)
        self.weight = nn.Parameter(w, requires_grad=False)
        self.bias = nn.Parameter(b, requires_grad=False)
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.act = act if act is not None else nn.Identity()
        self.post_op = _POST_OPS.get(type(self.act))  # None: the activation runs after the conv
        self._cast: tuple | None = None

    def _onednn(self, x: torch.Tensor) -> torch.dtype | None:
        """The dtype to run oneDNN's conv in for this call, or None for F.conv2d."""
        if not (_ONEDNN_CONV and fast_linear_enabled() and x.device.type == "cpu" and self.weight.device.type == "cpu"
                and not torch.compiler.is_compiling() and not torch.jit.is_tracing()
                and not torch.jit.is_scripting() and not (torch.is_grad_enabled() and x.requires_grad)):
            return None
        if torch.is_autocast_enabled("cpu"):
            return torch.bfloat16 if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None
        return x.dtype if x.dtype in (torch.float32, torch.bfloat16) and x.dtype == self.weight.dtype else None

    def _weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """weight and bias in ``dtype`` (a cached copy while the weights stay as they are)."""
        w, b = self.weight, self.bias
        if w.dtype == dtype:
            return w, b
        key = (dtype, w.data_ptr(), w._version, b.data_ptr(), b._version)
        if self._cast is None or self._cast[0] != key:
            fmt = torch.channels_last if w.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
            self._cast = (key, w.detach().to(dtype, memory_format=fmt), b.detach().to(dtype))
        return self._cast[1], self._cast[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self._onednn(x)
        if dtype is None:
            return self.act(F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                                     self.groups))
        return self.onednn(x, dtype, self.padding)

    def onednn(self, x: torch.Tensor, dtype: torch.dtype, padding: list[int]) -> torch.Tensor:
        """The conv on oneDNN in ``dtype`` with the given (rows, columns) zero padding."""
        w, b = self._weights(dtype)
        y = torch.ops.mkldnn._convolution_pointwise(x.to(dtype), w, b, padding, self.stride, self.dilation,
                                                    self.groups, self.post_op or "none", [], "")
        return y if self.post_op is not None else self.act(y)

    @property
    def pointwise(self) -> bool:
        """A 1x1 conv with stride 1: the same function of every pixel on its own."""
        return (tuple(self.weight.shape[2:]) == (1, 1) and self.stride == [1, 1] and self.padding == [0, 0])

    def __deepcopy__(self, memo):  # the cast cache is not copied
        new = copy.copy(self)
        new.__dict__ = copy.deepcopy({k: v for k, v in self.__dict__.items() if k != "_cast"}, memo)
        new._cast = None
        return new

    def extra_repr(self) -> str:
        o, i = self.weight.shape[:2]
        return (f"{i * self.groups}, {o}, kernel_size={tuple(self.weight.shape[2:])}, stride={tuple(self.stride)}, "
                f"padding={tuple(self.padding)}, groups={self.groups}, post_op={self.post_op}")


BAND_BYTES = 2 << 20
"""Row bands of a :class:`BandedConvs` chain hold about this many bytes of its widest map (the input of
its k x k conv). On one thread of a loaded 2-core Zen 4 (1 MiB L2 per core; interleaved medians)
B1's fused MBConvs at 1024 px ran 2.5-2.7x faster in bands of 1-4 MiB than whole (stage 1's first
MBConv 121 -> 45 ms, a residual one on a 256 px map 150 -> 59 ms), best near 2 MiB; 8 MiB bands were
slower again. In the whole fused model the bands gave ~1.1-1.2x at 1024 px and nothing measurable at
224 and 512 px."""


class BandedConvs(nn.Sequential):
    """A chain of :class:`FusedConv2d` made of pointwise convs around one k x k conv (MBConv: expand,
    depthwise, project; DSConv: depthwise, pointwise), run in bands of output rows where its widest map
    is large: each band computes the rows of the k x k conv's input it needs (its receptive field,
    zero rows past the image's edge), the conv with padding along the columns only, the convs after
    it, and writes its rows of the output. Same arithmetic per pixel as the whole chain; the wide
    maps (an MBConv's 4x expanded one) then never leave the cache, and no map larger than a band is
    allocated (at high resolution a fresh multi-MB tensor costs page faults on every call).

    Bands only on oneDNN's path with a channels-last map whose k x k input exceeds 2 BAND_BYTES;
    otherwise, and for any other chain, one conv after the other (``nn.Sequential``).
    """

    def _plan(self, x: torch.Tensor):
        """(dtype, index of the k x k conv, output rows per band) or None: run whole."""
        convs = list(self)
        if x.dim() != 4 or not all(isinstance(c, FusedConv2d) for c in convs):
            return None
        spatial = [i for i, c in enumerate(convs) if not c.pointwise]
        if len(spatial) != 1 or convs[spatial[0]].dilation != [1, 1]:
            return None
        j = spatial[0]
        dtype = convs[0]._onednn(x)
        if dtype is None or not x.is_contiguous(memory_format=torch.channels_last):
            return None
        conv = convs[j]
        k, s = conv.weight.shape[2], conv.stride[0]
        H, W = x.shape[2:]
        row_bytes = W * conv.weight.shape[1] * conv.groups * torch.finfo(dtype).bits // 8
        if H * row_bytes <= 2 * BAND_BYTES:
            return None
        rows_in = max(k, BAND_BYTES // row_bytes)
        return dtype, j, max(1, (rows_in - k) // s + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self._plan(x)
        if plan is None:
            return super().forward(x)
        dtype, j, rows = plan
        convs = list(self)
        conv = convs[j]
        (k, kw), (s, sw), (p, pw) = conv.weight.shape[2:], conv.stride, conv.padding
        B, _, H, W = x.shape
        Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * pw - kw) // sw + 1
        out = None
        for r0 in range(0, Ho, rows):
            r1 = min(Ho, r0 + rows)
            i0, i1 = r0 * s - p, (r1 - 1) * s - p + k           # input rows of output rows r0..r1-1
            lo, hi = max(i0, 0), min(i1, H)
            h = x[:, :, lo:hi]                                   # a channels-last view
            for c in convs[:j]:
                h = c.onednn(h, dtype, c.padding)
            if lo > i0 or hi < i1:                               # the zero padding past the top / bottom edge
                h = F.pad(h, (0, 0, lo - i0, i1 - hi))
            h = conv.onednn(h, dtype, [0, pw])
            for c in convs[j + 1:]:
                h = c.onednn(h, dtype, c.padding)
            if out is None:
                out = torch.empty(B, h.shape[1], Ho, Wo, dtype=h.dtype, device=h.device,
                                  memory_format=torch.channels_last)
            out[:, :, r0:r1] = h
        return out


def fuse_for_inference(model: EfficientViT, channels_last: bool = True) -> EfficientViT:
    """An inference-only copy of an EfficientViT in which every Conv + BatchNorm (+ activation) is one
    :class:`FusedConv2d`; the original is untouched. ``model.fuse()`` calls this.

    - Folded: each ConvNormAct (stem, DSConvs, MBConvs, head conv) and LiteMLA's ``proj`` (conv + BN);
      LiteMLA's qkv and aggregation convs become FusedConv2d without a norm. On the CPU every conv
      runs on oneDNN with its Hardswish as a post-op (fp32, or bf16 under CPU bf16 autocast).
    - ``channels_last`` (default): the weights, and so every map after the stem's first conv (the image
      may come in either layout), are channels-last, the layout oneDNN's convs and depthwise convs run
      fastest in. LiteMLA then takes q, k, v as views of its maps, and each MBConv and DSConv is a
      :class:`BandedConvs` that runs in row bands where its expanded map is large.
    - Residual sums are added into the branch's fresh output; vitkit's Linear layers are prepacked
      (:func:`vitkit.layers.linear.freeze`).

    Same function as ``model.eval()`` (to float rounding: ~1e-6 relative in fp32). The copy is
    eval-only: ``.train()`` raises, parameters do not require grad, and its state_dict has the
    folded weights (no BatchNorm entries): load weights into the unfused model, then fuse. Maps that
    come back (``forward_features``, ``forward_intermediates``) are channels-last tensors. Input
    gradients (saliency) work, on F.conv2d.

    B1 at batch 1, one thread of a loaded 2-core Zen 4 (AMD EPYC family 25 model 17), interleaved
    medians: see ``benchmarks/results/efficient.md`` for the run of record.
    """
    if not isinstance(model, EfficientViT):
        raise TypeError(f"fuse_for_inference takes an EfficientViT, got {type(model).__name__}")
    if model.fused:
        raise ValueError("this EfficientViT is already fused")
    with torch.inference_mode(False):  # the copy's weights are ordinary tensors, even when fused in inference mode
        return _fuse(model, channels_last)


def _fuse(model: EfficientViT, channels_last: bool) -> EfficientViT:
    fused = freeze(model)  # a deep copy in eval mode, requires_grad False, Linear weights prepacked
    for parent in list(fused.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ConvNormAct):
                bn = child.norm if isinstance(child.norm, nn.BatchNorm2d) else None
                setattr(parent, name, FusedConv2d(child.conv, bn, child.act))
            elif isinstance(child, MultiScaleLinearAttention):
                child.qkv = FusedConv2d(child.qkv)
                for agg in child.aggreg:
                    for i, conv in enumerate(agg):
                        agg[i] = FusedConv2d(conv)
                conv, bn = child.proj
                child.proj = FusedConv2d(conv, bn)
    for parent in list(fused.modules()):  # MBConvs and DSConvs: chains that can run in row bands
        for name, child in list(parent.named_children()):
            if isinstance(child, (MBConv, DSConv)):
                setattr(parent, name, BandedConvs(OrderedDict(child.named_children())))
    left = [n for n, m in fused.named_modules() if isinstance(m, (nn.BatchNorm2d, nn.Conv2d))]
    if left:
        raise RuntimeError(f"fuse_for_inference left these unfused: {left}")
    for m in fused.modules():
        if isinstance(m, (Residual, EfficientViTBlock)):
            m.inplace_add = True
    fused.fused = True
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
    return fused.requires_grad_(False)


# -------------------------------------------------------------------- registered variants
# mit-han-lab/efficientvit: backbone.py (widths, depths, dim) and cls.py (head widths); drop path
# from applications/efficientvit_cls/configs/imagenet (default.yaml 0.05; efficientvit_b3.yaml 0.1).
DROP_PATH = {"b0": 0.05, "b1": 0.05, "b2": 0.05, "b3": 0.1}
SIZES = {"b0": ((8, 16, 32, 64, 128), (1, 2, 2, 2, 2), 16, (1024, 1280)),
         "b1": ((16, 32, 64, 128, 256), (1, 2, 3, 3, 4), 16, (1536, 1600)),
         "b2": ((24, 48, 96, 192, 384), (1, 3, 4, 4, 6), 32, (2304, 2560)),
         "b3": ((32, 64, 128, 256, 512), (1, 4, 6, 6, 9), 32, (2304, 2560))}


def _efficientvit(base: EfficientViTConfig, **overrides) -> EfficientViT:
    return EfficientViT(build_from_config(EfficientViTConfig, base, overrides))


def _register_paper_variants() -> None:
    """``efficientvit_b0`` .. ``efficientvit_b3`` at 224 (timm's names without the pretrained tag)."""
    for size, (widths, depths, head_dim, head_widths) in SIZES.items():
        name = f"efficientvit_{size}"
        base = EfficientViTConfig(widths=widths, depths=depths, head_dim=head_dim, head_widths=head_widths,
                                  drop_path_rate=DROP_PATH[size], name=name)

        def make(_base=base, **kw):
            return _efficientvit(_base, **kw)

        make.__doc__ = (f"EfficientViT-{size.upper()} at 224 (widths {widths}, depths {depths}, head dim "
                        f"{head_dim}, drop path {DROP_PATH[size]}).")
        register_model(make, name=name)


_register_paper_variants()


@register_model
def efficientvit_nano_28(**kw) -> EfficientViT:
    """A small EfficientViT for 28x28 digits: maps 14 (stem) -> 14 -> 7 -> 7 (attention, 49 tokens)
    -> 4 (attention, 16 tokens); widths (16, 24, 32, 64, 96), head (256, 256); the official training
    defaults (drop path 0.05, zero last gamma)."""
    return _efficientvit(EfficientViTConfig(img_size=28, in_chans=1, num_classes=10, widths=(16, 24, 32, 64, 96),
                                            depths=(1, 1, 2, 2, 2), strides=(2, 1, 2, 1, 2), head_dim=16,
                                            head_widths=(256, 256), name="efficientvit_nano_28"), **kw)
