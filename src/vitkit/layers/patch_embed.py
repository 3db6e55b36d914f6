"""Images to tokens: non-overlapping patches projected by a conv with kernel = stride = P (ViT eq. 1)."""
from __future__ import annotations

import torch
from torch import nn


def to_2tuple(x: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``224 -> (224, 224)``; a pair stays a pair."""
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise ValueError(f"expected an int or a pair, got {x!r}")
        return int(x[0]), int(x[1])
    return int(x), int(x)


def check_image(x: torch.Tensor, in_chans: int, img_size: tuple[int, int] | None,
                divisor: tuple[int, int] = (1, 1), what: str = "model") -> None:
    """The model's door: raise a ValueError naming what was expected when ``x`` does not fit.

    x: (B, C, H, W). ``img_size=None`` accepts any H, W divisible by ``divisor``.
    """
    if x.ndim != 4:
        raise ValueError(f"{what} expects a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
    c, h, w = x.shape[1:]
    if c != in_chans:
        raise ValueError(f"{what} expects {in_chans} input channel(s), got {c} (input shape "
                         f"{tuple(x.shape)}); convert the images or create the model with in_chans={c}")
    if img_size is not None and (h, w) != tuple(img_size):
        raise ValueError(f"{what} expects {img_size[0]}x{img_size[1]} images, got {h}x{w}; resize the "
                         f"input, create the model with img_size={h if h == w else (h, w)}, or pass "
                         f"dynamic_img_size=True")
    if h % divisor[0] or w % divisor[1]:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size "
                         f"{divisor[0]}x{divisor[1]}")


class PatchEmbed(nn.Module):
    """Split (B, C, H, W) into P x P patches and project each to D: a conv, kernel = stride = P.

    Returns tokens (B, N, D) with N = (H / P) * (W / P), patches in raster order (row-major).
    With ``strict_img_size`` the input must be exactly ``img_size``; otherwise any H, W divisible by P.
    """

    def __init__(self, img_size: int | tuple[int, int] = 224, patch_size: int | tuple[int, int] = 16,
                 in_chans: int = 3, embed_dim: int = 768, bias: bool = True,
                 strict_img_size: bool = True):
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        for s, p in zip(self.img_size, self.patch_size):
            if s % p:
                raise ValueError(f"img_size {self.img_size} is not divisible by patch_size "
                                 f"{self.patch_size}: choose an image size that is a multiple of {p}")
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.in_chans = in_chans
        self.strict_img_size = strict_img_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size,
                              stride=self.patch_size, bias=bias)

    def dynamic_grid(self, h: int, w: int) -> tuple[int, int]:
        """Patch grid (gh, gw) for an H x W input."""
        return h // self.patch_size[0], w // self.patch_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_chans, self.img_size if self.strict_img_size else None, self.patch_size)
        x = self.proj(x)                        # (B, D, gh, gw)
        return x.flatten(2).transpose(1, 2)     # (B, gh*gw, D)


class HybridEmbed(nn.Module):
    """ViT's hybrid input (Sec. 3.1): a CNN feature map patchified with P = 1 and projected to D.

    ``backbone.forward_features(x)`` must return (B, C_f, h, w); ``backbone.reduction`` is its stride.
    """

    def __init__(self, backbone: nn.Module, img_size: int | tuple[int, int], in_chans: int,
                 embed_dim: int, strict_img_size: bool = True):
        super().__init__()
        self.backbone = backbone
        self.img_size = to_2tuple(img_size)
        self.in_chans = in_chans
        self.strict_img_size = strict_img_size
        r = backbone.reduction
        if self.img_size[0] % r or self.img_size[1] % r:
            raise ValueError(f"img_size {self.img_size} is not divisible by the CNN stem's stride {r}")
        self.patch_size = (r, r)  # each token covers r x r pixels of the input
        self.grid_size = (self.img_size[0] // r, self.img_size[1] // r)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(backbone.num_features, embed_dim, kernel_size=1)  # P = 1 on the map

    def dynamic_grid(self, h: int, w: int) -> tuple[int, int]:
        return h // self.patch_size[0], w // self.patch_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_chans, self.img_size if self.strict_img_size else None, self.patch_size)
        x = self.proj(self.backbone.forward_features(x))  # (B, D, h, w)
        return x.flatten(2).transpose(1, 2)                # (B, h*w, D)
