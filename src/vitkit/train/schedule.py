"""Learning-rate schedule: a pure function of the step, so it is trivially resumable and testable."""
from __future__ import annotations

import math


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    """Learning rate for optimizer step `step` (0-based: the number of steps already taken).

    Linear warmup from 0 at step 0 to `base_lr` at `warmup_steps`, then a half cosine from
    `base_lr` down to `min_lr` at `total_steps`; `min_lr` from then on.
    """
    if total_steps < 1 or warmup_steps < 0 or step < 0:
        raise ValueError(f"need step >= 0, total_steps >= 1, warmup_steps >= 0; "
                         f"got step={step}, total_steps={total_steps}, warmup_steps={warmup_steps}")
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)  # in [0, 1)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
