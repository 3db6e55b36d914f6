"""Ports of timm's EfficientViT-MIT and ConViT module trees, for tests where timm does not import.

Written from huggingface/pytorch-image-models (the revision read: commit aa4b5850c1543fa488abf260f18390eda46cf85d)
``timm/models/efficientvit_mit.py`` (``ConvNormAct``, ``DSConv``, ``MBConv``, ``LiteMLA``,
``EfficientVitBlock``, ``ResidualBlock``, ``Stem``, ``EfficientVitStage``, ``ClassifierHead``,
``EfficientVit``) and ``timm/models/convit.py`` (``GPSA``, ``MHSA``, ``Block``, ``ConVit``), with
``timm/layers`` ``Mlp``, ``PatchEmbed`` and ``LayerNorm`` (eps 1e-6) reduced to what these models use.
Each module has timm's attribute names, in timm's order, so ``state_dict()`` has timm's keys and
shapes (the hub files are that state dict: ``build_model_with_cfg`` without a checkpoint filter), and
timm's forward arithmetic, so the same file gives timm's outputs. Dropout and drop path are left out
(identity in eval). Nothing here is vitkit code: the tests load these files through vitkit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)  # timm.data.constants
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------- efficientvit_mit.py
def _pad(k: int, stride: int) -> int:
    """timm.layers.padding.get_padding (dilation 1): create_conv2d's default symmetric padding."""
    return ((stride - 1) + (k - 1)) // 2


