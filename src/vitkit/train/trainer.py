"""The one generic trainer: `fit(model, task, loaders, cfg)` and `evaluate(model, task, loader)`.

The trainer knows nothing of models or tasks beyond two calls:
    task.loss(model, batch)         -> (scalar loss tensor, {name: value})   in training
    task.eval_metrics(model, batch) -> {name: SUM over the batch, ..., "count": n}
and two optional attributes: `task.summarize(totals) -> dict` (turns summed eval metrics into
final ones; default: `name_sum` / count -> `name`), and `task.main_metric = (name, "max"|"min")`
(the test metric tracked as "best"; default ("loss", "min")).

Everything the trainer optimises, wraps in DDP, averages (EMA) and checkpoints is `model`. A task
with weights of its own (an MAE decoder, a CLIP temperature) must pass a module that holds them
as `model`; under DDP a task must go through `model(...)` so gradients are synchronised.

Determinism: at the start of every epoch the RNGs are reseeded from (seed, epoch, rank) and
`loader.set_epoch(epoch)` is called, so a run resumed from its epoch-k checkpoint ends with the
same weights, bit for bit, as one that never stopped.
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import distributed as dist
from .config import TrainConfig
from .ema import ModelEMA
from . import precision
from .optim import build_optimizer
from .precision import available_cpus  # noqa: F401 (re-exported: the cores a --threads flag may use)
from .schedule import lr_at


class NonFiniteLossError(RuntimeError):
    """The loss (or the weights) became NaN/inf; the run stopped and kept its last good checkpoint."""


# ---- helpers -----------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda (this rank's GPU) when available, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for, but this PyTorch sees no CUDA GPU "
                             "(torch.cuda.is_available() is False); use --device cpu or auto")
        if name == "cuda":
            return torch.device("cuda", dist.local_rank())
    return torch.device(name)


def set_threads(n: int) -> None:
    """torch.set_num_threads(n), with a warning when n oversubscribes the cores this process has."""
    cpus = available_cpus()
    if n > cpus:
        warnings.warn(f"{n} threads on {cpus} CPU core(s): oversubscribed threads make PyTorch much slower; "
                      f"use at most {cpus}", stacklevel=2)
    torch.set_num_threads(n)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device
    np.random.seed(seed % 2**32)
    random.seed(seed)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) tuple/list/dict batch to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def batch_size_of(batch: Any) -> int:
    """Length along dim 0 of the batch's first tensor."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for b in items:
        try:
            return batch_size_of(b)
        except ValueError:
            continue
    raise ValueError("cannot find a tensor in the batch to count its samples")


def split_batch(batch: Any, parts: int) -> list[Any]:
    """Split every tensor of a batch into `parts` micro-batches along dim 0 (empty ones dropped)."""
    if parts == 1:
        return [batch]
    n = batch_size_of(batch)
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    pieces = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]

    def take(b: Any, lo: int, hi: int) -> Any:
        if isinstance(b, torch.Tensor):
            return b[lo:hi] if b.ndim > 0 and b.shape[0] == n else b
        if isinstance(b, (list, tuple)):
            return type(b)(take(x, lo, hi) for x in b)
        if isinstance(b, dict):
            return {k: take(v, lo, hi) for k, v in b.items()}
        return b

    return [take(batch, lo, hi) for lo, hi in pieces]


def autocast_context(device: torch.device, amp: str | torch.dtype | None):
    """Autocast for ``amp`` (an amp name, resolved for ``device``, or a dtype) on any device
    (`vitkit.train.precision`); nothing for fp32."""
    return precision.autocast(device, amp)


def _float(v: Any) -> float:
    return float(v.detach().float().item()) if isinstance(v, torch.Tensor) else float(v)


PROGRESS_SECONDS = 5.0
"""Away from a terminal (a log file, a pipe, CI), a progress line is printed at most this often."""


