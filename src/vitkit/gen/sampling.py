"""Sampling helpers shared by every generator: temperature, top-k, top-p (nucleus), classifier-free
guidance, and MaskGIT's cosine mask schedule.

Logits are (..., V) over the last axis; filtered-out entries become ``-inf``. Every random draw
takes an optional ``torch.Generator`` so a seeded generation is reproducible.
"""
from __future__ import annotations

import math

import torch


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep exactly the ``k`` largest logits of each row (ties broken by ``torch.topk``), ``-inf``
    elsewhere. ``k`` None or 0, or ``k >= V``: unchanged (Fan et al. 2018)."""
    if not k or k >= logits.shape[-1]:
        return logits
    if k < 0:
        raise ValueError(f"top_k must be >= 0 (0 or None = off), got {k}")
    idx = logits.topk(k, dim=-1).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, idx, True)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float | None) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the smallest set of most probable tokens whose
    probability mass is >= ``p``; ``-inf`` elsewhere. The most probable token is always kept.
    ``p`` None or >= 1: unchanged.

    A token (in descending order) is kept iff the mass of the tokens strictly before it is < p.
    """
    if p is None or p >= 1.0:
        return logits
    if p <= 0.0:
        raise ValueError(f"top_p must be in (0, 1] (None or 1 = off), got {p}")
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    keep_sorted = mass_before < p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def cfg_logits(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022) on logits: ``u + s (c - u)``.
    s = 1: the conditional logits; s = 0: the unconditional ones; s > 1: guided.
    (VAR/HART write ``(1 + t) c - t u``, the same with s = 1 + t.)"""
    return uncond + scale * (cond - uncond)


def process_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None) -> torch.Tensor:
    """Temperature, then top-k, then top-p: the logits whose softmax is sampled. temperature > 0."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 here (0 means greedy: use sample_logits), got {temperature}")
    return top_p_filter(top_k_filter(logits / temperature, top_k), top_p)


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row of logits (..., V).

    Returns ``(ids (...,), log_prob (...,))``: the token and its log-probability under the
    distribution it was drawn from (used as MaskGIT's confidence). ``temperature == 0`` is greedy:
    the argmax, with its log-probability under the plain softmax.
    """
    if temperature == 0:
        ids = logits.argmax(dim=-1)
        logp = logits.float().log_softmax(dim=-1)
    else:
        logp = process_logits(logits.float(), temperature, top_k, top_p).log_softmax(dim=-1)
        flat = logp.exp().reshape(-1, logp.shape[-1])
        ids = torch.multinomial(flat, 1, generator=generator).view(logp.shape[:-1])
    return ids, logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log U)``, U ~ Uniform(0, 1)."""
    u = torch.rand(shape, generator=generator, device=device)
    return -torch.log((-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20))


def cosine_schedule(r: float | torch.Tensor) -> float | torch.Tensor:
    """MaskGIT's mask schedule (Chang et al. 2022, Sec. 3.3): gamma(r) = cos(pi r / 2), the fraction of
    tokens still masked at progress r in [0, 1]; gamma(0) = 1, gamma(1) = 0."""
    if isinstance(r, torch.Tensor):
        return torch.cos(r * (math.pi / 2))
    return math.cos(r * math.pi / 2)
