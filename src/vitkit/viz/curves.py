"""Training curves from a metrics JSONL log: loss (per step and per epoch) beside accuracy per epoch.

The log holds one JSON object a line:

    {"kind": "step",  "epoch": 0, "step": 10, "loss": 2.1, "lr": 0.001, ...}
    {"kind": "epoch", "epoch": 0, "train_loss": 1.9, "test_loss": 1.2, "test_acc": 0.61, ...}

Extra keys are ignored. A line that is not JSON, not an object, or lacks what its kind needs
(step: numeric "step" and "loss"; epoch: numeric "epoch") is skipped. Without "kind", a line with
"step" is a step line and any other line with "epoch" is an epoch line; other kinds are ignored.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ._figure import PathLike, new_figure, save_figure


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_metrics(metrics_jsonl: PathLike) -> tuple[list[dict], list[dict]]:
    """Parse the log into (step records, epoch records), in file order, skipping malformed lines."""
    steps, epochs = [], []
    with open(metrics_jsonl, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict):
                continue
            kind = rec.get("kind")
            if kind is None:
                kind = "step" if "step" in rec else "epoch"
            if kind == "step" and _is_number(rec.get("step")) and _is_number(rec.get("loss")):
                steps.append(rec)
            elif kind == "epoch" and _is_number(rec.get("epoch")):
                epochs.append(rec)
    return steps, epochs


def _global_steps(steps: list[dict]) -> np.ndarray:
    """Steps as one increasing axis: a counter that restarts (per-epoch steps) is continued."""
    xs, offset, prev = [], 0.0, None
    for rec in steps:
        s = float(rec["step"])
        if prev is not None and s + offset < prev:
            offset = prev - s + 1  # the counter restarted: continue after the last step
        prev = s + offset
        xs.append(prev)
    return np.asarray(xs)


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average, as long as y (the first values average what exists so far)."""
    c = np.cumsum(np.insert(np.nan_to_num(y), 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_curves(metrics_jsonl: PathLike, out_png: PathLike) -> Path:
    """Plot loss (left: per step, and per epoch for every ``*loss`` key) and accuracy (right: every
    epoch key containing ``acc``) per epoch; write ``out_png`` and return its path.

    Epoch losses sit at the last step of their epoch when step lines exist, else the x axis is
    the epoch. Raises ValueError when the file holds no usable line at all.
    """
    steps, epochs = read_metrics(metrics_jsonl)
    if not steps and not epochs:
        raise ValueError(f"{metrics_jsonl}: no usable step or epoch lines")

    fig = new_figure((11, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)

    # Loss against the global step; epoch points at the end of their epoch.
    end_of_epoch: dict[float, float] = {}
    if steps:
        x = _global_steps(steps)
        y = np.asarray([float(r["loss"]) for r in steps])
        if len(y) > 20:
            ax_loss.plot(x, y, color="tab:blue", alpha=0.3, lw=0.8, label="step loss")
            ax_loss.plot(x, _smooth(y, max(len(y) // 20, 2)), color="tab:blue", lw=1.5, label="step loss (smoothed)")
        else:
            ax_loss.plot(x, y, color="tab:blue", lw=1.2, marker=".", label="step loss")
        for rec, xi in zip(steps, x):
            if _is_number(rec.get("epoch")):
                end_of_epoch[float(rec["epoch"])] = xi
        ax_loss.set_xlabel("step")
    else:
        ax_loss.set_xlabel("epoch")

    def epoch_x(e: float) -> float:
        return end_of_epoch.get(e, math.nan) if steps else e + 1  # epoch e ends after e + 1 epochs

    loss_keys = sorted({k for r in epochs for k, v in r.items() if k.endswith("loss") and _is_number(v)})
    for key in loss_keys:
        pts = [(epoch_x(float(r["epoch"])), float(r[key])) for r in epochs if _is_number(r.get(key))]
        pts = [p for p in pts if not math.isnan(p[0])]
        if pts:
            ax_loss.plot(*zip(*pts), marker="o", lw=1.5, label=key)
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss")
    ax_loss.grid(alpha=0.3)
    if ax_loss.lines:
        ax_loss.legend(fontsize=8)

    acc_keys = sorted({k for r in epochs for k, v in r.items() if "acc" in k and _is_number(v)})
    for key in acc_keys:
        pts = [(float(r["epoch"]), float(r[key])) for r in epochs if _is_number(r.get(key))]
        ax_acc.plot(*zip(*pts), marker="o", lw=1.5, label=key)
    if acc_keys:
        ax_acc.legend(fontsize=8)
    else:
        ax_acc.text(0.5, 0.5, "no accuracy logged", ha="center", va="center", transform=ax_acc.transAxes)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_title("accuracy per epoch")
    ax_acc.grid(alpha=0.3)
    return save_figure(fig, out_png)
