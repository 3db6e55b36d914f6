"""Weights on disk: the one safe reader and the one atomic writer.

    load_weights_file(path)  -> {name: tensor}   .safetensors, .bin/.pth/.pt (torch), .npz (numpy)
    save_weights(path, sd)                         safetensors, written atomically
    find_weights(folder)     -> [files]           the weights of a checkpoint folder (shards included)

Nothing here runs code from a file: safetensors and ``np.load(allow_pickle=False)`` hold only arrays,
and a torch pickle is read only through ``torch.load(weights_only=True)``, which refuses any global
outside plain tensors and containers. Every failure is a ValueError (or FileNotFoundError) of one
line that names the file. Writes go to a temporary file in the same folder, are fsynced, and are
moved over the target with ``os.replace``, so a kill leaves the old file or the new one, never a torn one.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn

_UMASK = os.umask(0o022)  # read the process umask (os has no getter) and put it straight back
os.umask(_UMASK)

TORCH_EXTS = (".bin", ".pth", ".pt", ".ckpt")
WEIGHT_EXTS = (".safetensors", ".npz", *TORCH_EXTS)
# Preferred file names in a checkpoint folder, in order (HF hub names first; vitkit writes model.safetensors).
FOLDER_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "open_clip_model.safetensors")
NOT_WEIGHTS = ("train_state.pt", "optimizer.pt", "scheduler.pt", "training_args.bin")


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
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def fsync_dir(d: Path) -> None:
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


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a state dict as safetensors, atomically (tensors are copied to CPU, shared storage untied)."""
    from safetensors.torch import save as st_save_bytes
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state_dict.items()}
    data = st_save_bytes(tensors, metadata={"format": "pt", **(metadata or {})})
    atomic_write_bytes(path, data)


def save_npz(path: str | Path, arrays: dict[str, torch.Tensor]) -> None:
    """Write tensors as an uncompressed .npz (the Google/Flax checkpoint container), atomically."""
    arrs = {k: v.detach().cpu().numpy() for k, v in arrays.items()}
    atomic_write(path, lambda f: np.savez(f, **arrs))


# ---- reading -----------------------------------------------------------------------------------
def _one_line(err: BaseException | str, limit: int = 240) -> str:
    """The first non-empty line of an error message, shortened: CLI errors are one line."""
    text = str(err)
    empty = type(err).__name__ if isinstance(err, BaseException) else ""
    line = next((s.strip() for s in text.splitlines() if s.strip()), empty)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _looks_like_safetensors(data: bytes) -> bool:
    """A safetensors file starts with an 8-byte little-endian header length, then '{'."""
    return len(data) >= 9 and data[8:9] == b"{"