class _Progress:
    """Progress within an epoch, on the main rank unless VITKIT_NO_PROGRESS=1: a tqdm bar on a
    terminal; elsewhere a plain line every PROGRESS_SECONDS, so a long epoch is never silent."""

    def __init__(self, epoch: int, epochs: int, steps: int):
        on = dist.is_main() and os.environ.get("VITKIT_NO_PROGRESS") != "1"
        self.lines = on and not sys.stderr.isatty()
        self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", leave=False, dynamic_ncols=True,
                        disable=not on or self.lines)
        self.epoch, self.epochs, self.steps, self.done = epoch, epochs, steps, 0
        self.t_last = time.perf_counter()

    def step(self, loss: float, lr: float, img_per_s: float) -> None:
        self.done += 1
        if not self.bar.disable:
            self.bar.set_postfix({"loss": f"{loss:.4f}", "lr": f"{lr:.2e}", "img/s": f"{img_per_s:.0f}"},
                                 refresh=False)
            self.bar.update(1)
        elif self.lines and time.perf_counter() - self.t_last >= PROGRESS_SECONDS and self.done < self.steps:
            print(f"  epoch {self.epoch}/{self.epochs}, step {self.done}/{self.steps}: loss {loss:.4f}, "
                  f"lr {lr:.2e}, {img_per_s:.0f} img/s", flush=True)
            self.t_last = time.perf_counter()

    def close(self) -> None:
        self.bar.close()


def _weights_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.is_floating_point())


class _Meter:
    """Sample-weighted running means of named metrics (values may stay tensors until read)."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, Any], n: int) -> None:
        for k, v in metrics.items():
            v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
            self.sums[k] = self.sums.get(k, 0.0) + v * n
            self.counts[k] = self.counts.get(k, 0) + n

    def means(self, reduce: bool = False) -> dict[str, float]:
        """Means over what was added; with `reduce`, over every rank (a collective: all ranks call it)."""
        keys = sorted(self.sums)
        if not keys:
            return {}
        t = torch.tensor([[_float(self.sums[k]), float(self.counts[k])] for k in keys], dtype=torch.float64)
        if reduce and dist.is_distributed():
            t = dist.all_reduce_sum(t.to(_collective_device())).cpu()
        return {k: (s / c if c else float("nan")) for k, (s, c) in zip(keys, t.tolist())}


def _collective_device() -> torch.device:
    """nccl reduces CUDA tensors only; gloo CPU ones."""
    import torch.distributed as tdist
    nccl = tdist.get_backend() == "nccl"
    return torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")


# ---- evaluation --------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: nn.Module, task, loader, *, device: torch.device | str | None = None,
             amp: str | torch.dtype | None = None) -> dict[str, float]:
    """Sum `task.eval_metrics` over the loader (and over ranks under DDP), then divide by the count.

    Returns the task's summary (e.g. {"loss", "acc"}) plus "count", the number of samples seen.
    The model is put in eval mode for the pass and given back in the mode it came in.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals: dict[str, Any] = {}
    try:
        for batch in loader:
            batch = to_device(batch, device)
            with autocast_context(device, amp):
                sums = task.eval_metrics(model, batch)
            if "count" not in sums:
                raise ValueError("task.eval_metrics must return sums plus 'count'")
            for k, v in sums.items():
                v = v.detach().double() if isinstance(v, torch.Tensor) else float(v)
                totals[k] = totals.get(k, 0.0) + v
    finally:
        model.train(was_training)
    keys = sorted(totals)
    t = torch.tensor([_float(totals[k]) for k in keys], dtype=torch.float64)
    if dist.is_distributed():
        t = dist.all_reduce_sum(t.to(_collective_device())).cpu()
    totals = dict(zip(keys, t.tolist()))
    count = totals.pop("count", 0.0)
    if count <= 0:
        raise ValueError("evaluate: the loader yielded no samples")
    if hasattr(task, "summarize"):
        out = dict(task.summarize({**totals, "count": count}))
    else:
        out = {k.removesuffix("_sum"): v / count for k, v in totals.items()}
    out["count"] = int(count)
    return out


