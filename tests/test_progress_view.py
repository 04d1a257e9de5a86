"""`run --wait` progress: a live, compact view on a terminal (redrawn in place, cleared at the
end), plain de-duplicated lines elsewhere. The terminal case runs the real CLI on a pseudo-
terminal against the lab with the Knot secondary frozen, so the slot really waits."""

from __future__ import annotations

import io
import os
import pty
import secrets
import select
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from rollover.clock import SystemClock
from rollover.core import machine as m
from rollover.monitor.progress_view import LiveView, PlainLines, countdown, render
from rollover.monitor.report import SlotReport

from lab.configs import write_config
from lab.dns import DnsLab
from machine_helpers import SLOT, T0

REPO = Path(__file__).resolve().parent.parent


def report(phase: m.Phase, wait: float | None, reason: str = "waiting: ns3 lags") -> SlotReport:
    st = m.SlotState(SLOT, phase, T0)
    return SlotReport(SLOT, st, reason, wake_at=T0 + timedelta(seconds=wait) if wait else None)


def test_render_counts_phases_and_counts_down_the_longest_wait() -> None:
    reports = [report(m.Phase.PROPAGATING, 125, "waiting: ns3.example.test. lags"),
               report(m.Phase.PROPAGATING, 5), report(m.Phase.ACTIVE, None, "nothing to do")]
    lines = render(reports, T0 + timedelta(seconds=5), T0)
    assert lines[0] == "rollover: 3 slot(s): 1 active, 2 propagating"
    assert lines[1] == f"  longest wait 02:05  {SLOT}: waiting: ns3.example.test. lags"
    assert lines[2] == "  next check in 00:05"
    assert countdown(3725) == "1:02:05" and countdown(-3) == "00:00"
    evil = [report(m.Phase.PROPAGATING, 5, "waiting: \x1b[2J server said\nhi")]
    assert all("\x1b" not in ln and "\n" not in ln for ln in render(evil, T0, T0))


def test_live_view_redraws_in_place_and_stops_its_thread() -> None:
    out = io.StringIO()
    view = LiveView(out, SystemClock())
    now = SystemClock().now()
    st = m.SlotState(SLOT, m.Phase.PROPAGATING, now)
    r = SlotReport(SLOT, st, "waiting: x", wake_at=now + timedelta(seconds=30))
    view([r], now + timedelta(seconds=30))
    view([r], now + timedelta(seconds=30))
    view.close()
    text = out.getvalue()
    assert "\033[3F\033[J" in text  # the second draw moved up over the first block
    assert text.endswith("\033[3F\033[J")  # cleared at the end
    assert view._thread is not None and not view._thread.is_alive()


def test_plain_lines_say_each_reason_once() -> None:
    out = io.StringIO()
    lines = PlainLines(out)
    a = report(m.Phase.PROPAGATING, 5, "waiting: ns3 lags")
    lines([a], T0)
    lines([a], T0)
    lines([report(m.Phase.PROPAGATING, 5, "time says no: 3 s left")], T0)
    assert out.getvalue().splitlines() == [
        f"rollover: {SLOT}: waiting: ns3 lags", f"rollover: {SLOT}: time says no: 3 s left"]
    assert "\r" not in out.getvalue()


@pytest.mark.lab
def test_run_wait_on_a_terminal_shows_the_live_view(dns_lab: DnsLab, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, dns_lab, f"m{secrets.token_hex(4)}.example.test")
    master, slave = pty.openpty()
    dns_lab.freeze_knot()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rollover", "run", "--wait", "--max-wait", "3",
             "--config", str(cfg)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        os.close(slave)
        seen = b""
        while True:
            ready, _, _ = select.select([master], [], [], 20)
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        out, _ = proc.communicate(timeout=30)
    finally:
        os.close(master)
        dns_lab.thaw_knot()
    text = seen.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "rollover: 1 slot(s): 1 propagating" in text
    assert "longest wait 00:0" in text and "next check in" in text
    assert "\x1b[J" in text  # drawn in place, not scrolled
    assert b"propagating" in out  # the final report on stdout, after the view is cleared
