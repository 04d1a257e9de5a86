"""What `rollover run --wait` shows while it waits.

On a terminal, `LiveView`: a compact block redrawn in place about twice a second -- how many
slots are in each phase, the longest wait with a countdown, the next wake-up -- cleared when the
run ends. Anywhere else, `PlainLines`: one line per slot whenever what it waits for changes (a log
file gets no carriage returns and no repeats).

The engine calls either with (reports, wake) before each sleep; the live view's ticking happens
on its own thread so the engine's sleep is never lengthened.
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO

from rollover.clock import Clock
from rollover.display import printable
from rollover.monitor.report import SlotReport

TICK = 0.5


def countdown(seconds: float) -> str:
    s = max(0, int(seconds + 0.999))
    h, rest = divmod(s, 3600)
    mnt, sec = divmod(rest, 60)
    return f"{h}:{mnt:02d}:{sec:02d}" if h else f"{mnt:02d}:{sec:02d}"


def render(reports: Sequence[SlotReport], wake: datetime, now: datetime,
           width: int = 100) -> list[str]:
    """The lines of the live view (pure)."""
    phases = Counter(r.state.phase.value for r in reports)
    head = (f"rollover: {len(reports)} slot(s): "
            + ", ".join(f"{n} {p}" for p, n in sorted(phases.items())))
    lines = [head]
    waiting = [r for r in reports if r.wake_at is not None]
    if waiting:
        longest = max(waiting, key=lambda r: r.wake_at or now)
        left = ((longest.wake_at or now) - now).total_seconds()
        lines.append(f"  longest wait {countdown(left)}  {longest.slot}: {longest.reason}")
    lines.append(f"  next check in {countdown((wake - now).total_seconds())}")
    return [printable(line)[:width] for line in lines]


class LiveView:
    def __init__(self, stream: TextIO, clock: Clock) -> None:
        self.stream = stream
        self.clock = clock
        self._lock = threading.Lock()
        self._snapshot: tuple[list[SlotReport], datetime] | None = None
        self._drawn = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, reports: list[SlotReport], wake: datetime) -> None:
        with self._lock:
            self._snapshot = (list(reports), wake)
        self._draw()
        if self._thread is None:
            self._thread = threading.Thread(target=self._tick, name="rollover-progress",
                                            daemon=True)
            self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(TICK):
            self._draw()

    def _draw(self) -> None:
        with self._lock:
            if self._snapshot is None:
                return
            reports, wake = self._snapshot
            width = max(40, shutil.get_terminal_size((100, 20)).columns - 1)
            lines = render(reports, wake, self.clock.now(), width)
            up = f"\033[{self._drawn}F" if self._drawn else "\r"
            self.stream.write(up + "\033[J" + "\n".join(lines) + "\n")
            self.stream.flush()
            self._drawn = len(lines)

    def close(self) -> None:
        """Stop ticking and clear the block (the final report follows on stdout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * TICK + 1)
        with self._lock:
            if self._drawn:
                self.stream.write(f"\033[{self._drawn}F\033[J")
                self.stream.flush()
                self._drawn = 0


class PlainLines:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._said: dict[str, str] = {}

    def __call__(self, reports: list[SlotReport], wake: datetime) -> None:
        for r in reports:
            if r.wake_at is None:
                continue
            key = str(r.slot)
            if self._said.get(key) != r.reason:
                self._said[key] = r.reason
                print(printable(f"rollover: {r.slot}: {r.reason}"), file=self.stream,
                      flush=True)

    def close(self) -> None:
        pass