# ---- training ----------------------------------------------------------------------------------
def fit(model: nn.Module, task, loaders: dict, cfg: TrainConfig, meta: dict | None = None, *,
        stop_after: int | None = None) -> dict[str, Any]:
    """Train `model` on `task` with `loaders["train"]`, evaluating on `loaders["test"]` when given.

    Writes the run folder `cfg.out` (see vitkit.train.checkpoint) and returns the last epoch's
    metrics (the same dict as its metrics.jsonl line, plus "best"). `stop_after=k` returns cleanly
    once k epochs are done and checkpointed, as a time-boxed job would; `cfg.resume` continues it.
    Raises NonFiniteLossError when the loss turns NaN/inf (the last good checkpoint stays on disk).
    """
    unknown = set(loaders) - {"train", "test"}
    if "train" not in loaders or unknown:
        raise ValueError(f"loaders must be a dict with 'train' and optionally 'test'; got keys {sorted(loaders)}")
    train_loader, test_loader = loaders["train"], loaders.get("test")
    dist.init_distributed()
    rank, world = dist.rank(), dist.world_size()
    main = rank == 0
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} (global) must be divisible by the world size {world}")
    if cfg.num_threads:
        set_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    amp = precision.resolve_amp(cfg.amp, device)  # None: fp32
    _check_task_has_no_own_weights(task, model)
    out = Path(cfg.out)

    steps_per_epoch = len(train_loader)
    if steps_per_epoch < 1:
        raise ValueError("the train loader yields no batches")
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)

    model.to(device)
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay else None
    main_metric, mode = getattr(task, "main_metric", ("loss", "min"))

    # ---- resume or start fresh
    start_epoch, step, best, last = 0, 0, None, {}
    if main:
        ckpt.recover(out)  # a checkpoint whose save was killed: committed or rolled back
    dist.barrier()
    has_ckpt = (out / ckpt.STATE_FILE).is_file()
    if cfg.resume and has_ckpt:
        state = ckpt.load_checkpoint(out, model, optimizer, ema=ema, scaler=scaler)
        start_epoch, step, best = state["epoch"], state["step"], state["best"]
        _warn_changed_config(out, cfg)
        last = next((r for r in reversed(ckpt.read_metrics(out)) if r.get("kind") == "epoch"), {})
        if main:
            ckpt.truncate_metrics(out, step)
            ckpt.append_metrics(out, {"kind": "resume", "epoch": start_epoch, "step": step})
            print(f"resuming {out} after epoch {start_epoch} (step {step})", flush=True)
    elif main:
        if has_ckpt:
            warnings.warn(f"{out} holds a checkpoint and resume is off: starting a new run there", stacklevel=2)
        for name in (ckpt.STATE_FILE, ckpt.PENDING_STATE_FILE, ckpt.MODEL_FILE, ckpt.EMA_FILE, ckpt.METRICS_FILE):
            (out / name).unlink(missing_ok=True)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.write_config(out, cfg, meta)
    dist.barrier()
    saved_epoch = start_epoch if has_ckpt and cfg.resume else None  # epochs in the checkpoint on disk

    train_model = dist.wrap_ddp(model, device)  # `model` stays the plain module (saving, EMA, eval)
    ddp = train_model is not model
    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    lr = lr_at(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)

    for epoch in range(start_epoch, end_epoch):
        # same RNG streams for this epoch whether or not the run was interrupted before it
        seed_everything(cfg.seed + epoch * 1000 + rank)
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        train_model.train()
        meter, log_meter = _Meter(), _Meter()
        seen = log_seen = 0
        t_epoch = t_log = time.perf_counter()
        bar = _Progress(epoch + 1, cfg.epochs, steps_per_epoch)
        try:
            for batch in train_loader:
                # 1. schedule: this step's learning rate, a pure function of the global step
                lr = lr_at(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)  # layer-wise lr decay (MAE)
                batch = to_device(batch, device)
                n = batch_size_of(batch)
                micro = split_batch(batch, cfg.accum_steps)
                for i, chunk in enumerate(micro):
                    share = batch_size_of(chunk) / n
                    # DDP all-reduces gradients on the last micro-batch only
                    defer_sync = ddp and i < len(micro) - 1
                    with train_model.no_sync() if defer_sync else nullcontext():
                        # 2. forward, under autocast when cfg.amp asks for bf16/fp16 (weights stay fp32)
                        with autocast_context(device, amp):
                            loss, metrics = task.loss(train_model, chunk)
                        # 3. non-finite guard: stop before a bad loss reaches the weights
                        loss_value = loss.item()  # one sync per micro-step: the price of stopping in time
                        if not math.isfinite(loss_value):
                            raise NonFiniteLossError(
                                _nonfinite_message(f"loss is {loss_value}", epoch, step, out, saved_epoch))
                        # 4. backward: each micro-batch weighted by its share of the batch
                        scaled = loss * share
                        (scaler.scale(scaled) if scaler is not None else scaled).backward()
                    metrics = {**metrics, "loss": loss_value}
                    meter.add(metrics, batch_size_of(chunk))
                    log_meter.add(metrics, batch_size_of(chunk))
                # 5. clip the global gradient norm
                if cfg.clip_grad is not None:
                    if scaler is not None:
                        scaler.unscale_(optimizer)
                    norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                    if scaler is None and not torch.isfinite(norm):
                        raise NonFiniteLossError(
                            _nonfinite_message(f"gradient norm is {norm.item()}", epoch, step, out, saved_epoch))
                # 6. optimizer step (the fp16 scaler skips steps with inf gradients)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                # 7. zero_grad
                optimizer.zero_grad(set_to_none=True)
                # 8. EMA
                if ema is not None:
                    ema.update(model)
                step += 1
                seen += n
                log_seen += n
                # 9. log (rank 0's shard; the epoch line below is averaged over ranks)
                bar.step(loss_value, lr, seen * world / max(time.perf_counter() - t_epoch, 1e-9))
                if step % cfg.log_every == 0 and main:
                    now = time.perf_counter()
                    rec = {"kind": "step", "epoch": epoch + 1, "step": step, **log_meter.means(), "lr": lr,
                           "img_per_s": round(log_seen * world / max(now - t_log, 1e-9), 1)}
                    ckpt.append_metrics(out, rec)
                    log_meter, log_seen, t_log = _Meter(), 0, now
        finally:
            bar.close()
        epoch_time = time.perf_counter() - t_epoch

        # ---- end of epoch: train means over ranks, evaluation, the metrics line, the checkpoint
        record: dict[str, Any] = {"kind": "epoch", "epoch": epoch + 1, "step": step,
                                  **{f"train_{k}": v for k, v in meter.means(reduce=True).items()},
                                  "lr": lr, "epoch_time_s": round(epoch_time, 3),
                                  "img_per_s": round(seen * world / max(epoch_time, 1e-9), 1)}
        if test_loader is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            t_eval = time.perf_counter()
            eval_model = ema.module if ema is not None else model
            results = evaluate(eval_model, task, test_loader, device=device, amp=amp)
            record.update({f"test_{k}": v for k, v in results.items()})
            record["eval_weights"] = "ema" if ema is not None else "model"
            record["eval_time_s"] = round(time.perf_counter() - t_eval, 3)
            value = results.get(main_metric)
            improved = value is not None and (best is None or (value > best["value"] if mode == "max"
                                                             else value < best["value"]))
            if improved:
                best = {"metric": f"test_{main_metric}", "value": value, "epoch": epoch + 1}
        if not _weights_finite(model):
            raise NonFiniteLossError(_nonfinite_message("weights are not finite", epoch, step, out, saved_epoch))
        if main:
            ckpt.append_metrics(out, record)
            ckpt.save_checkpoint(out, model, optimizer, epoch=epoch + 1, step=step, ema=ema, scaler=scaler,
                                 best=best)
            print(_summary(record, cfg.epochs), flush=True)
        saved_epoch = epoch + 1
        dist.barrier()
        last = record
    return {**last, "best": best}


