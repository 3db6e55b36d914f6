"""A small ResNet (He et al. 2016, basic blocks): the hybrid ViT's CNN stem and the DeiT teacher."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers import Linear
from .heads import linear_head
from .registry import build_from_config, register_model


@dataclass(frozen=True)
class ResNetConfig:
    in_chans: int = 3
    num_classes: int = 1000
    widths: tuple[int, ...] = (64, 128, 256, 512)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    stem_width: int = 64
    stem_kernel: int = 7      # 7x7 stride 2 + max-pool for ImageNet; 3x3 stride 1 for small images
    stem_stride: int = 2
    stem_pool: bool = True
    img_size: int = 224       # the default input size (a CNN takes any size); sets ``input_size``

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "depths", tuple(self.depths))
        if len(self.widths) != len(self.depths) or not self.widths:
            raise ValueError(f"widths {self.widths} and depths {self.depths} must be non-empty "
                             "and of equal length")

    @property
    def reduction(self) -> int:
        """Total stride of the feature map: stem, pool, then one stride-2 per stage after the first."""
        return self.stem_stride * (2 if self.stem_pool else 1) * 2 ** (len(self.widths) - 1)


class BasicBlock(nn.Module):
    """relu(x' + bn(conv3(relu(bn(conv3(x)))))), x' = x or a 1x1 strided projection."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        return self.act(self.shortcut(x) + self.bn2(self.conv2(y)))


class ResNet(nn.Module):
    """(B, C, H, W) -> logits; ``forward_features`` gives the (B, widths[-1], H/r, W/r) map."""

    def __init__(self, cfg: ResNetConfig):
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.num_features = cfg.widths[-1]
        self.reduction = cfg.reduction
        self.input_size = (cfg.in_chans, cfg.img_size, cfg.img_size)  # (C, H, W) by default
        k = cfg.stem_kernel
        self.stem = nn.Sequential(
            nn.Conv2d(cfg.in_chans, cfg.stem_width, k, cfg.stem_stride, k // 2, bias=False),
            nn.BatchNorm2d(cfg.stem_width), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1) if cfg.stem_pool else nn.Identity())
        stages, cin = [], cfg.stem_width
        for i, (w, d) in enumerate(zip(cfg.widths, cfg.depths)):
            blocks = [BasicBlock(cin if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1) for j in range(d)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.head = Linear(self.num_features, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He init for ReLU nets
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # zero the last BN of each residual branch (Goyal et al. 2017)
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def no_weight_decay(self) -> set[str]:
        return set()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = linear_head(self.num_features, num_classes, zero=True, like=next(self.parameters()))


def _resnet(base: ResNetConfig, **overrides) -> ResNet:
    return ResNet(build_from_config(ResNetConfig, base, overrides))


@register_model
def resnet18(**kw) -> ResNet:
    """ResNet-18 (He et al. 2016): 11.7M parameters with a 1000-class head."""
    return _resnet(ResNetConfig(), **kw)


@register_model
def resnet_small_28(**kw) -> ResNet:
    """A small CNN for 28x28 digits: 3x3 stem, stages of 32/64/128 channels (the DeiT teacher)."""
    return _resnet(ResNetConfig(in_chans=1, num_classes=10, widths=(32, 64, 128), depths=(1, 1, 1),
                                stem_width=32, stem_kernel=3, stem_stride=1, stem_pool=False, img_size=28), **kw)
