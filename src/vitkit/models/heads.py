"""The classifier-head and intermediates helpers every model family shares."""
from __future__ import annotations

import torch
from torch import nn

from ..layers import Linear


def linear_head(in_features: int, num_classes: int, zero: bool = False,
                like: torch.Tensor | None = None) -> nn.Module:
    """``Linear(in_features, num_classes)``, or ``Identity`` when ``num_classes == 0`` (pre-logits out).

    ``zero=True`` gives the ViT paper's fine-tuning head, a zero-initialised D x K layer (what
    ``reset_classifier`` installs); ``like`` puts it on that tensor's device.
    """
    if num_classes <= 0:
        return nn.Identity()
    head = Linear(in_features, num_classes)
    if zero:
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    return head if like is None else head.to(like.device)


def pack_intermediates(features: torch.Tensor, attns: list, return_attention: bool, **states: list) -> dict:
    """The ``forward_intermediates`` dict: ``features``, the per-block or per-stage ``states``
    (``hidden_states=`` for token models, ``stages=`` for pyramids), and ``attentions`` on request."""
    out = {"features": features, **states}
    if return_attention:
        out["attentions"] = attns
    return out
