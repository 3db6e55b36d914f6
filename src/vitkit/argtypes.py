"""argparse value types that check their range, so a bad number is a one-line usage error naming the
flag (``--n 0``: "expected an integer >= 1"). Stdlib only: the CLI and the benchmark scripts share them."""
from __future__ import annotations

import argparse
import sys


def _number(cast, low, what: str):
    """A type for ``add_argument(type=...)``: ``cast(text)``, refused (NaN too) below ``low``."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not value >= low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value
    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _number(int, 1, "an integer >= 1")
nonneg_int = _number(int, 0, "an integer >= 0")
positive_float = _number(float, sys.float_info.min, "a number > 0")
nonneg_float = _number(float, 0.0, "a number >= 0")
