"""Using a pretrained backbone: its weights out of a pretraining checkpoint, and the linear probe.

Every pretraining wrapper (``tasks.MAE``, ``SimCLR``, ``MoCoV3``, ``CLIP``) keeps the model it
pretrains under ``backbone``, so a checkpoint's ``backbone.*`` keys are that model's weights.
Fine-tuning = load them into the same model config and ``reset_classifier(K)`` (zero head);
linear probing = ``LinearProbe`` over the frozen model, trained with ``tasks.Classify``.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..layers import Linear


def backbone_state_dict(state: dict[str, torch.Tensor] | nn.Module) -> dict[str, torch.Tensor]:
    """The pretrained backbone's weights from a pretraining wrapper (MAE, SimCLR, MoCo v3, CLIP) or
    its state dict (a checkpoint's ``backbone.*`` keys, prefix removed): load them into the same
    model config to fine-tune or probe."""
    if isinstance(state, nn.Module):
        if not hasattr(state, "backbone"):
            raise ValueError(f"{type(state).__name__} has no .backbone: not a pretraining wrapper")
        return state.backbone.state_dict()
    out = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if not out:
        raise ValueError("no 'backbone.*' keys: this is not a pretraining checkpoint (MAE, SimCLR, MoCo v3, CLIP)")
    return out


class LinearProbe(nn.Module):
    """Linear probing (MAE appendix A.2): frozen encoder features -> BatchNorm1d(affine=False) -> Linear.

    The features are the backbone's pooled tokens (``forward_head(..., pre_logits=True)``: the class
    token or the patch mean). The backbone is frozen (no gradients, always in eval mode, so its
    dropout / drop-path are off); the BatchNorm without affine whitens the features, which MAE found
    matters because MAE features are not normalised the way a linear classifier likes. The head is
    initialised normal(std 0.01), zero bias, as MAE. Train it with ``tasks.Classify``.
    """

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        dim = getattr(backbone, "head_hidden_size", backbone.num_features)
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.head = Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W): the backbone's."""
        return self.backbone.input_size

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @torch.no_grad()
    def folded(self) -> nn.Module:
        """The probe as one plain classifier: a copy of the backbone whose linear head absorbs the
        BatchNorm (its eval form): W' = W diag(1 / sqrt(var + eps)), b' = b - W' mu. Same logits as the
        probe in eval mode; exportable wherever the backbone's own family is."""
        model = copy.deepcopy(self.backbone)
        model.reset_classifier(self.num_classes)
        weight = self.head.weight * (self.bn.running_var + self.bn.eps).rsqrt()
        bias = self.head.bias - weight @ self.bn.running_mean
        for head in (model.head, getattr(model, "head_dist", None)):  # DeiT averages two linear heads
            if head is not None:
                head.weight.copy_(weight)
                head.bias.copy_(bias)
        return model.eval()

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.backbone.eval()  # frozen: its dropout and drop-path stay off
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen pooled features (B, D)."""
        with torch.no_grad():
            return self.backbone.forward_head(self.backbone.forward_features(images), pre_logits=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.features(images)))
