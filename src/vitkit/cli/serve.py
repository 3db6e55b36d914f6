"""``vitkit serve RUN|hf:ID``: the model behind an HTTP API and a page (`vitkit.serve`).

    vitkit serve runs/demo                          # http://127.0.0.1:8000/
    vitkit serve runs/demo --port 0                 # any free port (the start line names it)
    vitkit serve hf:google/vit-base-patch16-224 --workers 2 --max-batch 32 --max-wait-ms 5

Wired into ``vitkit`` by ``vitkit.cli.build_parser`` (``add_arguments`` + ``cmd_serve``); also runs
alone as ``python -m vitkit.serve``.
"""
from __future__ import annotations

import argparse
import sys

from ..argtypes import nonneg_float, nonneg_int, positive_float, positive_int
from .common import AMP_CHOICES, AMP_HELP


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="RUN|hf:ID", help="a classifier or CLIP run folder, hf:org/name, or a "
                   "checkpoint folder (HF / timm / vitkit)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                   "only; the API has no authentication)")
    p.add_argument("--port", type=nonneg_int, default=8000, help="TCP port (0: any free one; default 8000)")
    p.add_argument("--workers", type=positive_int, default=1, help="processes, each with its own copy of the "
                   "model and cores/N threads (default 1)")
    p.add_argument("--max-batch", type=positive_int, default=32, dest="max_batch",
                   help="most requests gathered into one forward pass (1: no batching; default 32)")
    p.add_argument("--max-wait-ms", type=nonneg_float, default=5.0, dest="max_wait_ms",
                   help="longest a request waits for others to join its batch (default 5)")
    p.add_argument("--amp", choices=AMP_CHOICES, help=AMP_HELP + " (default: a run's own, as predict; "
                   "auto for hf:)")
    p.add_argument("--onnx", metavar="FILE", help="classify through this ONNX graph of the same classifier "
                   "(`vitkit export RUN --onnx FILE`) in ONNX Runtime; embed and the rollout stay in PyTorch")
    p.add_argument("--weights", choices=["ema", "model"], help="a run's weights (default: those it evaluated)")
    p.add_argument("--max-body-mb", type=positive_float, default=8.0, dest="max_body_mb",
                   help="largest request body in MiB: 413 above (default 8)")
    p.add_argument("--max-pixels", type=positive_int, default=16_000_000, dest="max_pixels",
                   help="largest image, width x height, refused (413) before decoding (default 16,000,000)")
    p.add_argument("--timeout-s", type=positive_float, default=30.0, dest="timeout_s",
                   help="per-request limit from arrival to answer: 504 after (default 30)")
    p.add_argument("--max-queue", type=positive_int, default=128, dest="max_queue",
                   help="requests in progress at once per worker; more get 503 with Retry-After (default 128)")
    p.add_argument("--decode-threads", type=positive_int, default=2, dest="decode_threads",
                   help="threads decoding each batch's images (one torch thread each) before its forward pass (default 2)")
    p.add_argument("--threads", type=positive_int, help="torch threads per worker (default: cores / workers)")
    p.add_argument("--topk", type=positive_int, default=5, help="default k of /v1/classify (default 5)")


def config_from_args(args):
    from ..serve.config import ServeConfig
    return ServeConfig(source=args.model, host=args.host, port=args.port, workers=args.workers,
                       max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, amp=args.amp, onnx=args.onnx,
                       weights=args.weights, max_body_mb=args.max_body_mb, max_pixels=args.max_pixels,
                       timeout_s=args.timeout_s, max_queue=args.max_queue, decode_threads=args.decode_threads,
                       threads=args.threads, topk=args.topk)


def cmd_serve(args) -> int:
    from ..serve.server import serve
    return serve(config_from_args(args))


def main(argv: list[str] | None = None) -> int:
    """``python -m vitkit.serve ...``: `vitkit serve` on its own, with vitkit's one-line errors."""
    from .common import EXIT_ERROR, EXIT_INTERRUPTED, Parser, debug_enabled, one_line, show_warnings_on_one_line
    show_warnings_on_one_line()
    p = Parser(prog="vitkit serve", description="a model behind an HTTP API and a page")
    add_arguments(p)
    try:
        args = p.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, its one line already printed)
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    try:
        return cmd_serve(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as e:
        if debug_enabled():
            raise
        print(f"vitkit: error: {one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
