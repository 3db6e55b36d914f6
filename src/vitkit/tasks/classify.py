"""Image classification: cross-entropy with label smoothing, and mixup / cutmix in training.

Batches are `(images (B, C, H, W) float, labels (B,) int64)`; the model maps images to logits (B, K).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Classify:
    """Supervised classification.

    label_smoothing: eps; the target puts 1 - eps + eps/K on the label and eps/K elsewhere.
    mixup, cutmix:   Beta(alpha, alpha) concentrations, 0 = off. In training mode every batch is
                     mixed with itself flipped (sample i with sample B-1-i), with one lambda per batch;
                     when both are on, each batch uses one of them, chosen at random (p = 0.5).
                     The targets become soft: lam * onehot(y) + (1 - lam) * onehot(y flipped).
    num_classes:     optional; when given, the model's logits are checked against it.
    Randomness comes from torch's global RNG, which the trainer reseeds every epoch.
    """

    main_metric = ("acc", "max")  # the test metric the trainer tracks as "best"

    def __init__(self, label_smoothing: float = 0.0, mixup: float = 0.0, cutmix: float = 0.0,
                 num_classes: int | None = None):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if mixup < 0 or cutmix < 0:
            raise ValueError(f"mixup and cutmix alphas must be >= 0 (0 = off), got {mixup}, {cutmix}")
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.label_smoothing = float(label_smoothing)
        self.mixup = float(mixup)
        self.cutmix = float(cutmix)
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg: Any, num_classes: int | None = None) -> Classify:
        """From any object with label_smoothing / mixup / cutmix attributes (e.g. a TrainConfig)."""
        return cls(cfg.label_smoothing, cfg.mixup, cfg.cutmix, num_classes)

    def __repr__(self) -> str:
        return (f"Classify(label_smoothing={self.label_smoothing}, mixup={self.mixup}, cutmix={self.cutmix}, "
                f"num_classes={self.num_classes})")

    # ---- training ------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Cross-entropy (label-smoothed); mixed inputs and soft targets in training mode when mixing is on.

        Metrics: "loss", and "acc" (top-1 on the batch) when the batch was not mixed.
        """
        images, labels = self._unpack(batch)
        mixing = model.training and (self.mixup > 0 or self.cutmix > 0)
        if mixing:
            images, lam = self.mix_images(images)
        logits = model(images)
        k = self._check_logits(logits, labels)
        if mixing:
            target = soft_targets(labels, k, lam)
            loss = F.cross_entropy(logits.float(), target, label_smoothing=self.label_smoothing)
            return loss, {"loss": loss.detach()}
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        acc = (logits.detach().argmax(-1) == labels).float().mean()
        return loss, {"loss": loss.detach(), "acc": acc}

    def mix_images(self, images: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Mix a batch with its flip: mixup (blend) or cutmix (paste a box). Returns (images, lam).

        lam is the weight of the original sample: for cutmix, the exact area fraction it keeps.
        """
        use_cutmix = self.cutmix > 0 and (self.mixup == 0 or bool(torch.rand(()) < 0.5))
        alpha = self.cutmix if use_cutmix else self.mixup
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        flipped = images.flip(0)
        if not use_cutmix:
            return lam * images + (1.0 - lam) * flipped, lam
        if images.ndim < 3:
            raise ValueError(f"cutmix needs images (B, C, H, W), got shape {tuple(images.shape)}")
        h, w = images.shape[-2:]
        cut = math.sqrt(1.0 - lam)  # the box covers (1 - lam) of the image before clipping
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch - ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw - cw // 2, w)
        out = images.clone()
        out[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
        return out, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)

    def mix(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixed images and their soft targets (B, num_classes), rows summing to 1."""
        images, lam = self.mix_images(images)
        return images, soft_targets(labels, num_classes, lam)

    # ---- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def eval_metrics(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        """Sums over the batch: "loss_sum" (plain cross-entropy, no smoothing), "correct" (top-1), "count"."""
        images, labels = self._unpack(batch)
        logits = model(images)
        self._check_logits(logits, labels)
        return {"loss_sum": F.cross_entropy(logits.float(), labels, reduction="sum"),
                "correct": (logits.argmax(-1) == labels).sum(),
                "count": labels.shape[0]}

    @staticmethod
    def summarize(totals: dict[str, float]) -> dict[str, float]:
        """Summed eval metrics -> {"loss": mean cross-entropy, "acc": top-1 accuracy}."""
        n = totals["count"]
        return {"loss": totals["loss_sum"] / n, "acc": totals["correct"] / n}

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, K), computed in eval mode (the model's mode is given back)."""
        was_training = model.training
        model.eval()
        try:
            return model(images).float().softmax(-1)
        finally:
            model.train(was_training)

    # ---- checks --------------------------------------------------------------------------------
    @staticmethod
    def _unpack(batch) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            images, labels = batch
        except (TypeError, ValueError):
            raise ValueError("Classify expects batches (images, labels)") from None
        if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError("labels must be integer class indices of shape (B,), "
                             f"got {labels.dtype} {tuple(labels.shape)}")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        return images, labels.long()

    def _check_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> int:
        if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
            raise ValueError(f"the model must return logits (B, num_classes) with B={labels.shape[0]}, "
                             f"got shape {tuple(logits.shape)}")
        k = logits.shape[1]
        if self.num_classes is not None and k != self.num_classes:
            raise ValueError(f"the model returns {k} logits but the task has num_classes={self.num_classes}")
        return k


def soft_targets(labels: torch.Tensor, num_classes: int, lam: float) -> torch.Tensor:
    """lam * onehot(labels) + (1 - lam) * onehot(labels flipped): (B, num_classes), rows sum to 1."""
    onehot = F.one_hot(labels, num_classes).float()
    return lam * onehot + (1.0 - lam) * onehot.flip(0)
