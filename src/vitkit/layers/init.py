"""Weight initialisation shared by the transformer families (BERT / timm conventions)."""
from __future__ import annotations

from torch import nn


def init_transformer_(module: nn.Module, std: float = 0.02) -> None:
    """Every Linear: truncated normal (std 0.02), zero bias; every LayerNorm: ones and zeros."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_patch_embed_(conv: nn.Conv2d) -> None:
    """A patch-embedding conv initialised like a Linear on the flattened patch (MAE): xavier uniform."""
    w = conv.weight
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
