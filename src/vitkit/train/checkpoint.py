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
new one, never a torn one. A checkpoint is several files, so it is saved in two phases: the new
training state goes to train_state.next.pt first, then the EMA weights, then the model weights, and
the commit renames train_state.next.pt onto train_state.pt. A save killed midway is settled by
`recover` when a writer next opens the folder (`fit`, `--resume`): rolled forward when model.safetensors
already holds the pending step, rolled back (the EMA file rewritten from the committed state) when it
does not. Readers (eval, info, ...) never settle: the folder may belong to a run still training.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

# The one safe reader and atomic writer live in vitkit.weights.io; re-exported here for the trainer.
from ..weights.io import (atomic_write, atomic_write_bytes, load_model_state, load_weights_file,  # noqa: F401
                          fsync_dir, save_weights)

MODEL_FILE = "model.safetensors"
EMA_FILE = "model_ema.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "train_state.pt"
PENDING_STATE_FILE = "train_state.next.pt"  # a checkpoint being saved (see the module docstring)
METRICS_FILE = "metrics.jsonl"
STATE_FORMAT = 1
RUN_FILES = (CONFIG_FILE, MODEL_FILE, EMA_FILE, STATE_FILE, PENDING_STATE_FILE, METRICS_FILE)
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
    """Save a checkpoint in two phases (module docstring): train_state.next.pt, model_ema.safetensors,
    model.safetensors, then the commit (train_state.next.pt -> train_state.pt). `epoch` = epochs completed."""
    run_dir = Path(run_dir)
    metadata = {"epoch": str(epoch), "step": str(step)}
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
    atomic_write(run_dir / PENDING_STATE_FILE, lambda f: torch.save(state, f))
    if ema is not None:  # the evaluated weights, shipped as safetensors too (convert / export read them)
        save_weights(run_dir / EMA_FILE, ema.module.state_dict(), metadata=metadata)
    save_weights(run_dir / MODEL_FILE, model.state_dict(), metadata=metadata)
    os.replace(run_dir / PENDING_STATE_FILE, run_dir / STATE_FILE)  # the commit
    fsync_dir(run_dir)


def _weights_step(path: Path) -> str | None:
    """The "step" in a safetensors file's metadata (None when the file is missing or unreadable)."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("step")
    except Exception:
        return None


def recover(run_dir: str | Path) -> str | None:
    """Settle a checkpoint whose save was killed midway; returns "forward", "back" or None (nothing to do).

    train_state.next.pt is complete on disk before any weights file is replaced. If model.safetensors
    (written last) holds its step, every file of the new checkpoint is there: commit it. Otherwise the
    committed checkpoint is still whole except, perhaps, model_ema.safetensors: rewrite that from the
    committed state and drop the pending one. Temp files of killed writes are removed either way."""
    run_dir = Path(run_dir)
    for tmp in run_dir.glob(".*.tmp") if run_dir.is_dir() else ():
        if any(tmp.name.startswith(f".{name}.") for name in RUN_FILES):
            tmp.unlink(missing_ok=True)
    pending = run_dir / PENDING_STATE_FILE
    if not pending.is_file():
        return None
    try:
        step = str(_load_state_file(pending)["step"])
    except ValueError:  # cannot happen after an fsynced atomic write; treat it as never written
        step = None
    if step is not None and _weights_step(run_dir / MODEL_FILE) == step:
        os.replace(pending, run_dir / STATE_FILE)
        fsync_dir(run_dir)
        return "forward"
    pending.unlink()
    committed = run_dir / STATE_FILE
    if committed.is_file() and (run_dir / EMA_FILE).is_file():
        state = _load_state_file(committed)
        if state["ema"] is not None and _weights_step(run_dir / EMA_FILE) != str(state["step"]):
            save_weights(run_dir / EMA_FILE, state["ema"]["module"],
                         metadata={"epoch": str(state["epoch"]), "step": str(state["step"])})
    return "back"


def load_train_state(run_dir: str | Path) -> dict[str, Any]:
    """train_state.pt (the last committed checkpoint) through torch.load(weights_only=True), with a clear
    error when it is damaged."""
    return _load_state_file(Path(run_dir) / STATE_FILE)


def _load_state_file(path: Path) -> dict[str, Any]:
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
    if meta.get("step") != str(state["step"]):  # not a killed save (recover settles those): files mixed by hand
        raise ValueError(f"{run_dir}: {MODEL_FILE} (step {meta.get('step')}) and {STATE_FILE} "
                         f"(step {state['step']}) are from different checkpoints (a file copied from another "
                         "run?). Start it again without resume.")
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
    """Epochs completed by the run folder's last committed checkpoint (None when it holds none)."""
    path = Path(run_dir) / STATE_FILE
    return int(load_train_state(run_dir)["epoch"]) if path.is_file() else None
