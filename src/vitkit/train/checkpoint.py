"""Run folders: atomic checkpoint files, clear load errors, resumable training state.

A run folder holds
    config.json        TrainConfig.to_dict() merged with the caller's `meta` (what rebuilds model and data)
    model.safetensors  the model's weights (raw weights, not EMA), metadata {"epoch", "step"}
    train_state.pt     optimizer, EMA weights, grad scaler, epoch, step, RNG states, best metric;
                       plain tensors and Python containers only: loads with torch.load(weights_only=True)
    metrics.jsonl      one JSON object per line, appended while training

Every file except metrics.jsonl is written to a temporary file in the same folder, fsynced, and
moved over the old one with os.replace, so a kill at any moment leaves either the old file or the
new one, never a torn one. train_state.pt is written last: it is the commit mark of a checkpoint.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from safetensors.torch import load as st_load_bytes
from safetensors.torch import save as st_save_bytes
from torch import nn

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
STATE_FORMAT = 1

_UMASK = os.umask(0o022)  # read the process umask (os has no getter) and put it straight back
os.umask(_UMASK)


# ---- atomic writes -----------------------------------------------------------------------------
def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write(f)` on a temp file next to `path`, fsync it, then os.replace it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600; give the usual file mode
                os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def _fsync_dir(d: Path) -> None:
    """Make the rename itself durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- weights -----------------------------------------------------------------------------------
def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a state dict as safetensors, atomically (tensors are copied to CPU, shared storage untied)."""
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state_dict.items()}
    data = st_save_bytes(tensors, metadata={"format": "pt", **(metadata or {})})
    atomic_write_bytes(path, data)


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file: safetensors first; a torch pickle only through torch.load(weights_only=True).

    A truncated or corrupt file raises ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    data = path.read_bytes()
    try:
        return st_load_bytes(data)
    except Exception as st_err:  # safetensors raises its own SafetensorError (and others on odd headers)
        if path.suffix == ".safetensors" or _looks_like_safetensors(data):
            raise ValueError(f"{path} is not a valid safetensors file (truncated or corrupt): {st_err}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as pt_err:
        raise ValueError(f"{path} is neither a valid safetensors file nor a weights-only torch "
                         f"checkpoint (truncated, corrupt, or holds arbitrary objects): {pt_err}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return obj


def _looks_like_safetensors(data: bytes) -> bool:
    """A safetensors file starts with an 8-byte little-endian header length, then '{'."""
    return len(data) >= 9 and data[8:9] == b"{"


def load_model_state(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load weights strictly; any mismatch raises ValueError listing the first offending keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
              for k, v in own.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{len(items)} {label}: {items[:5]}{more}")
        raise ValueError("checkpoint is for another architecture: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)


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
    save_weights(run_dir / MODEL_FILE, model.state_dict(), metadata={"epoch": str(epoch), "step": str(step)})
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
    """The weights of a run folder: "model" (model.safetensors) or "ema" (the EMA copy in train_state.pt)."""
    if which == "model":
        return load_weights_file(Path(run_dir) / MODEL_FILE)
    if which == "ema":
        ema = load_train_state(run_dir)["ema"]
        if ema is None:
            raise ValueError(f"{run_dir} was trained without EMA (ema_decay was None)")
        return ema["module"]
    raise ValueError(f"which must be 'model' or 'ema', got {which!r}")
