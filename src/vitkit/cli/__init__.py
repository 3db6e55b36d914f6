"""The ``vitkit`` command.

    vitkit models [PATTERN] [--pretrained]   registered models with parameter counts (or their default sources)
    vitkit download NAME|hf:ORG/NAME[@REV]   prefetch pretrained weights into the Hugging Face cache
    vitkit train --config configs/demo_mnist.yaml --out runs/demo   (or flags: --model --data ...)
    vitkit train --resume --out runs/demo    continue a run from its last checkpoint, with its own config
    vitkit pretrain --task mae --model vit_mnist_patch7_28 --out runs/mae   (self-supervised / generative)
    vitkit train --init runs/mae --labels-per-class 10 [--probe]    fine-tune / linear-probe a backbone
    vitkit eval RUN [--data SPEC]            held-out top-1 of a classifier (a task's metrics for other runs)
    vitkit predict RUN IMAGE...              top-k classes with probabilities
    vitkit info RUN                          what a run folder holds
    vitkit report RUN                        (re)draw a run's pictures and report.json
    vitkit zero-shot RUN IMAGE... --labels "cat,dog"   CLIP zero-shot labels (run or HF CLIP folder)
    vitkit generate RUN --n 64 --class 7     sample a grid from an ar / var / hart run
    vitkit ablate [--data digits] [--quick]  ViT ablations (pos-embed, pooling, patch, depth) over 3 seeds
    vitkit bench [--quick] [--device cuda]   speed vs HF transformers, ONNX Runtime, vit-pytorch
    vitkit export RUN --onnx m.onnx [--int8] ONNX graph (dynamic batch; int8 by ONNX Runtime), checked
    vitkit convert SRC DST --to hf|timm|vitkit   ViT weights between layouts (a run folder: its evaluated ViT)
    vitkit sparsevit-search --run RUN --latency-budget MS   SparseViT sparsity search (Pareto table)
    vitkit serve RUN|hf:ID [--port 8000] [--workers N]   the model behind an HTTP API and a page

Errors the user can fix print one line (``vitkit: error: ...``) and exit non-zero, warnings one line
each (``vitkit: warning: ...``); set ``VITKIT_DEBUG=1`` to see the traceback. Under ``torchrun``
training is data-parallel (``torchrun --nproc_per_node=N -m vitkit.cli train ...``).
"""
from __future__ import annotations

import os
import sys

from .common import (AMP_CHOICES, AMP_HELP, EXIT_ERROR, EXIT_INTERRUPTED, CLIError, Parser, debug_enabled, one_line,
                     positive_int, show_warnings_on_one_line)
from .runs import report, task_pictures  # noqa: F401 (public: the pictures after training)
from .train import parse_set  # noqa: F401 (public: --set parsing)

CONVERT_TARGETS = ("vitkit", "hf", "timm")  # vitkit.weights.convert.TARGETS (torch-free here; a test keeps them equal)

__all__ = ["main", "build_parser", "parse_set", "report", "task_pictures", "CLIError"]


def cmd_models(args) -> int:
    if args.pretrained:
        return _lazy("download", "cmd_models_pretrained")(args)
    from ..models import create_model, list_models
    names = list_models(args.pattern or "*")
    if not names:
        raise CLIError(f"no model matches {args.pattern!r}")
    width = max(28, *(len(n) for n in names))
    print(f"{'model':<{width}} {'params':>10}  input (C, H, W)")
    for n in names:
        m = create_model(n, device="meta")
        count = sum(p.numel() for p in m.parameters())
        print(f"{n:<{width}} {count / 1e6:>9.2f}M  {tuple(getattr(m, 'input_size', ()))}")
    return 0


def _lazy(module: str, name: str):
    """The command function ``name`` of ``vitkit.cli.<module>``, imported when the command runs."""
    def run(args):
        import importlib
        return getattr(importlib.import_module(f".{module}", __name__), name)(args)
    return run


