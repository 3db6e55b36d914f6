"""Parameter groups (one weight-decay rule) and the AdamW optimizer."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: [decayed, not decayed]. Pure: reads the model, changes nothing.

    The one rule: a parameter gets no weight decay when `p.ndim < 2` (biases, norm weights, scalar
    temperatures) or its name is in `model.no_weight_decay()` (position embeddings, class tokens...).
    Frozen parameters (requires_grad=False) are left out.
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": float(weight_decay)},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW over `param_groups(model, cfg.weight_decay)`; lr starts at 0 (the schedule sets it each step).

    Uses the fused kernel when every parameter is a float tensor on CPU or CUDA (on CPU it is
    ~4x faster than foreach for small models), the foreach kernel otherwise.
    """
    groups = param_groups(model, cfg.weight_decay)
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise ValueError("the model has no trainable parameters")
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    kind = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(groups, lr=0.0, betas=tuple(cfg.betas), **kind)
