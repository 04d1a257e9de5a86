"""The pure core: how long one `step` and one state (de)serialisation take, and the state size."""

from __future__ import annotations

import json
import statistics
import sys
import tracemalloc

from rollover.clock import SystemClock
from rollover.core import machine as m

from machine_helpers import POLICY, at, drive_to_propagating, everywhere

CLOCK = SystemClock()


def timed(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(n):
        t = CLOCK.monotonic()
        fn()
        samples.append(CLOCK.monotonic() - t)
    return statistics.median(samples)


def main() -> int:
    st = drive_to_propagating()
    obs = everywhere(5, st.wanted())
    step_s = timed(lambda: m.step(st, obs, POLICY, at(5)), 2000)
    doc = m.slot_to_dict(m.step(st, obs, POLICY, at(5)).state)
    text = json.dumps(doc)
    ser_s = timed(lambda: json.dumps(m.slot_to_dict(st)), 2000)
    de_s = timed(lambda: m.slot_from_dict(json.loads(text)), 2000)
    tracemalloc.start()
    states = [m.slot_from_dict(json.loads(text)) for _ in range(1000)]
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del states
    print(f"step (propagating, 3 servers): {step_s * 1e6:.0f} us median of 2000")
    print(f"slot_to_dict+json: {ser_s * 1e6:.0f} us; json+slot_from_dict: {de_s * 1e6:.0f} us")
    print(f"one slot in state.json: {len(text)} bytes; in memory ~{current / 1000:.0f} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
