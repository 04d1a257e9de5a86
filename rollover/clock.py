"""The only place that reads the wall clock or sleeps; everything else gets a Clock or `now`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...

    def monotonic(self) -> float: ...


BOOT_ID = "/proc/sys/kernel/random/boot_id"


class SystemClock:
    """Wall clock, and the system's monotonic clock: on Linux CLOCK_MONOTONIC counts from boot
    and is the same for every process, so two runs of one boot can compare their readings and
    tell an NTP step of the wall clock from time that passed."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def monotonic(self) -> float:
        return time.monotonic()

    def epoch(self) -> str:
        """Which monotonic clock: the boot id ("" when unknown: readings are not compared)."""
        try:
            with open(BOOT_ID, encoding="ascii") as f:
                return f.read(64).strip().replace("-", "")[:32]
        except OSError:
            return ""


class FakeClock:
    """A clock tests move by hand; sleep() advances it instead of waiting."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 0.0

    def now(self) -> datetime:
        return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    def epoch(self) -> str:
        return "fa4e"  # one boot, for as long as the fake lives

    def step_wall(self, seconds: float) -> None:
        """The wall clock jumps (an NTP step); monotonic time does not."""
        self._now += timedelta(seconds=seconds)


def utc(dt: datetime) -> datetime:
    """Normalise to an aware UTC datetime (state files store ISO-8601 with offset)."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def parse_time(text: str) -> datetime:
    return utc(datetime.fromisoformat(text))


def format_time(dt: datetime) -> str:
    return utc(dt).isoformat(timespec="milliseconds")