def _sniff(path: Path) -> str:
    """'safetensors' | 'npz' | 'torch' | 'unknown', from the extension, then from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or _looks_like_safetensors(head):
        return "safetensors"
    if path.suffix == ".npz":
        return "npz"
    if path.suffix in TORCH_EXTS:
        return "torch"
    if head.startswith(b"PK\x03\x04"):  # a zip: numpy's .npz or torch's zip container
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            return "unknown"
        return "torch" if any(n.endswith("data.pkl") for n in names) else "npz"
    if head[:1] == b"\x80":  # a pickle protocol marker: torch's legacy format
        return "torch"
    return "unknown"


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read one weights file into a flat ``{name: tensor}`` on the CPU.

    .safetensors (and any file that starts like one) through safetensors; .npz through
    ``np.load(allow_pickle=False)``; .bin/.pth/.pt/.ckpt only through ``torch.load(weights_only=True)``
    (a training checkpoint's ``state_dict`` / ``model`` / ``module`` entry is taken). A truncated,
    corrupt or code-carrying file raises ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    kind = _sniff(path)
    if kind == "safetensors":
        return _load_safetensors(path)
    if kind == "npz":
        return _load_npz(path)
    if kind == "torch":
        return _load_torch(path)
    raise ValueError(f"{path} is not a weights file vitkit can read (expected safetensors, a torch "
                     f"checkpoint or .npz; the first bytes match none of them)")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError (and others on odd headers)
        raise ValueError(f"{path} is not a valid safetensors file (truncated or corrupt): {_one_line(e)}") from None


def _load_npz(path: Path) -> dict[str, torch.Tensor]:
    if not zipfile.is_zipfile(path):  # np.load would otherwise try the file as a pickle
        raise ValueError(f"{path} is not a valid .npz file (truncated or corrupt): not a zip archive")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
        raise ValueError(f"{path} holds Python objects, not plain arrays; refused "
                         f"(np.load allow_pickle=False): {_one_line(e)}") from None
    except Exception as e:
        raise ValueError(f"{path} is not a valid .npz file (truncated or corrupt): {_one_line(e)}") from None
    out = {}
    for k, a in arrays.items():
        if a.dtype.kind not in "fiub":
            raise ValueError(f"{path}: array {k!r} has dtype {a.dtype}, not a number type vitkit can load")
        out[k] = torch.from_numpy(np.ascontiguousarray(a))
    return out


def _load_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():  # a plain pickle of another protocol: we report, torch need not warn
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                obj = torch.load(path, map_location="cpu", weights_only=True)  # the legacy (non-zip) format
    except Exception as e:
        text = str(e)
        detail = _one_line(text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else e, 160)
        imports = _foreign_imports(path)
        if "Unsupported global" in text or imports:  # the pickle imports something: a class, a function, code
            what = detail.split(" was not")[0] if "Unsupported global" in text else "imports " + ", ".join(imports[:3])
            raise ValueError(f"{path} was refused: it is a pickle that would import or run code "
                             f"({what}); vitkit reads torch files only with "
                             f"torch.load(weights_only=True). Convert it to safetensors where you trust it.") from None
        raise ValueError(f"{path} is neither a valid safetensors file nor a weights-only torch "
                         f"checkpoint (truncated, corrupt, or holds arbitrary objects): {detail}") from None
    return _state_dict_of(obj, path)


def _foreign_imports(path: Path) -> list[str]:
    """What a torch pickle imports beyond torch's own rebuild helpers, read with ``pickletools``
    (which parses opcodes and runs nothing); only used to word the error of a refused file."""
    import pickletools

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
        else:
            data = path.read_bytes()
    except Exception:
        return []
    found, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings = (strings + [arg])[-2:]
            elif op.name == "GLOBAL":
                found.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) == 2:
                found.append(".".join(strings))
    except Exception:  # past the first pickle of a legacy file, or garbage: stop reading
        pass
    return [g for g in found if not g.startswith(("torch.", "collections.OrderedDict", "_codecs.encode"))]


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A flat state dict, or the one a training checkpoint wraps (``state_dict``, ``model``, ``module``)."""
    def is_sd(o):
        return (isinstance(o, dict) and bool(o)
                and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in o.items()))

    if is_sd(obj):
        return dict(obj)
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "module", "model_state_dict"):
            if is_sd(obj.get(key)):
                return dict(obj[key])
        keys = ", ".join(map(str, list(obj)[:8]))
        raise ValueError(f"{path} does not hold a state dict of tensors (top-level keys: {keys})")
    raise ValueError(f"{path} does not hold a state dict of tensors (it holds a {type(obj).__name__})")


def find_weights(folder: str | Path) -> list[Path]:
    """The weights file(s) of a checkpoint folder: a HF/timm/vitkit folder, shards included."""
    folder = Path(folder)
    for name in FOLDER_FILES:
        p = folder / name
        if p.is_file():
            if name.endswith(".index.json"):
                return _shards(p)
            return [p]
    found = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix in WEIGHT_EXTS and p.name not in NOT_WEIGHTS)
    if not found:
        raise FileNotFoundError(f"no weights file in {folder} (looked for {', '.join(FOLDER_FILES[::2])} "
                                f"and *.safetensors / *.npz / *.pth / *.bin)")
    if len(found) > 1:
        names = ", ".join(p.name for p in found[:6])
        raise ValueError(f"{folder} holds several weights files ({names}); pass the one to load")
    return found


def _shards(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{index} is not a valid shard index: {_one_line(e)}") from None
    shards = sorted({index.parent / f for f in weight_map.values()})
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise FileNotFoundError(f"{index} lists shards that are not there: {', '.join(missing[:4])}")
    return shards


def load_weights_files(paths: list[Path]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for p in paths:
        out.update(load_weights_file(p))
    return out


def read_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {_one_line(e)}") from None


# ---- fitting a state dict to a model -----------------------------------------------------------
def state_mismatch(own: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor],
                   names: dict[str, str] | None = None) -> str | None:
    """None when ``state_dict`` fits ``own`` key for key and shape for shape; else a one-line report
    of the first few missing keys, unexpected keys and shape mismatches (``names`` gives a key's
    name in the checkpoint, where it differs)."""
    names = names or {}
    missing = [k for k in own if k not in state_dict]
    unexpected = [names.get(k, k) for k in state_dict if k not in own]
    shapes = [f"{names.get(k, k)}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
              for k, v in own.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            parts.append(f"{len(items)} {label}: {items[:5]}{more}")
    return "; ".join(parts) or None


def load_model_state(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load weights strictly; any mismatch raises ValueError listing the first offending keys."""
    problem = state_mismatch(model.state_dict(), state_dict)
    if problem:
        raise ValueError("checkpoint is for another architecture: " + problem)
    model.load_state_dict(state_dict, strict=True)
