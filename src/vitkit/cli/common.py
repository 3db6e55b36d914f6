"""What every subcommand shares: one-line errors and warnings, checked numeric flags, image ranking.

Every message a user sees is one line that starts with ``vitkit:`` and says what to do; a traceback
appears only with ``VITKIT_DEBUG=1``.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

from ..argtypes import nonneg_float, nonneg_int, positive_float, positive_int  # noqa: F401 (re-exported)

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
AMP_CHOICES = ("auto", "bf16", "fp16", "none")  # vitkit.train.precision.AMP_CHOICES (torch-free here)
AMP_HELP = ("mixed precision: auto (bf16 where the CPU has avx512_bf16/AMX or the GPU supports it, else "
            "fp32) | bf16 | fp16 | none (fp32)")


class CLIError(Exception):
    """An error with a message meant for the user."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``vitkit: error: generate --n: expected ... (see vitkit generate --help)``."""

    def error(self, message: str):
        prog = self.prog.split(" ", 1)[1] + " " if " " in self.prog else ""
        print(f"vitkit: error: {prog}{message.replace('argument ', '')} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def debug_enabled() -> bool:
    """VITKIT_DEBUG=1 (or true / yes / on) shows tracebacks; unset, empty, 0, false, no and off do not."""
    return os.environ.get("VITKIT_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


def one_line(text: str) -> str:
    """A message on one line: its lines joined with '; '."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def show_warnings_on_one_line() -> None:
    """``vitkit: warning: <message>`` for every Python warning, without the source line that raised it."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"vitkit: warning: {one_line(message)}", file=file or sys.stderr)
    warnings.showwarning = show


def set_threads(n: int | None) -> None:
    """torch.set_num_threads for a --threads flag (None: torch's default), warning when it oversubscribes."""
    if n:
        from ..train.trainer import set_threads as set_
        set_(n)


def rank_images(paths: list[str], in_chans: int, transform, probs_of, names: list[str], topk: int) -> int:
    """Print each image's top-k ``names`` with probabilities: each file decoded at its own size with
    ``in_chans`` channels, ``transform`` (one image (1, C, H, W) in [0, 1] -> the model's input), then
    ``probs_of(x) -> (K,)``. Unreadable files print one error line and are counted; returns the exit code."""
    import torch

    from ..data import load_image
    c, tf = in_chans, transform
    failed = 0
    for path in paths:
        try:
            x = load_image(path, in_chans=c)
        except (ValueError, FileNotFoundError, OSError) as e:
            print(f"vitkit: error: {one_line(e)}", file=sys.stderr)
            failed += 1
            continue
        with torch.no_grad():
            probs = probs_of(tf(x[None]))
        top = probs.topk(min(topk, probs.numel()))
        ranked = ", ".join(f"{names[i]} {p:.1%}" for p, i in zip(top.values.tolist(), top.indices.tolist()))
        print(f"{path}: {ranked}")
    return EXIT_ERROR if failed else 0
