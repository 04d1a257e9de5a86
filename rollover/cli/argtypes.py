"""Strict argparse types: plain ASCII digits, finite numbers within sane bounds, no empty paths.

`int()` and `float()` take "0_3", Arabic-Indic and full-width digits, "nan" and "inf"; a command
line that says `--timeout nan` is a mistake to report, not a value to use.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

from rollover.display import clip

_INT = re.compile(r"^[+-]?[0-9]{1,18}$")
_FLOAT = re.compile(r"^[+]?([0-9]{1,12}(\.[0-9]{0,9})?|\.[0-9]{1,9})$")


def integer(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not _INT.match(text.strip()):
            raise argparse.ArgumentTypeError(f"'{clip(text, 30)}' is not a whole number (0-9)")
        value = int(text.strip())
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range ({lo}-{hi})")
        return value

    parse.__name__ = "integer"
    return parse


def seconds(hi: float, *, zero: bool = False) -> Callable[[str], float]:
    """A number of seconds: more than 0 (or 0 when `zero`), at most `hi`, finite."""

    def parse(text: str) -> float:
        if not _FLOAT.match(text.strip()):
            raise argparse.ArgumentTypeError(f"'{clip(text, 30)}' is not a number of seconds")
        value = float(text.strip())
        if not math.isfinite(value) or value > hi or value < 0 or (value == 0 and not zero):
            low = "0" if zero else "more than 0"
            raise argparse.ArgumentTypeError(f"{clip(text, 30)} is out of range ({low} to {hi:g})")
        return value

    parse.__name__ = "seconds"
    return parse


def path(text: str) -> str:
    """A file or directory name: not empty, no NUL byte."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path names no file")
    if "\0" in text:
        raise argparse.ArgumentTypeError("a path cannot hold a NUL byte")
    return text
