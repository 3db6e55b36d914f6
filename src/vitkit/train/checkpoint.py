"""Run folders: atomic checkpoint files, clear load errors, resumable training state.

A run folder holds
    config.json        TrainConfig.to_dict() merged with the caller's `meta` (what rebuilds model and data)
    model.safetensors  the model's weights (raw weights, not EMA), metadata {"epoch", "step"}
    model_ema.safetensors  (runs with ema_decay) the EMA weights, the ones the run evaluates and ships;
                       same metadata
    train_state.pt     optimizer, EMA state, grad scaler, epoch, step, RNG states, best metric;
                       plain tensors and Python containers only: loads with torch.load(weights_only=True)
    metrics.jsonl      one JSON object per line, appended while training

Every file except metrics.jsonl is written to a temporary file in the same folder, fsynced, and
moved over the old one with os.replace, so a kill at any moment leaves either the old file or the
new one, never a torn one. train_state.pt is written last: it is the commit mark of a checkpoint.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

# The one safe reader and atomic writer live in vitkit.weights.io; re-exported here for the trainer.
from ..weights.io import (atomic_write, atomic_write_bytes, load_model_state, load_weights_file,  # noqa: F401
                          save_weights)

MODEL_FILE = "model.safetensors"
EMA_FILE = "model_ema.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
STATE_FORMAT = 1
RUN_FILES = (CONFIG_FILE, MODEL_FILE, EMA_FILE, STATE_FILE, METRICS_FILE)
"""The files `fit` writes: a folder holding any of them holds a run (`vitkit train` will not overwrite it)."""
REPORT_FILES = ("report.json", "index.html", "curves.png", "confusion.png", "errors.png", "rollout.png",
                "pos_embed.png", "patch_filters.png", "reconstructions.png", "samples.png")
"""What `vitkit report` and the pictures after training add to a run folder (replaced with the run)."""


# ---- config and metrics ------------------------------------------------------------------------
def write_config(run_dir: str | Path, cfg, meta: dict | None = None) -> dict[str, Any]:
    """config.json = cfg.to_dict() with `meta` merged over it (meta wins: the caller knows the resolved values)."""
    from vitkit import __version__
    d = {**cfg.to_dict(), **(meta or {}), "vitkit_version": __version__}
    atomic_write_bytes(Path(run_dir) / CONFIG_FILE, (json.dumps(d, indent=2, default=_json_default) + "\n").encode())
    return d


def read_config(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def append_metrics(run_dir: str | Path, record: dict[str, Any]) -> None:
    with open(Path(run_dir) / METRICS_FILE, "a") as f:
        f.write(json.dumps(record, default=_json_default) + "\n")


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All complete lines of metrics.jsonl (a torn last line, from a kill mid-write, is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def truncate_metrics(run_dir: str | Path, max_step: int) -> None:
    """Drop lines logged after global step `max_step` (the part of a killed epoch a resume replays)."""
    path = Path(run_dir) / METRICS_FILE
    if path.is_file():
        keep = [r for r in read_metrics(run_dir) if r.get("step", 0) <= max_step]
        atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in keep).encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor) and o.numel() == 1:
        return o.item()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


# ---- RNG states (as plain tensors and ints: weights_only-loadable) -----------------------------
def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- the checkpoint ----------------------------------------------------------------------------
def save_checkpoint(run_dir: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, *, epoch: int,
                    step: int, ema=None, scaler=None, best: dict | None = None) -> None:
    """Write model.safetensors, then train_state.pt (the commit mark). `epoch` = epochs completed."""
    run_dir = Path(run_dir)
    metadata = {"epoch": str(epoch), "step": str(step)}
    save_weights(run_dir / MODEL_FILE, model.state_dict(), metadata=metadata)
    if ema is not None:  # the evaluated weights, shipped as safetensors too (convert / export read them)
        save_weights(run_dir / EMA_FILE, ema.module.state_dict(), metadata=metadata)
    state = {
        "format": STATE_FORMAT,
        "epoch": int(epoch),
        "step": int(step),
        "optimizer": optimizer.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "best": best,
    }
    atomic_write(run_dir / STATE_FILE, lambda f: torch.save(state, f))


def load_train_state(run_dir: str | Path) -> dict[str, Any]:
    """train_state.pt through torch.load(weights_only=True), with a clear error when it is damaged."""
    path = Path(run_dir) / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path} is not a valid training state (truncated or corrupt): {e}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a vitkit training state (format {STATE_FORMAT})")
    return state


def load_checkpoint(run_dir: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                    ema=None, scaler=None, restore_rng: bool = True) -> dict[str, Any]:
    """Restore a run folder into `model` (and optimizer / EMA / scaler / RNGs); returns the train state.

    Checks that model.safetensors and train_state.pt belong to the same checkpoint.
    """
    run_dir = Path(run_dir)
    state = load_train_state(run_dir)
    weights_path = run_dir / MODEL_FILE
    weights = load_weights_file(weights_path)
    from safetensors import safe_open
    with safe_open(str(weights_path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("step") != str(state["step"]):
        raise ValueError(f"{run_dir}: {MODEL_FILE} (step {meta.get('step')}) and {STATE_FILE} "
                         f"(step {state['step']}) are from different checkpoints; the run was killed while "
                         "saving. Start it again without resume.")
    load_model_state(model, weights)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if ema is not None:
        if state["ema"] is None:
            raise ValueError(f"{run_dir} was trained without EMA; cannot resume it with ema_decay set")
        ema.load_state_dict(state["ema"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return state


def load_run_weights(run_dir: str | Path, which: str = "model") -> dict[str, torch.Tensor]:
    """The weights of a run folder: "model" (model.safetensors) or "ema" (model_ema.safetensors; runs
    written before it existed keep the EMA copy in train_state.pt only)."""
    run_dir = Path(run_dir)
    if which == "model":
        return load_weights_file(run_dir / MODEL_FILE)
    if which == "ema":
        if (run_dir / EMA_FILE).is_file():
            return load_weights_file(run_dir / EMA_FILE)
        if not (run_dir / STATE_FILE).is_file():
            raise FileNotFoundError(f"{run_dir} has neither {EMA_FILE} nor {STATE_FILE}: its EMA weights are "
                                    "missing; use the raw weights (--weights model)")
        ema = load_train_state(run_dir)["ema"]
        if ema is None:
            raise ValueError(f"{run_dir} was trained without EMA (ema_decay was None); use --weights model")
        return ema["module"]
    raise ValueError(f"which must be 'model' or 'ema', got {which!r}")


def check_weights_file(path: str | Path) -> None:
    """Raise ValueError naming ``path`` when its safetensors header does not cover the file (a truncated
    or torn copy): the shipped weights are checked even where a command reads other ones."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path} is not a valid safetensors file (truncated or corrupt): "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def saved_epoch(run_dir: str | Path) -> int | None:
    """Epochs completed by the run folder's last checkpoint (None when it holds none)."""
    path = Path(run_dir) / STATE_FILE
    return int(load_train_state(run_dir)["epoch"]) if path.is_file() else None
