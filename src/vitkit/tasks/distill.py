"""Knowledge distillation through attention (DeiT, Touvron et al. 2021, Sec. 5.2).

The student is a distilled ViT (``distilled=True``): in training mode it returns ``(cls, dist)``
logits, the class-token head learning from the labels and the distillation-token head from a frozen
teacher (a CNN in the paper). Batches are ``(images (B, C, H, W), labels (B,) int64)``.

    hard:  L = 1/2 CE(cls, y) + 1/2 CE(dist, y_t),          y_t = argmax of the teacher's logits Z_t
    soft:  L = (1 - alpha) CE(cls, y) + alpha tau^2 KL(psi(Z_t / tau) || psi(Z_dist / tau))

psi is the softmax. The soft term is the paper's KL(psi(Z_s / tau), psi(Z_t / tau)) as DeiT's code
computes it, ``F.kl_div(log psi(Z_s/tau), log psi(Z_t/tau), log_target=True)``: sum over classes of
p_t (log p_t - log p_s), here averaged over the batch (DeiT's code divides by B*K instead, which only
rescales alpha by 1/K). A student that returns one tensor (a plain ViT, a CNN) uses it for both terms.
At evaluation the student's own output is scored (the two heads' average for DeiT), as ``Classify``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .classify import Classify, soft_targets

KINDS = ("hard", "soft")


class Distill:
    """DeiT distillation from ``teacher`` (frozen: eval mode, no gradients; moved to the batch's device).

    kind:  "hard" (the teacher's argmax as a second label) or "soft" (KL at temperature ``tau``).
    tau:   temperature of the soft term (DeiT: 3.0); alpha: weight of the soft term (DeiT: 0.1).
    label_smoothing, mixup, cutmix, num_classes: as ``Classify``, applied to the class-token term; a
    mixed batch is shown to the teacher too. The task holds no trainable weights: the trainer
    optimises and saves the student only.
    """

    def __init__(self, teacher: nn.Module, kind: str = "hard", tau: float = 3.0, alpha: float = 0.1,
                 label_smoothing: float = 0.0, mixup: float = 0.0, cutmix: float = 0.0,
                 num_classes: int | None = None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.kind, self.tau, self.alpha = kind, float(tau), float(alpha)
        self.classify = Classify(label_smoothing, mixup, cutmix, num_classes)  # labels, mixing, eval

    main_metric = Classify.main_metric

    def __repr__(self) -> str:
        return (f"Distill(teacher={type(self.teacher).__name__}, kind={self.kind!r}, tau={self.tau}, "
                f"alpha={self.alpha}, {self.classify!r})")

    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Z_t (B, K) from the frozen teacher, in eval mode whatever mode it was left in."""
        p = next(self.teacher.parameters(), None)
        if p is not None and p.device != images.device:
            self.teacher.to(images.device)
        self.teacher.eval()
        return self.teacher(images).float()

    def distill_loss(self, cls_logits: torch.Tensor, dist_logits: torch.Tensor, target: torch.Tensor,
                     teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, class-token term, distillation term) from (B, K) logits and ``target``: labels (B,)
        or soft targets (B, K)."""
        base = F.cross_entropy(cls_logits.float(), target, label_smoothing=self.classify.label_smoothing)
        if self.kind == "hard":
            dist = F.cross_entropy(dist_logits.float(), teacher_logits.argmax(-1))
            return 0.5 * base + 0.5 * dist, base, dist
        t = self.tau
        dist = F.kl_div(F.log_softmax(dist_logits.float() / t, -1), F.log_softmax(teacher_logits / t, -1),
                        reduction="batchmean", log_target=True) * t * t
        return (1 - self.alpha) * base + self.alpha * dist, base, dist

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Metrics: "loss", "loss_cls", "loss_dist", and "acc" (the class head, top-1) when not mixed."""
        images, labels = Classify._unpack(batch)
        c = self.classify
        mixing = model.training and (c.mixup > 0 or c.cutmix > 0)
        if mixing:
            images, lam = c.mix_images(images)
        out = model(images)
        cls_logits, dist_logits = out if isinstance(out, (tuple, list)) else (out, out)
        k = c._check_logits(cls_logits, labels)
        target = soft_targets(labels, k, lam) if mixing else labels
        loss, base, dist = self.distill_loss(cls_logits, dist_logits, target, self.teacher_logits(images))
        metrics = {"loss": loss.detach(), "loss_cls": base.detach(), "loss_dist": dist.detach()}
        if not mixing:
            metrics["acc"] = (cls_logits.detach().argmax(-1) == labels).float().mean()
        return loss, metrics

    @torch.no_grad()
    def eval_metrics(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        """As ``Classify``: sums of cross-entropy and top-1 of the model's eval output (DeiT: the heads' average)."""
        return self.classify.eval_metrics(model, batch)

    summarize = staticmethod(Classify.summarize)

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return self.classify.predict(model, images)
