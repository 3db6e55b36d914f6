"""ModelEMA: an exponential moving average of a model's weights, updated after each optimizer step."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .distributed import unwrap


class ModelEMA:
    """`ema = d * ema + (1 - d) * weights` after every optimizer step; buffers are copied.

    The effective decay warms up as `min(decay, (1 + n) / (10 + n))` after n updates (as in
    TensorFlow's ExponentialMovingAverage), so short runs are not dominated by the initial weights.
    `self.module` is an eval-mode copy of the model that evaluation can use directly.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.updates = 0
        self.module = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)

    def current_decay(self) -> float:
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        src = dict(unwrap(model).named_parameters())
        ema_f, src_f = [], []
        for name, p in self.module.named_parameters():
            if p.is_floating_point():
                ema_f.append(p)
                src_f.append(src[name].detach())
            else:
                p.copy_(src[name])
        if ema_f:
            torch._foreach_lerp_(ema_f, src_f, 1.0 - d)
        src_b = dict(unwrap(model).named_buffers())
        for name, b in self.module.named_buffers():
            b.copy_(src_b[name])

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "warmup": self.warmup, "updates": self.updates,
                "module": {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["module"])
