"""Training generators with the generic trainer: a wrapper module (frozen tokenizer + generator) and
the task object that follows the trainer's protocol (train/trainer.py).

A generator (``ARTransformer``, ``VAR``, ``HART``) provides
    tokenize(tokenizer, images) -> dict of targets         (run under no_grad, tokenizer frozen)
    loss(**targets, labels=, generator=) -> (loss, {"loss", "nll", "acc", "tokens"[, "diff"]})
    generate_images(tokenizer, labels, **sampling) -> images
"""
from __future__ import annotations

import torch
from torch import nn


class GenerativeModel(nn.Module):
    """The one module the trainer optimises: a FROZEN tokenizer and the generator trained on its tokens.

    The tokenizer's parameters get ``requires_grad=False`` (so the optimizer skips them), it stays in
    eval mode whatever ``train()`` is called with (no codebook updates, no dropout) and encodes under
    no_grad. ``forward(images, labels) -> (loss, metrics)``. In eval mode the random parts of a loss
    (random orders, MaskGIT masks, diffusion times and noise) come from a generator seeded with 0 on
    every call, so the evaluation of a checkpoint is deterministic.
    Checkpoint keys: ``tokenizer.*`` and ``generator.*``.
    """

    def __init__(self, tokenizer: nn.Module, generator: nn.Module):
        super().__init__()
        self.tokenizer = tokenizer.requires_grad_(False).eval()
        self.generator = generator

    def train(self, mode: bool = True) -> GenerativeModel:
        super().train(mode)
        self.tokenizer.eval()
        return self

    def no_weight_decay(self) -> set[str]:
        inner = self.generator.no_weight_decay() if hasattr(self.generator, "no_weight_decay") else set()
        return {f"generator.{n}" for n in inner}

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            targets = self.generator.tokenize(self.tokenizer, images)
        rng = None
        if not self.training:
            rng = torch.Generator(device=images.device).manual_seed(0)
        return self.generator.loss(**targets, labels=labels, generator=rng)

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, **sampling) -> torch.Tensor:
        """Images (B, C, H, W) for class ``labels`` (B,) (the generator's ``null_class`` = unconditional);
        ``sampling``: temperature, top_k, top_p, cfg_scale, steps (masked AR), generator, ... The module
        is put in eval mode for the call and given back in its mode."""
        was_training = self.training
        self.eval()
        try:
            return self.generator.generate_images(self.tokenizer, labels, **sampling)
        finally:
            self.train(was_training)


class GenerativeTask:
    """Trainer protocol for ``GenerativeModel``: ``loss(model, batch)`` calls ``model(images, labels)``.

    ``eval_metrics`` sums: token NLL and correct top-1 over every scored token (all tokens for the
    raster / random / VAR orders; the masked ones for MaskGIT), the per-batch loss, and for HART the
    residual head's loss. ``summarize``: "nll" (per token, nats), "acc" (per token), "loss" (the
    training objective, mean over samples), "diff" (HART).
    """

    main_metric = ("loss", "min")

    @staticmethod
    def _unpack(batch):
        if isinstance(batch, (list, tuple)) and len(batch) >= 2:
            return batch[0], batch[1]
        return batch, None

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, labels = self._unpack(batch)
        loss, metrics = model(images, labels)
        return loss, {k: v for k, v in metrics.items() if k != "tokens"}

    @torch.no_grad()
    def eval_metrics(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        images, labels = self._unpack(batch)
        loss, m = model(images, labels)
        B, tokens = images.shape[0], m["tokens"].double()
        out = {"loss_sum": loss.double() * B, "nll_sum": m["nll"].double() * tokens,
               "correct": m["acc"].double() * tokens, "tokens": tokens, "count": B}
        if "diff" in m:
            out["diff_sum"] = m["diff"].double() * B
        return out

    @staticmethod
    def summarize(totals: dict[str, float]) -> dict[str, float]:
        n, tokens = totals["count"], max(totals["tokens"], 1.0)
        out = {"loss": totals["loss_sum"] / n, "nll": totals["nll_sum"] / tokens,
               "acc": totals["correct"] / tokens}
        if "diff_sum" in totals:
            out["diff"] = totals["diff_sum"] / n
        return out
