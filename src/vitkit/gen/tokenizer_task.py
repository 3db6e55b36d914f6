"""Training a tokenizer (VQTokenizer, MultiScaleVQTokenizer, HybridTokenizer) with the generic trainer.

    loss = MSE(recon, images) + loss_vq          (pixel MSE on the loader's normalised scale)

Batches are ``(images (B, C, H, W), labels)``; labels are ignored. The model's forward returns
``(recon, {"loss_vq", "usage", "perplexity", ...})``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TokenizerTask"]


class TokenizerTask:
    """Reconstruction + quantiser losses; eval reports mse, psnr and codebook usage.

    mean, std: the loader's per-channel normalisation (e.g. ``bundle.mean``, ``bundle.std``). When
    given, PSNR is computed on un-normalised pixels clamped to [0, 1] (peak 1); when None, PSNR is
    10 log10(1 / MSE) on the normalised scale, comparable only between runs with the same normalisation.
    PSNR is per image, then averaged; "mse" is on the normalised scale either way.
    A HybridTokenizer's eval also reports "mse_discrete" (decoding the discrete tokens alone).
    """

    main_metric = ("mse", "min")

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (the loader's normalisation), or neither")
        if std is not None and any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)

    def __repr__(self) -> str:
        return f"TokenizerTask(mean={self.mean}, std={self.std})"

    @staticmethod
    def _images(batch) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError("TokenizerTask expects batches (images (B, C, H, W), labels) or an image tensor")
        return images

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images = self._images(batch)
        recon, info = model(images)
        mse = F.mse_loss(recon.float(), images.float())
        loss = mse + info["loss_vq"]
        return loss, {"loss": loss.detach(), "mse": mse.detach(), "loss_vq": info["loss_vq"].detach(),
                      "usage": info["usage"].detach(), "perplexity": info["perplexity"].detach()}

    def psnr(self, recon: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Per-image PSNR (B,) in dB (see the class docstring for the scale)."""
        recon, images = recon.float(), images.float()
        if self.mean is not None:
            shape = (1, -1, 1, 1)
            m = torch.tensor(self.mean, device=images.device).view(shape)
            s = torch.tensor(self.std, device=images.device).view(shape)
            recon, images = (recon * s + m).clamp(0, 1), (images * s + m).clamp(0, 1)
        mse = (recon - images).square().flatten(1).mean(1)
        return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))

    @torch.no_grad()
    def eval_metrics(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        """Sums over the batch: loss_sum, mse_sum, psnr_sum, usage_sum (batch usage x B), count
        (+ mse_discrete_sum for a hybrid tokenizer); the trainer divides each by the count."""
        images = self._images(batch)
        recon, info = model(images)
        b = images.shape[0]
        mse = (recon.float() - images.float()).square().flatten(1).mean(1)
        out = {"loss_sum": mse.sum() + info["loss_vq"].float() * b, "mse_sum": mse.sum(),
               "psnr_sum": self.psnr(recon, images).sum(), "usage_sum": info["usage"].float() * b, "count": b}
        if "recon_discrete" in info:
            err = info["recon_discrete"].float() - images.float()
            out["mse_discrete_sum"] = err.square().flatten(1).mean(1).sum()
        return out
