"""Feed-forward layers: the transformer MLP (ViT eq. 3)."""
from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    """Two Linear layers with a GELU between: ``fc2(drop(act(fc1(x))))``, applied per token.

    x: (..., in_features) -> (..., out_features).
    """

    def __init__(self, in_features: int, hidden_features: int | None = None,
                 out_features: int | None = None, act_layer: type[nn.Module] = nn.GELU,
                 drop: float = 0.0, bias: bool = True):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
