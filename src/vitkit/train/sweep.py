"""Many training runs at once: what the benchmarks and `vitkit ablate` share.

    results = run_all([("name", {TrainConfig fields..., "out": "runs/x"}), ...], n_procs=2)

A job whose run folder already finished with the same config is reused (its last metrics line is
returned), an interrupted one resumes, so a sweep that stopped continues where it stopped. Jobs run
in ``n_procs`` spawned processes of one thread each: on a small CPU, two single-thread jobs beat
one two-thread job for the small models of the sweeps.
"""
from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from pathlib import Path


def _canonical(value):
    """``value`` with every string that names an existing file or folder made absolute (recursively through
    dicts and lists): a teacher or ``init`` given as runs/x and as /abs/runs/x is the same config."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_canonical(v) for v in value)
    if isinstance(value, str) and value and Path(value).exists():
        return str(Path(value).resolve())
    return value


def _same_config(saved: dict, cfg) -> bool:
    """Whether a run folder's config.json was written for ``cfg``: a key the folder predates counts as
    its field's default (a field added later does not make every finished run look changed), and a path
    counts by where it points, not how it is spelled."""
    import dataclasses
    ignore = {"resume", "out", "num_threads", "num_workers", "log_every"}
    defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
    return all(_canonical(saved.get(k, defaults.get(k))) == _canonical(v)
               for k, v in cfg.to_dict().items() if k not in ignore)


def run_one(job: tuple[str, dict]) -> dict:
    """Train one run (or reuse it when finished with the same config) and return its last metrics line."""
    import torch

    from vitkit.train import TrainConfig, fit
    from vitkit.train import checkpoint as ckpt
    from vitkit.train.run import build_run
    torch.set_num_threads(1)
    name, d = job
    cfg = TrainConfig.from_dict(d)
    out = Path(cfg.out)
    same = (out / ckpt.CONFIG_FILE).is_file() and _same_config(ckpt.read_config(out), cfg)
    done = [r for r in ckpt.read_metrics(out) if r.get("kind") == "epoch"] if same else []
    if done and done[-1]["epoch"] == cfg.epochs:
        return {"name": name, **done[-1], "reused": True,
                "seconds": sum(r.get("epoch_time_s", 0) + r.get("eval_time_s", 0) for r in done)}
    t0 = time.time()
    cfg = cfg.replace(resume=same)  # continue an interrupted run of the same config, else start afresh
    model, task, loaders, bundle, meta = build_run(cfg)
    result = fit(model, task, loaders, cfg, meta)
    return {"name": name, **{k: v for k, v in result.items() if k != "best"}, "seconds": time.time() - t0}


def run_all(jobs: list[tuple[str, dict]], n_procs: int) -> dict[str, dict]:
    """Every job's result by name; ``n_procs`` > 1 runs them in that many spawned processes."""
    if n_procs <= 1:
        return {j[0]: run_one(j) for j in jobs}
    with mp.get_context("spawn").Pool(n_procs) as pool:
        return {r["name"]: r for r in pool.imap_unordered(run_one, jobs)}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def train_seconds(run_dir: str | Path) -> float:
    """Training time of a finished run: the sum of its epochs (evaluation excluded)."""
    from vitkit.train import checkpoint as ckpt
    return sum(r.get("epoch_time_s", 0.0) for r in ckpt.read_metrics(Path(run_dir)) if r.get("kind") == "epoch")


def param_count(cfg: dict, bundle) -> int:
    """Parameters of the classifier a job's config builds for the data ``bundle`` (a ``DataBundle``), at
    the config's ``img_size`` as training would (a task's training-only extras, such as DiversePatch's
    patch head, left out). Built on the meta device: no weights are made."""
    import torch

    from vitkit.train import TrainConfig
    from vitkit.train.tasks import DataInfo, build_backbone
    c = TrainConfig.from_dict(cfg)
    with torch.device("meta"):
        return sum(p.numel() for p in build_backbone(c, DataInfo.from_bundle(bundle, c.img_size)).parameters())