def _check_task_has_no_own_weights(task, model: nn.Module) -> None:
    if not isinstance(task, nn.Module):
        return
    own = {id(p) for p in model.parameters()}
    stray = [n for n, p in task.named_parameters() if p.requires_grad and id(p) not in own]
    if stray:
        raise ValueError(f"the task has trainable parameters outside the model ({stray[:5]}); the trainer "
                         "optimises and saves only `model`: pass a module that holds both as the model")


def _nonfinite_message(what: str, epoch: int, step: int, out: Path, saved_epoch: int | None) -> str:
    kept = (f"the last good checkpoint (epoch {saved_epoch}) in {out} is kept"
            if saved_epoch else f"no checkpoint had been written to {out} yet")
    return (f"{what} at epoch {epoch + 1}, step {step}; training stopped and {kept}. "
            "Try a lower lr, clip_grad, or check the data.")


def _warn_changed_config(out: Path, cfg: TrainConfig) -> None:
    try:
        old = ckpt.read_config(out)
    except (FileNotFoundError, ValueError):
        return
    benign = {"resume", "out", "device", "num_threads", "num_workers", "log_every", "eval_every"}
    changed = sorted(k for k, v in cfg.to_dict().items() if k not in benign and k in old and old[k] != v)
    if changed:
        warnings.warn(f"resuming {out} with changed settings {changed}: the result will differ from an "
                      "uninterrupted run", stacklevel=3)


def _summary(rec: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {rec['epoch']}/{epochs}", f"train_loss {rec.get('train_loss', float('nan')):.4f}"]
    parts += [f"{k} {v:.4f}" for k, v in rec.items() if k.startswith("test_") and k != "test_count"]
    parts += [f"{rec['img_per_s']:.0f} img/s", f"{rec['epoch_time_s']:.1f}s"]
    return "  ".join(parts)
