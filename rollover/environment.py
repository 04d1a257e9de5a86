"""What a command may touch of the world: its streams, its clock, its environment variables.

`cli.main(argv, env)` hands one to every command (as HTTPie's `Environment`), so no command
prints to `sys.stdout`, reads `os.environ` or builds a `SystemClock` itself; tests build one with
StringIO streams, a FakeClock and the variables they want.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rollover.clock import Clock, SystemClock

DEFAULT_CONFIG = "/etc/rollover/rollover.yaml"


def _stdout() -> TextIO:
    return sys.stdout  # looked up when the Environment is made: pytest swaps sys.stdout


def _stderr() -> TextIO:
    return sys.stderr


@dataclass
class Environment:
    stdout: TextIO = field(default_factory=_stdout)
    stderr: TextIO = field(default_factory=_stderr)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    clock: Clock = field(default_factory=SystemClock)

    def out(self, text: str = "", end: str = "\n") -> None:
        """A line of the command's output."""
        print(text, end=end, file=self.stdout)

    def err(self, text: str) -> None:
        """A line for the operator on stderr (warnings, notes, errors)."""
        print(text, file=self.stderr, flush=True)

    def stderr_isatty(self) -> bool:
        isatty = getattr(self.stderr, "isatty", None)
        return bool(isatty and isatty())

    def config_path(self, given: str | None) -> Path:
        """--config, else $ROLLOVER_CONFIG, else the default."""
        return Path(given or self.environ.get("ROLLOVER_CONFIG") or DEFAULT_CONFIG)
