"""Pictures of a finished pretraining run, by task: what `vitkit pretrain` draws when it ends.

    task_pictures("runs/mae")   # -> {"reconstructions": Path(...)} for an MAE run

Each task that has pictures registers a function ``draw(run, images) -> {name: path}`` in
``DRAWERS``; ``images`` is the first held-out batch (normalised). Tasks without one draw nothing.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

DRAWERS: dict[str, Callable] = {}


def register_pictures(task: str) -> Callable[[Callable], Callable]:
    def deco(fn: Callable) -> Callable:
        DRAWERS[task] = fn
        return fn
    return deco


def task_pictures(run_dir: str | Path, n: int = 8) -> dict[str, Path]:
    """Draw the pictures of the run's task into its folder; {} when the task has none."""
    from .run import load_run
    run = load_run(run_dir)
    draw = DRAWERS.get(run.train_cfg.task)
    if draw is None:
        return {}
    images = next(iter(run.test_loader()))[0][:n]
    return draw(run, images)


@register_pictures("mae")
def _mae_reconstructions(run, images) -> dict[str, Path]:
    """Original / masked / reconstruction (visible patches pasted) / raw prediction, fixed masks."""
    import torch

    from ..viz.reconstruction import plot_reconstruction
    noise = run.model.make_noise(images, torch.Generator().manual_seed(0))
    path = plot_reconstruction(run.model, images, run.path / "reconstructions.png", mean=run.mean, std=run.std,
                               noise=noise, scale=4)
    return {"reconstructions": path}


@register_pictures("vq")
def _tokenizer_reconstructions(run, images) -> dict[str, Path]:
    """Rows: original / decoded from the discrete tokens / (hybrid tokenizers) decoded with the residual."""
    import torch

    from ..viz import image_grid
    tok = run.model.eval()
    with torch.no_grad():
        rows = [images, tok.decode_ids(tok.encode(images))]
        if hasattr(tok, "encode_hybrid"):
            ids, residual = tok.encode_hybrid(images)
            rows.append(tok.decode_latent(tok.quantizer.ids_to_fhat(ids) + residual))
    path = image_grid(torch.cat(rows), len(images), run.path / "reconstructions.png", run.mean, run.std, scale=4)
    return {"reconstructions": path}


def _samples(run, images) -> dict[str, Path]:
    """One sample of every class per column, 4 rows, CFG scale 2, seed 0."""
    import torch

    from ..viz import image_grid
    k = len(run.classes)
    labels = torch.arange(4 * k) % k
    samples = run.model.generate(labels, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    return {"samples": image_grid(samples, k, run.path / "samples.png", run.mean, run.std, scale=3)}


for _task in ("ar", "var", "hart"):
    DRAWERS[_task] = _samples
