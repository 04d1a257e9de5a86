"""Nagios/Icinga plugin output: one status line, performance data, long text; thresholds.

Output as the plugin guidelines ask: `SERVICE STATE - summary | perfdata` on the first line, then
detail lines. Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

Thresholds (`-w/-c`) are days until a certificate expires: `-w 21 -c 7` warns below 21 days and
is critical below 7. `21` and the Nagios range form `21:` (alert when below 21) mean the same.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rollover.display import clip, printable
from rollover.errors import ExitStatus

WORDS = {ExitStatus.OK: "OK", ExitStatus.WARNING: "WARNING", ExitStatus.ERROR: "CRITICAL",
         ExitStatus.UNKNOWN: "UNKNOWN"}
_THRESHOLD = re.compile(r"^(\d+(?:\.\d+)?):?$")
_LABEL = re.compile(r"[^A-Za-z0-9_.:@/-]")


def days_threshold(text: str) -> float:
    """argparse type for -w/-c: days, as `N` or `N:`."""
    m = _THRESHOLD.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(
            f"'{clip(text, 30)}' is not a number of days (e.g. 21, or the Nagios range 21:)")
    value = float(m.group(1))
    if value > 3650:
        raise argparse.ArgumentTypeError(f"{value:g} days is more than 10 years")
    return value


@dataclass(frozen=True)
class Perf:
    label: str
    value: float | int
    unit: str = ""  # "s", "" (Nagios units: s, %, B, c)
    warn: str = ""
    crit: str = ""
    minimum: str = ""

    def text(self) -> str:
        label = _LABEL.sub("_", self.label)[:60]
        value = f"{self.value:g}" if isinstance(self.value, float) else str(self.value)
        fields = [f"{value}{self.unit}", self.warn, self.crit, self.minimum]
        return f"'{label}'=" + ";".join(fields).rstrip(";")


def plugin_output(service: str, status: ExitStatus, summary: str, perf: Sequence[Perf],
                  details: Sequence[str] = ()) -> str:
    """The full plugin text (status line with perfdata, then details), escaped."""
    head = f"{service} {WORDS.get(status, 'UNKNOWN')} - {printable(summary)}"
    if perf:
        head += " | " + " ".join(p.text() for p in perf)
    return "\n".join([head, *(printable(d) for d in details)])


def expiry_range(days: float) -> str:
    """Nagios range for "alert when fewer than `days` days are left"."""
    return f"{days:g}:"
