"""``vitkit export`` (a classifier run to ONNX) and ``vitkit convert`` (ViT weights between layouts).

Both write the weights the run was evaluated with (EMA where the run kept one) and say which. An
ONNX file is written under a temporary name and moved into place only once it checks out, so a
failed export leaves no partial file.
"""
from __future__ import annotations

import os
from pathlib import Path

from .common import CLIError


def cmd_export(args) -> int:
    """ONNX export of a classifier run, checked against PyTorch (and on the test split with --check)."""
    import torch

    from ..export.onnx import export_onnx, max_abs_diff, onnx_forward, onnx_session, quantize_onnx_int8
    from ..train.run import load_run, predict_batches, top1
    if not args.onnx:
        raise CLIError("say where to write the model: --onnx PATH (for int8 in PyTorch itself, see "
                       "vitkit.export.quantize_int8)")
    out = Path(args.onnx)
    if out.suffix.lower() != ".onnx":
        raise CLIError(f"--onnx {out}: the file name must end in .onnx")
    run = load_run(args.run, args.weights)
    run.needs(("classifier",), "export")
    model = run.model.eval()
    if args.int8:  # the fp32 graph is an intermediate: written, quantised, removed
        fp32 = out.with_name(f".{out.stem}.{os.getpid()}.fp32.onnx")
        try:
            export_onnx(model, fp32)
            _atomic(out, lambda p: quantize_onnx_int8(fp32, p))
        finally:
            fp32.unlink(missing_ok=True)
    else:
        _atomic(out, lambda p: export_onnx(model, p))
    session = onnx_session(out)
    diff = max_abs_diff(model, session, torch.randn(3, *run.input_size))
    print(f"vitkit: {run.path} -> {out} ({'int8 weights, ' if args.int8 else ''}{run.weights} weights, dynamic "
          f"batch, input 'pixel_values' {run.input_size}, output 'logits'); max |logit diff| vs PyTorch {diff:.1e}")
    if args.check:
        loader = run.eval_loader(None, 256)
        logits, labels = predict_batches(model, loader)
        onnx_logits = torch.cat([onnx_forward(session, xb) for xb, _ in loader])
        print(f"vitkit: held-out top-1 PyTorch {top1(logits, labels):.2%}, ONNX {top1(onnx_logits, labels):.2%} "
              f"({len(labels)} images)")
    return 0


def _atomic(path: Path, write) -> Path:
    """``write(tmp)`` to a temporary file beside ``path``, then move it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def cmd_convert(args) -> int:
    """A run folder's evaluated ViT (a pretraining run's backbone, a probe folded into its head), or any
    checkpoint `vitkit.weights.convert` reads, written in the layout ``--to`` names."""
    from ..train.tasks import _is_run_folder
    from ..weights import convert
    src = Path(args.src)
    if not (src.is_dir() and _is_run_folder(src)):
        print(convert(args.src, args.dst, to=args.to, model=args.model))
        return 0
    from ..models.vit import VisionTransformer
    from ..tasks.pretrained import LinearProbe
    from ..train.run import load_run
    from ..weights.convert import export
    run = load_run(src)
    model, what = run.model, "classifier"
    if isinstance(model, LinearProbe):
        model, what = model.folded(), "linear probe, folded into a linear head"
    elif not isinstance(model, VisionTransformer) and isinstance(getattr(model, "backbone", None), VisionTransformer):
        model, what = model.backbone, f"the backbone of a {run.train_cfg.task} run, no head"
    if not isinstance(model, VisionTransformer):
        raise CLIError(f"{src} holds a {type(model).__name__} ({run.train_cfg.task} run); convert writes ViTs "
                       "(VisionTransformer, DeiT) and the ViT backbones of pretraining runs")
    id2label = dict(enumerate(run.classes)) if model.num_classes == len(run.classes) else None
    try:
        path = export(model, args.dst, to=args.to, id2label=id2label)
    except ValueError as e:
        raise CLIError(f"{src} ({run.train_cfg.task} run, {what}): {e}") from None
    cfg = model.cfg
    print(f"{src} (vitkit run, {run.weights} weights, {what}) -> {path} ({args.to}): D={cfg.embed_dim} "
          f"depth={cfg.depth} heads={cfg.num_heads} patch={cfg.patch_size} img={cfg.img_size}"
          + (f", class names {run.classes[:3]}{'...' if len(run.classes) > 3 else ''}" if id2label else ""))
    return 0
