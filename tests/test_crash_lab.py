"""Crash after every state write: for every N, a bootstrap + key rollover whose `rollover run`
is killed with SIGKILL right after its N-th state write (seen from outside through inotify, no
crash switch in the product), then finished by normal runs. For every N the rollover completes,
the records served are exactly the state's, no key file is orphaned, and the invariant monitor
(every ~100 ms: the key Postfix presents has its 3 1 1 on every server) saw no violation.

Slow (one full rollover per N): marked `slow`; CI runs it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_current_issuer_lab import IssuerMonitor
from test_rollover_lab import Monitor, key_of, presented_spki, rrsets, setup, slot

from lab.dns import DnsLab
from lab.inotify import RenameWatch
from lab.pebble import PebbleLab
from lab.postfix import PostfixLab

pytestmark = [pytest.mark.lab, pytest.mark.slow]
BOOT = ["run", "--wait"]
ROLL = ["run", "--roll", "--wait"]


def _rollover(cfg: Path, args: list[str], kill_after: int | None = None,
              limit: float = 120.0) -> int:
    """Run `rollover ARGS`; with kill_after, SIGKILL it right after that many state writes.
    Returns the number of state writes seen."""
    state_dir = cfg.parent / "state"
    state_dir.mkdir(mode=0o700, exist_ok=True)
    watch = RenameWatch(state_dir)
    proc = subprocess.Popen([sys.executable, "-m", "rollover", *args, "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + limit
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            watch.wait(0.05)
            if kill_after is not None and watch.count >= kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                break
        watch.wait(0.05)
        if proc.poll() is None:
            proc.kill()
            raise AssertionError(f"rollover {' '.join(args)} did not finish in {limit:g}s")
        if kill_after is None:
            assert proc.returncode == 0, (args, proc.returncode)
        return watch.count
    finally:
        watch.close()


def _finished(cfg: Path, host: str, dns_lab: DnsLab, postfix: PostfixLab) -> None:
    s = slot(cfg, host)
    assert s["phase"] == "active", s["phase"]
    ours = {r["rdata"] for r in s["records"] if r["state"] in ("rumoured", "omnipresent")}
    assert all(r == ours for r in rrsets(dns_lab, host))  # exactly ours, everywhere
    current = key_of(s, "current")
    assert current is not None and presented_spki(postfix) == current["spki_sha256"]
    files = {p.stem for p in (cfg.parent / "state" / "keys").glob("*.pem")}
    assert files == {k["key_id"] for k in s["keys"]}  # no orphan key, none missing


def _setup(where: Path, scheme: str, dns_lab: DnsLab, pebble: PebbleLab,
           postfix: PostfixLab) -> tuple[str, Path]:
    host, cfg = setup(where, dns_lab, pebble, postfix, retire_grace="1s")
    if scheme == "current+issuer":
        bundle = where / "roots.pem"
        bundle.write_bytes(b"".join(pebble.roots()))
        cfg.write_text(cfg.read_text().replace(
            "  provider: lab\n", "  provider: lab\n  scheme: current+issuer\n  issuer: root\n"
            f"  issuer_bundle: {bundle}\n", 1))
    return host, cfg


@pytest.mark.parametrize("scheme", ["current+next", "current+issuer"])
def test_kill_after_every_state_write_never_breaks_the_rollover(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path,
        scheme: str) -> None:
    host, cfg = _setup(tmp_path / "count", scheme, dns_lab, pebble_lab, postfix_lab)
    boot_writes = _rollover(cfg, BOOT)
    roll_writes = _rollover(cfg, ROLL)
    total = boot_writes + roll_writes
    assert boot_writes > 5 and roll_writes > 5
    started = time.monotonic()
    for n in range(1, total + 1):
        host, cfg = _setup(tmp_path / f"n{n}", scheme, dns_lab, pebble_lab, postfix_lab)
        # current+issuer: a new key goes into service under the root's 2 1 1, before its own
        # 3 1 1 is out, so that monitor accepts either
        mon: Monitor | IssuerMonitor = Monitor(dns_lab, postfix_lab, host, before_dane=True) \
            if scheme == "current+next" else IssuerMonitor(dns_lab, postfix_lab, host)
        mon.start()
        try:
            if n <= boot_writes:
                _rollover(cfg, BOOT, kill_after=n)
                _rollover(cfg, BOOT)
                _rollover(cfg, ROLL)
            else:
                _rollover(cfg, BOOT)
                _rollover(cfg, ROLL, kill_after=n - boot_writes)
                _rollover(cfg, BOOT)
            _finished(cfg, host, dns_lab, postfix_lab)
        finally:
            mon.stop()
        assert mon.violations == [], (n, mon.violations[:3])
    print(f"\nmeasured ({scheme}): N = {total} crash points ({boot_writes} bootstrap + "
          f"{roll_writes} rollover writes), every one completed with 0 violations, "
          f"{time.monotonic() - started:.0f}s")
