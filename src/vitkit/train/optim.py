"""Parameter groups (one weight-decay rule, optional layer-wise lr decay) and the optimizers: AdamW, LARS.

Every group may carry an ``lr_scale``: the trainer sets ``group["lr"] = lr * group.get("lr_scale", 1.0)``
each step (MAE's util/lr_sched.py), so layer-wise lr decay scales the one schedule per layer.
"""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

OPTIMIZERS = ("adamw", "lars")
_BLOCK = re.compile(r"(?:.*?\.)?blocks\.\d+(?=\.)")  # "blocks.3", "backbone.blocks.3", "stages.1.blocks.0"


def _no_decay(model: nn.Module) -> set[str]:
    return set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: [decayed, not decayed]. Pure: reads the model, changes nothing.

    The one rule: a parameter gets no weight decay when `p.ndim < 2` (biases, norm weights, scalar
    temperatures) or its name is in `model.no_weight_decay()` (position embeddings, class tokens...).
    Frozen parameters (requires_grad=False) are left out.
    """
    skip = _no_decay(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": float(weight_decay)},
            {"params": no_decay, "weight_decay": 0.0}]


# ---- layer-wise lr decay -----------------------------------------------------------------------
def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """Each trainable parameter's layer id for layer-wise lr decay, and L, the number of blocks.

    MAE's ``get_layer_id_for_vit`` (util/lr_decay.py, after BEiT): the embedding (class token,
    position table, patch embedding) is layer 0, ``blocks.i`` is layer i + 1, everything after the
    blocks (final norm, heads) layer L + 1. vitkit's rule, which is that one on every ViT, DeiT,
    CeiT, ConViT, T2T-ViT and local ViT: a block is a ``...blocks.<i>`` prefix of a trainable
    parameter's name, numbered 1..L in registration (``named_parameters``) order, so Swin's,
    SparseViT's and PVT's ``stages.<s>.blocks.<i>`` count as one sequence (as timm's layer decay
    for Swin) and a wrapper's ``backbone.blocks.<i>`` as the backbone's. A parameter that is in no
    block takes the id of the last block registered before it: 0 before the first block (any stem:
    CeiT's convs, T2T's tokens-to-token, CLIP's ln_pre), L + 1 after the last one (CeiT's LCA too),
    and between two blocks the earlier one's (Swin's patch merging, PVT's embedding of a later stage).
    A model without blocks (ResNet, EfficientViT's MBConv stages) raises ValueError.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    units: dict[str, int] = {}
    for name, _ in named:
        m = _BLOCK.match(name)
        if m:
            units.setdefault(m.group(0), len(units) + 1)
    if not units:
        raise ValueError(f"layer_decay needs transformer blocks (parameters named '...blocks.<i>.*'); "
                         f"{type(model).__name__} has none: train it without layer_decay")
    num_layers, ids, last = len(units), {}, 0
    for name, _ in named:
        m = _BLOCK.match(name)
        if m:
            last = units[m.group(0)]
        ids[name] = last if m or last < num_layers else num_layers + 1
    return ids, num_layers


def layer_decay_groups(model: nn.Module, weight_decay: float, layer_decay: float) -> list[dict[str, Any]]:
    """MAE's ``param_groups_lrd``: a group per (layer, decayed or not), each with an ``lr_scale``.

    lr_scale = layer_decay ** (L + 1 - layer_id) (``layer_ids``): 1 for the head side, layer_decay for
    the last block, layer_decay ** (L + 1) for the embedding. Weight decay as ``param_groups`` (none
    for ndim < 2 or names in ``no_weight_decay()``); frozen parameters are left out.
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    ids, num_layers = layer_ids(model)
    skip = _no_decay(model)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decayed = not (p.ndim < 2 or name in skip)
        layer = ids[name]
        g = groups.setdefault((layer, decayed), {
            "params": [], "weight_decay": float(weight_decay) if decayed else 0.0,
            "lr_scale": float(layer_decay) ** (num_layers + 1 - layer)})
        g["params"].append(p)
    return list(groups.values())


# ---- LARS --------------------------------------------------------------------------------------
class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as MoCo v3's moco/optimizer.py and MAE's util/lars.py: SGD with momentum
    whose update of every parameter with ndim > 1 is rescaled to a fixed fraction of its norm.

        ndim > 1:   d = g + wd * w,   d <- d * trust_coefficient * ||w|| / ||d||   (unscaled when either norm is 0)
        ndim <= 1:  d = g             (biases, norm weights: no weight decay, no trust ratio)
        mu <- momentum * mu + d,      w <- w - lr * mu

    MAE trains its linear probe with it (main_linprobe.py: lr = 0.1 x batch / 256, weight decay 0).
    """

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim > 1:
                    d = d.add(p, alpha=g["weight_decay"])
                    w_norm, d_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    trust = torch.where((w_norm > 0) & (d_norm > 0), g["trust_coefficient"] * w_norm / d_norm,
                                        torch.ones_like(w_norm))
                    d = d.mul(trust)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                state["mu"].mul_(g["momentum"]).add_(d)
                p.add_(state["mu"], alpha=-g["lr"])
        return loss


# ---- the optimizer -----------------------------------------------------------------------------
def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over the parameter groups; lr starts at 0 (the schedule sets it each step).

    Groups: ``layer_decay_groups`` when ``cfg.layer_decay`` is set, else ``param_groups``.
    "adamw": AdamW with ``cfg.betas``, the fused kernel when every parameter is a float tensor on CPU or
    CUDA (on CPU it is ~4x faster than foreach for small models), the foreach kernel otherwise.
    "lars": ``LARS`` with momentum 0.9 and trust coefficient 0.001 (MoCo v3's and MAE's; betas unused).
    """
    layer_decay = getattr(cfg, "layer_decay", None)
    groups = (layer_decay_groups(model, cfg.weight_decay, layer_decay) if layer_decay is not None
              else param_groups(model, cfg.weight_decay))
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise ValueError("the model has no trainable parameters")
    kind = getattr(cfg, "optimizer", "adamw")
    if kind == "lars":
        return LARS(groups, lr=0.0)
    if kind != "adamw":
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {kind!r}")
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    impl = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(groups, lr=0.0, betas=tuple(cfg.betas), **impl)
