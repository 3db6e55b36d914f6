"""Int8 dynamic quantisation of the Linear layers (CPU inference).

Weights are stored as int8 with a per-tensor scale; activations are quantised on the fly per batch
(``torch.ao.quantization.quantize_dynamic``). In a ViT the Linear layers (qkv, proj, MLP, head) hold
almost all FLOPs, so this is where int8 pays; the patch-embedding conv and the norms stay fp32.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn


def quantize_int8(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` (eval mode) whose ``nn.Linear`` layers run in int8. CPU only."""
    model = model if inplace else copy.deepcopy(model)
    model.eval().cpu()
    for m in model.modules():  # vitkit's oneDNN Linear is an nn.Linear; quantize_dynamic matches exact types
        if type(m) is not nn.Linear and isinstance(m, nn.Linear):
            m.__class__ = nn.Linear
    with warnings.catch_warnings():  # torch.ao announces its future move to torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