def build_parser() -> Parser:
    from .download import add_download_arguments, add_pretrained_flag
    from .export import cmd_convert, cmd_export
    from .runs import cmd_eval, cmd_info, cmd_predict
    from .sample import cmd_generate, cmd_zero_shot
    from .serve import add_arguments as serve_arguments
    from .sparsevit_search import add_arguments as sparsevit_arguments
    from .train import add_train_flags, cmd_train
    p = Parser(prog="vitkit", description="Vision Transformers: train, evaluate, predict.")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("models", help="list registered models")
    m.add_argument("pattern", nargs="?", help="shell pattern, e.g. 'vit_*_patch16_224'")
    add_pretrained_flag(m)
    m.set_defaults(func=cmd_models)

    d = sub.add_parser("download", help="prefetch pretrained weights into the Hugging Face cache")
    add_download_arguments(d)
    d.set_defaults(func=_lazy("download", "cmd_download"))

    for name, text in (("train", "train a classifier (config file and/or flags)"),
                       ("pretrain", "self-supervised / generative pretraining: --task mae|simclr|mocov3|clip|vq|ar|var|hart")):
        t = sub.add_parser(name, help=text)
        add_train_flags(t)
        t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="held-out top-1 of a classifier run (other runs: their task's metrics)")
    e.add_argument("run", help="run folder")
    e.add_argument("--weights", choices=["ema", "model"], help="default: the weights the run evaluated")
    e.add_argument("--data", help="other data with the run's class names: a built-in set's test split, or every "
                   "image of imagefolder:DIR (DIR/test if it has train/ and test/)")
    e.add_argument("--batch-size", type=positive_int, default=256, dest="batch_size")
    e.add_argument("--json", action="store_true", help="print one JSON line")
    e.add_argument("--amp", choices=AMP_CHOICES, help=AMP_HELP + " (default: the run's own)")
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("predict", help="classify image files with a trained classifier run or a hub classifier")
    r.add_argument("run", help="run folder, hf:org/name (a ViT/DeiT classifier), or a model name with a default "
                   "source (`vitkit models --pretrained`)")
    r.add_argument("images", nargs="+", help="PNG/JPEG/BMP files")
    r.add_argument("--topk", type=positive_int, default=3, help="how many classes to print per image")
    r.add_argument("--weights", choices=["ema", "model"])
    r.add_argument("--amp", choices=AMP_CHOICES, help=AMP_HELP + " (default: the run's own)")
    r.set_defaults(func=cmd_predict)

    i = sub.add_parser("info", help="describe a run folder")
    i.add_argument("run")
    i.set_defaults(func=cmd_info)

    rp = sub.add_parser("report", help="(re)write a run's pictures and report.json")
    rp.add_argument("run")
    rp.add_argument("--weights", choices=["ema", "model"])
    rp.set_defaults(func=lambda a: (report(a.run, a.weights), 0)[1])

    z = sub.add_parser("zero-shot", help="classify images by text labels with a CLIP (run folder or HF folder)")
    z.add_argument("run", help="a CLIP run folder, a HF CLIPModel folder, or hf:org/name (local cache)")
    z.add_argument("images", nargs="+", help="PNG/JPEG/BMP files")
    z.add_argument("--labels", required=True, help='comma-separated labels, e.g. "cat,dog,seven"')
    z.add_argument("--templates", help="file of prompt templates, one per line with {} for the label "
                   "(default: the run's held-out templates); several templates are ensembled")
    z.add_argument("--topk", type=positive_int, default=3)
    z.add_argument("--amp", choices=AMP_CHOICES, help=AMP_HELP + " (default: a run's own, else none)")
    z.set_defaults(func=cmd_zero_shot)

    g = sub.add_parser("generate", help="sample images from a generator run (ar, var, hart) into an image grid")
    g.add_argument("run", help="run folder of `vitkit pretrain --task ar|var|hart`")
    g.add_argument("--n", type=positive_int, default=64, help="number of images")
    g.add_argument("--class", dest="cls", help="class name to generate (default: every class in turn)")
    g.add_argument("--out", help="image path, .png (or .jpg, .webp) (default: RUN/samples.png)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    g.add_argument("--top-k", type=positive_int, dest="top_k")
    g.add_argument("--top-p", type=float, dest="top_p")
    g.add_argument("--cfg-scale", type=float, default=1.0, dest="cfg_scale", help="classifier-free guidance")
    g.add_argument("--steps", type=positive_int, default=8, help="decoding steps of masked AR (MaskGIT)")
    g.add_argument("--scale", type=positive_int, default=3, help="pixel enlargement of the image")
    g.add_argument("--amp", choices=AMP_CHOICES, help=AMP_HELP + " (default: the run's own)")
    g.set_defaults(func=cmd_generate)

    ab = sub.add_parser("ablate", help="the ViT paper's ablations as one sweep: position embedding, class token "
                        "vs GAP, patch size, depth -> benchmarks/results/ablations.{md,json,png}")
    from ..bench import ablations  # stdlib-only at import time; torch loads in run()
    ablations.add_arguments(ab)
    ab.set_defaults(func=lambda a: (ablations.run(a), 0)[1])

    bn = sub.add_parser("bench", help="speed of vitkit's ViT vs HF transformers, ONNX Runtime and vit-pytorch "
                        "-> benchmarks/results/speed.{md,json}")
    from ..bench import speed  # stdlib-only at import time; torch loads in run()
    speed.add_arguments(bn)
    bn.set_defaults(func=lambda a: (speed.run(a), 0)[1])

    x = sub.add_parser("export", help="export a classifier run to ONNX (dynamic batch), optionally int8")
    x.add_argument("run", help="run folder")
    x.add_argument("--onnx", help="output .onnx path")
    x.add_argument("--int8", action="store_true", help="int8 weights (ONNX Runtime dynamic quantisation)")
    x.add_argument("--weights", choices=["ema", "model"], help="default: the weights the run evaluated")
    x.add_argument("--check", action="store_true", help="also compare held-out top-1 of PyTorch and ONNX")
    x.set_defaults(func=cmd_export)

    sv = sub.add_parser("sparsevit-search", help="SparseViT: window sparsity per pair of blocks under a latency "
                        "window (evolutionary or random search on a latency table measured here); prints the "
                        "Pareto table")
    sparsevit_arguments(sv)
    sv.set_defaults(func=_lazy("sparsevit_search", "cmd_sparsevit_search"))

    c = sub.add_parser("convert", help="convert ViT weights between vitkit, HF transformers and timm")
    c.add_argument("src", help="a run folder (its evaluated ViT), weights file, checkpoint folder (HF/timm/vitkit), "
                   "Google .npz, or hf:org/name")
    c.add_argument("dst", help="output folder (model.safetensors + config.json)")
    c.add_argument("--to", required=True, choices=CONVERT_TARGETS, help="layout to write")
    c.add_argument("--model", help="registered model whose config fills what the weights cannot tell (heads)")
    c.set_defaults(func=cmd_convert)

    se = sub.add_parser("serve", help="a classifier or CLIP (run folder, hf:ID or checkpoint folder) behind an HTTP "
                        "API and a page, with dynamic batching; listens on 127.0.0.1:8000")
    serve_arguments(se)
    se.set_defaults(func=_lazy("serve", "cmd_serve"))
    return p


def _caused_by_ctrl_c(e: BaseException) -> bool:
    """Whether ``e`` wraps a Ctrl-C: an interrupt during class creation in an import reaches us as a
    RuntimeError ("Error calling __set_name__ ...") whose cause is the KeyboardInterrupt."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _interrupted(args) -> int:
    """Ctrl-C: one line (with how to resume a training run that has a checkpoint), exit code 130."""
    from .train import interrupt_hint
    print(f"vitkit: interrupted{interrupt_hint(args)}", file=sys.stderr)
    # An interrupt that landed inside an exec() of source text during an import (dataclasses build
    # their methods that way) sets CPython's "unhandled KeyboardInterrupt" flag even though it was
    # handled here, and the interpreter would then kill itself with SIGINT at exit instead of
    # returning 130. Each exec() of source text clears that flag first (pythonrun.c, run_eval_code_obj).
    exec("None")
    return EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (0, 1 for an error, 2 for a usage error, 130 for Ctrl-C)."""
    args = None
    try:
        show_warnings_on_one_line()
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # --help (0) or a usage error (2, its one line already printed)
            return e.code if isinstance(e.code, int) else EXIT_ERROR
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except KeyboardInterrupt:
        return _interrupted(args)
    except BrokenPipeError:  # `vitkit models | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as e:  # one line for the user; the traceback on request
        if _caused_by_ctrl_c(e):
            return _interrupted(args)
        if debug_enabled():
            raise
        known = isinstance(e, (CLIError, ValueError, TypeError, FileNotFoundError, OSError, ImportError))
        name = "" if known else f"internal error ({type(e).__name__}): "
        print(f"vitkit: error: {name}{one_line(e)}" + ("" if known else " (set VITKIT_DEBUG=1 for the traceback)"),
              file=sys.stderr)
        return EXIT_ERROR