class ConvNormAct(nn.Module):
    """efficientvit_mit.ConvNormAct: dropout (no state), conv, norm (BatchNorm2d or Identity), act."""

    def __init__(self, cin, cout, k=3, stride=1, groups=1, bias=False, norm=True, act=None):
        super().__init__()
        self.dropout = nn.Dropout(0.0)
        self.conv = nn.Conv2d(cin, cout, k, stride, _pad(k, stride), groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(cout) if norm else nn.Identity()
        self.act = act() if act is not None else nn.Identity()

    def forward(self, x):
        return self.act(self.norm(self.conv(self.dropout(x))))


class DSConv(nn.Module):
    """Stem blocks (build_local_block, expand_ratio 1, default): depthwise (BN, act) -> pointwise (BN)."""

    def __init__(self, cin, cout, stride=1, act=nn.Hardswish):
        super().__init__()
        self.depth_conv = ConvNormAct(cin, cin, 3, stride, groups=cin, act=act)
        self.point_conv = ConvNormAct(cin, cout, 1)

    def forward(self, x):
        return self.point_conv(self.depth_conv(x))


class MBConv(nn.Module):
    """efficientvit_mit.MBConv as build_local_block makes it: ``fewer_norm`` -> biases (True, True, False),
    norms (None, None, BN); else no biases, three norms; acts (act, act, None); mid = round(in * 4)."""

    def __init__(self, cin, cout, stride=1, expand_ratio=4.0, fewer_norm=False, act=nn.Hardswish):
        super().__init__()
        mid = round(cin * expand_ratio)
        self.inverted_conv = ConvNormAct(cin, mid, 1, 1, bias=fewer_norm, norm=not fewer_norm, act=act)
        self.depth_conv = ConvNormAct(mid, mid, 3, stride, groups=mid, bias=fewer_norm, norm=not fewer_norm, act=act)
        self.point_conv = ConvNormAct(mid, cout, 1)

    def forward(self, x):
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class LiteMLA(nn.Module):
    """efficientvit_mit.LiteMLA (heads = in // dim, scales (5,), no biases, eps 1e-5 unless given)."""

    def __init__(self, cin, cout, dim=8, scales=(5,), eps=1e-5):
        super().__init__()
        self.eps = eps
        heads = int(cin // dim * 1.0)
        total = heads * dim
        self.dim = dim
        self.qkv = ConvNormAct(cin, 3 * total, 1, norm=False)
        self.aggreg = nn.ModuleList([nn.Sequential(
            nn.Conv2d(3 * total, 3 * total, s, padding=s // 2, groups=3 * total, bias=False),
            nn.Conv2d(3 * total, 3 * total, 1, groups=3 * heads, bias=False)) for s in scales])
        self.kernel_func = nn.ReLU(inplace=False)
        self.proj = ConvNormAct(total * (1 + len(scales)), cout, 1)

    def forward(self, x):
        B, _, H, W = x.shape
        qkv = self.qkv(x)
        ms = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        ms = ms.reshape(B, -1, 3 * self.dim, H * W).transpose(-1, -2)       # (B, G, N, 3 dim)
        q, k, v = ms.chunk(3, dim=-1)
        q, k = self.kernel_func(q), self.kernel_func(k)
        v = F.pad(v, (0, 1), mode="constant", value=1.0)                     # a ones column: the denominator
        q, k, v = q.float(), k.float(), v.float()
        out = q @ (k.transpose(-1, -2) @ v)
        out = out[..., :-1] / (out[..., -1:] + self.eps)
        out = out.transpose(-1, -2).reshape(B, -1, H, W)
        return self.proj(out)


class ResidualBlock(nn.Module):
    """efficientvit_mit.ResidualBlock: main(pre_norm(x)) [+ shortcut(x)]."""

    def __init__(self, main, shortcut=None):
        super().__init__()
        self.pre_norm = nn.Identity()
        self.main = main
        self.shortcut = shortcut

    def forward(self, x):
        y = self.main(self.pre_norm(x))
        return y + self.shortcut(x) if self.shortcut is not None else y


class EfficientVitBlock(nn.Module):
    def __init__(self, dim, head_dim, expand_ratio=4.0, eps=1e-5):
        super().__init__()
        self.context_module = ResidualBlock(LiteMLA(dim, dim, head_dim, eps=eps), nn.Identity())
        self.local_module = ResidualBlock(MBConv(dim, dim, 1, expand_ratio, fewer_norm=True), nn.Identity())

    def forward(self, x):
        return self.local_module(self.context_module(x))


class Stem(nn.Sequential):
    def __init__(self, cin, cout, depth):
        super().__init__()
        self.add_module("in_conv", ConvNormAct(cin, cout, 3, 2, act=nn.Hardswish))
        for j in range(depth):
            self.add_module(f"res{j}", ResidualBlock(DSConv(cout, cout), nn.Identity()))


class EfficientVitStage(nn.Module):
    def __init__(self, cin, cout, depth, head_dim, vit_stage, expand_ratio=4.0, eps=1e-5):
        super().__init__()
        blocks = [ResidualBlock(MBConv(cin, cout, 2, expand_ratio, fewer_norm=vit_stage), None)]
        if vit_stage:
            blocks += [EfficientVitBlock(cout, head_dim, expand_ratio, eps) for _ in range(depth)]
        else:
            blocks += [ResidualBlock(MBConv(cout, cout, 1, expand_ratio), nn.Identity()) for _ in range(1, depth)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.blocks(x)


class ClassifierHead(nn.Module):
    def __init__(self, cin, widths, num_classes):
        super().__init__()
        self.in_conv = ConvNormAct(cin, widths[0], 1, act=nn.Hardswish)
        self.classifier = nn.Sequential(nn.Linear(widths[0], widths[1], bias=False), nn.LayerNorm(widths[1], eps=1e-5),
                                        nn.Hardswish(), nn.Dropout(0.0),
                                        nn.Linear(widths[1], num_classes) if num_classes > 0 else nn.Identity())

    def forward(self, x):
        return self.classifier(self.in_conv(x).mean(dim=(2, 3)))  # SelectAdaptivePool2d('avg', flatten)


class EfficientVit(nn.Module):
    """timm's EfficientVit: ``EfficientVit(widths=..., depths=..., head_dim=..., head_widths=...)``."""

    def __init__(self, widths, depths, head_dim, head_widths, num_classes=1000, in_chans=3, eps=1e-5):
        super().__init__()
        self.stem = Stem(in_chans, widths[0], depths[0])
        self.stages = nn.Sequential()
        cin = widths[0]
        for i, (w, d) in enumerate(zip(widths[1:], depths[1:])):
            self.stages.append(EfficientVitStage(cin, w, d, head_dim, vit_stage=i >= 2, eps=eps))
            cin = w
        self.head = ClassifierHead(cin, head_widths, num_classes)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


# timm efficientvit_mit.py: efficientvit_b0 .. efficientvit_b3 model_args
EFFICIENTVIT_ARGS = {
    "b0": dict(widths=(8, 16, 32, 64, 128), depths=(1, 2, 2, 2, 2), head_dim=16, head_widths=(1024, 1280)),
    "b1": dict(widths=(16, 32, 64, 128, 256), depths=(1, 2, 3, 3, 4), head_dim=16, head_widths=(1536, 1600)),
    "b2": dict(widths=(24, 48, 96, 192, 384), depths=(1, 3, 4, 4, 6), head_dim=32, head_widths=(2304, 2560)),
    "b3": dict(widths=(32, 64, 128, 256, 512), depths=(1, 4, 6, 6, 9), head_dim=32, head_widths=(2304, 2560)),
}


# ---------------------------------------------------------------- convit.py
class GPSA(nn.Module):
    """convit.GPSA: qk (rows q then k), v, proj, pos_proj (3 -> heads), gating_param; r_ij rebuilt per N."""

    def __init__(self, dim, num_heads, qkv_bias=False):
        super().__init__()
        self.num_heads, self.dim = num_heads, dim
        self.scale = (dim // num_heads) ** -0.5
        self.qk = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.pos_proj = nn.Linear(3, num_heads)
        self.proj_drop = nn.Dropout(0.0)
        self.gating_param = nn.Parameter(torch.ones(num_heads))

    @staticmethod
    def rel_indices(n: int) -> torch.Tensor:
        """convit.GPSA.get_rel_indices: (1, N, N, 3) = (indx, indy, indx^2 + indy^2) on a side x side grid."""
        side = int(n ** 0.5)
        ind = torch.arange(side, dtype=torch.float32).view(1, -1) - torch.arange(side, dtype=torch.float32).view(-1, 1)
        indx = ind.repeat(side, side)
        indy = ind.repeat_interleave(side, dim=0).repeat_interleave(side, dim=1)
        return torch.stack([indx, indy, indx ** 2 + indy ** 2], dim=-1)[None]

    def forward(self, x):
        B, N, C = x.shape
        h = self.num_heads
        qk = self.qk(x).reshape(B, N, 2, h, C // h).permute(2, 0, 3, 1, 4)
        q, k = qk[0], qk[1]
        pos = self.pos_proj(self.rel_indices(N).to(x).expand(B, -1, -1, -1)).permute(0, 3, 1, 2).softmax(dim=-1)
        patch = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        g = torch.sigmoid(self.gating_param.view(1, -1, 1, 1))
        attn = (1.0 - g) * patch + g * pos
        attn = attn / attn.sum(dim=-1).unsqueeze(-1)
        v = self.v(x).reshape(B, N, h, C // h).permute(0, 2, 1, 3)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class MHSA(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias=False):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    """timm.layers.Mlp: fc1, act, drop1, norm (Identity), fc2, drop2."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(0.0)
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(0.0)

    def forward(self, x):
        return self.fc2(self.norm(self.act(self.fc1(x))))


class ConvitBlock(nn.Module):
    """convit.Block (pre-LN, timm LayerNorm eps 1e-6)."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, use_gpsa=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = GPSA(dim, num_heads, qkv_bias) if use_gpsa else MHSA(dim, num_heads, qkv_bias)
        self.drop_path = nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """timm.layers.PatchEmbed: proj (conv P x P, stride P), flatten to (B, N, D), norm Identity."""

    def __init__(self, patch_size, in_chans, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        self.norm = nn.Identity()

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class ConVit(nn.Module):
    """timm's ConVit (global_pool 'token'); ``embed_dim`` per head, as timm's (it multiplies by the heads)."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=48, depth=12,
                 num_heads=12, mlp_ratio=4.0, qkv_bias=False, local_up_to_layer=10):
        super().__init__()
        embed_dim *= num_heads
        self.local_up_to_layer = local_up_to_layer
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        n = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_drop = nn.Dropout(0.0)
        self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim))
        self.blocks = nn.ModuleList([ConvitBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, i < local_up_to_layer)
                                     for i in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(0.0)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x):
        x = self.patch_embed(x) + self.pos_embed
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        for u, blk in enumerate(self.blocks):
            if u == self.local_up_to_layer:
                x = torch.cat((cls, x), dim=1)
            x = blk(x)
        return self.norm(x)

    def forward(self, x):
        return self.head(self.forward_features(x)[:, 0])


# timm convit.py: convit_tiny / convit_small / convit_base model_args (embed_dim per head)
CONVIT_ARGS = {"tiny": dict(local_up_to_layer=10, embed_dim=48, num_heads=4),
               "small": dict(local_up_to_layer=10, embed_dim=48, num_heads=9),
               "base": dict(local_up_to_layer=10, embed_dim=48, num_heads=16)}


def randomize_(model: nn.Module, seed: int = 0, scale: float = 0.1) -> nn.Module:
    """Random parameters and BatchNorm statistics (so a misplaced or unfolded norm shows)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
    return model


def timm_hub_config(architecture: str, tag: str, num_classes: int, num_features: int, global_pool: str,
                    **pretrained_cfg) -> dict:
    """A timm hub ``config.json`` as ``timm.models._hub.save_config_for_hf`` writes it: ``architecture``,
    ``num_classes``, ``num_features``, ``global_pool``, and ``pretrained_cfg`` (the model's default cfg
    without its source fields; timm's ``PretrainedCfg`` defaults filled in)."""
    pc = {"tag": tag, "custom_load": False, "input_size": [3, 224, 224], "fixed_input_size": False,
          "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center",
          "mean": list(IMAGENET_DEFAULT_MEAN), "std": list(IMAGENET_DEFAULT_STD), "num_classes": 1000}
    pc.update(pretrained_cfg)
    return {"architecture": architecture, "num_classes": num_classes, "num_features": num_features,
            "global_pool": global_pool, "pretrained_cfg": pc}


def assert_port_round_trip(fmt, model: nn.Module, ported: nn.Module, x: torch.Tensor, tol: float) -> dict:
    """``fmt`` writes ``model``'s weights under the port's names: the port loads them strictly and computes
    ``model``'s outputs on ``x`` (to ``tol``), and reading them back gives ``model``'s tensors exactly.
    Returns the port's state dict."""
    theirs, rest = fmt.from_vitkit(model.state_dict())
    assert not rest
    ported.load_state_dict(theirs, strict=True)
    with torch.no_grad():
        assert (ported(x) - model(x)).abs().max() < tol
    back, unmapped, ignored, _ = fmt.to_vitkit(theirs)
    assert not unmapped and not ignored
    assert set(back) == set(model.state_dict()) and all(torch.equal(back[k], v) for k, v in model.state_dict().items())
    return theirs

