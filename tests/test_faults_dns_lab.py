"""Issue #13, DNS rows of the fault matrix, mid-rollover, under the invariant monitor: real BIND
primary + BIND and Knot secondaries, real Pebble, real Postfix."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import dns.message
import dns.renderer
import pytest
from test_rollover_lab import REPO, Monitor, key_of, owner, presented_spki, setup, slot

from rollover.cli.main import main
from rollover.clock import SystemClock, parse_time

from lab.dns import DnsLab
from lab.pebble import PebbleLab
from lab.postfix import PostfixLab
from lab.proc import wait_for

pytestmark = pytest.mark.lab
CLOCK = SystemClock()


def serves(dns_lab: DnsLab, host: str, spki: str) -> list[str]:
    """The servers that serve 3 1 1 `spki` for the host now."""
    return [s.name for s in dns_lab.servers
            if f"3 1 1 {spki}" in dns_lab.query(s, owner(host), "TLSA").records]


def _break(dns_lab: DnsLab, fault: str, broken: bool) -> None:
    if fault == "stopped":
        (dns_lab.stop_server if broken else dns_lab.start_server)(dns_lab.bind_secondary)
    elif fault == "servfail":
        dns_lab.servfail_knot(broken)
    else:
        dns_lab.lame_knot(broken)


@pytest.mark.parametrize("fault", ["stopped", "servfail", "lame"])
def test_a_secondary_stopped_servfail_or_lame_holds_the_rollover_until_it_is_back(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], fault: str) -> None:
    host, cfg = setup(tmp_path, dns_lab, pebble_lab, postfix_lab)
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    s = slot(cfg, host)
    a, b = key_of(s, "current"), key_of(s, "next")
    assert a and b
    bad = dns_lab.bind_secondary if fault == "stopped" else dns_lab.knot_secondary
    mon = Monitor(dns_lab, postfix_lab, host)
    mon.start()
    broken = True
    try:
        # a server that answers nobody, SERVFAIL or REFUSED (lame) sends resolvers to the
        # others: not a violation by itself; what it serves once it is back is watched again
        mon.down.add(bad.address)
        _break(dns_lab, fault, True)
        main(["run", "--roll", "--wait", "--max-wait", "8", "--config", str(cfg)])
        # B is published, but the broken server cannot be seen serving it now: B stays out
        # of service (a stopped server serves its old copy when it starts again)
        assert presented_spki(postfix_lab) == a["spki_sha256"]
        capsys.readouterr()
        main(["status", "--config", str(cfg)])
        out = capsys.readouterr().out
        assert bad.address in out
        _break(dns_lab, fault, False)
        broken = False
        mon.down.discard(bad.address)
        assert main(["run", "--roll", "--wait", "--config", str(cfg)]) == 0
    finally:
        mon.stop()
        if broken:
            _break(dns_lab, fault, False)
    s = slot(cfg, host)
    current = key_of(s, "current")
    assert current and current["key_id"] == b["key_id"]
    assert presented_spki(postfix_lab) == b["spki_sha256"]
    assert len(serves(dns_lab, host, b["spki_sha256"])) == 3
    assert mon.violations == [] and mon.samples > 10


def test_the_primary_refusing_updates_mid_rollover_stops_the_slot_until_resumed(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    host, cfg = setup(tmp_path, dns_lab, pebble_lab, postfix_lab)
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    mon = Monitor(dns_lab, postfix_lab, host)
    mon.start()
    try:
        dns_lab.refuse_updates(True)  # the DNS admin's policy changes under us
        wait_for(lambda: _refused(dns_lab), 20, "the primary to refuse updates")
        code = main(["run", "--roll", "--wait", "--max-wait", "10", "--config", str(cfg)])
        s = slot(cfg, host)
        assert code == 2 and s["stopped"] and "REFUSED" in s["stopped"]
        assert "allow-update" in s["stopped"]
        before = [dns_lab.query(x, owner(host), "TLSA").records for x in dns_lab.servers]
        assert main(["run", "--config", str(cfg)]) == 2  # stays stopped, touches nothing
        assert [dns_lab.query(x, owner(host), "TLSA").records
                for x in dns_lab.servers] == before
        capsys.readouterr()
        main(["status", "--no-observe", "--config", str(cfg)])
        assert "stopped" in capsys.readouterr().out
        dns_lab.refuse_updates(False)
        wait_for(lambda: not _refused(dns_lab), 20, "the primary to accept updates again")
        assert main(["run", "--resume", "--wait", "--config", str(cfg)]) == 0
    finally:
        dns_lab.refuse_updates(False)
        mon.stop()
    s = slot(cfg, host)
    assert s["stopped"] is None and s["phase"] == "active"
    current = key_of(s, "current")
    assert current and presented_spki(postfix_lab) == current["spki_sha256"]
    assert mon.violations == [] and mon.samples > 10


def _refused(dns_lab: DnsLab) -> bool:
    try:
        dns_lab.update("refuse-probe", "TXT", 2, ['"x"'])
    except Exception as exc:
        return "REFUSED" in str(exc)
    return False


class _SkewedTime:
    """time as dnspython's TSIG code sees it on a host whose clock is an hour ahead (what
    libfaketime, not in this machine's Debian lists, would do to the whole process; the real
    BIND primary judges the signing time and answers BADTIME)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def time(self) -> float:
        return CLOCK.now().timestamp() + self.offset


def test_tsig_badtime_from_a_skewed_clock_changes_nothing_and_completes_once_the_clock_is_right(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    host, cfg = setup(tmp_path, dns_lab, pebble_lab, postfix_lab)
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    first = presented_spki(postfix_lab)
    state_file = cfg.parent / "state" / "state.json"
    mon = Monitor(dns_lab, postfix_lab, host)
    mon.start()
    try:
        before = state_file.read_bytes()
        records = [dns_lab.query(x, owner(host), "TLSA").records for x in dns_lab.servers]
        for module in (dns.message, dns.renderer):  # where dnspython signs and checks TSIG
            monkeypatch.setattr(module, "time", _SkewedTime(3600))
        capsys.readouterr()
        code = main(["run", "--roll", "--wait", "--max-wait", "4", "--config", str(cfg)])
        err = capsys.readouterr().err
        # the provider's first signed read is refused: one line naming the cause, a non-zero
        # exit, nothing changed in DNS or in the state (the roll was not even recorded)
        assert code != 0
        line = next(x for x in err.splitlines() if "BADTIME" in x)
        assert "clocks of this host and the server differ" in line
        assert dns_lab.primary.address in line
        assert "Traceback" not in err
        assert state_file.read_bytes() == before
        assert [dns_lab.query(x, owner(host), "TLSA").records
                for x in dns_lab.servers] == records
        monkeypatch.undo()  # NTP put the clock right
        assert main(["run", "--roll", "--wait", "--config", str(cfg)]) == 0
    finally:
        monkeypatch.undo()
        mon.stop()
    s = slot(cfg, host)
    current = key_of(s, "current")
    assert current and presented_spki(postfix_lab) == current["spki_sha256"] != first
    assert s["last_error"] is None
    assert mon.violations == [] and mon.samples > 10


def test_two_runs_at_once_never_both_act_and_status_reads_meanwhile(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab,
        tmp_path: Path) -> None:
    host, cfg = setup(tmp_path, dns_lab, pebble_lab, postfix_lab)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "rollover", "run", "--wait", "--config", str(cfg)]
    mon = Monitor(dns_lab, postfix_lab, host, before_dane=True)
    mon.start()
    try:
        first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
        wait_for(lambda: (cfg.parent / "state" / "state.json").exists(), 30, "a first state")
        second = subprocess.run(argv, env=env, capture_output=True, timeout=60)
        # the second sees the lock and leaves at once, changing nothing (75: EX_TEMPFAIL)
        assert second.returncode == 75, second.stderr
        assert b"Traceback" not in second.stderr and b"lock" in second.stderr.lower()
        reads = 0
        while first.poll() is None:  # status and plan read the state while the run writes it
            for cmd in (["status", "--no-observe"], ["plan"]):
                r = subprocess.run([sys.executable, "-m", "rollover", *cmd, "--config",
                                    str(cfg)], env=env, capture_output=True, timeout=60)
                assert b"Traceback" not in r.stderr and r.returncode in (0, 1), r.stderr
                reads += 1
        assert first.wait(120) == 0, first.stderr.read() if first.stderr else ""
    finally:
        mon.stop()
    assert reads >= 2
    s = slot(cfg, host)
    assert s["phase"] == "active"
    assert [k["key_id"][-4:] for k in s["keys"]] == ["0001", "0002"]  # one set of keys
    current = key_of(s, "current")
    assert current and presented_spki(postfix_lab) == current["spki_sha256"]
    assert mon.violations == []


def test_a_served_ttl_above_the_configured_one_is_waited_for(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab,
        tmp_path: Path) -> None:
    host, cfg = setup(tmp_path, dns_lab, pebble_lab, postfix_lab)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    mon = Monitor(dns_lab, postfix_lab, host, before_dane=True)
    mon.start()
    run = subprocess.Popen([sys.executable, "-m", "rollover", "run", "--wait", "--config",
                            str(cfg)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        state = cfg.parent / "state" / "state.json"
        wait_for(lambda: state.exists() and any(
            r["state"] == "rumoured" for r in slot(cfg, host)["records"]), 30, "a publish")
        served = dns_lab.query(dns_lab.primary, owner(host), "TLSA").records
        # the same records, but served with TTL 8 instead of the configured 2 (an operator's
        # edit, a provider's minimum TTL): resolvers may now cache them for 8 s
        dns_lab.update(owner(host), "TLSA", 8, served)
        changed = CLOCK.now()
        dns_lab.wait_all(owner(host), "TLSA", served)
        assert run.wait(120) == 0
    finally:
        if run.poll() is None:
            run.kill()
        mon.stop()
    s = slot(cfg, host)
    assert s["phase"] == "active"
    omnipresent = [parse_time(r["since"]) for r in s["records"] if r["state"] == "omnipresent"]
    assert omnipresent
    # 2 x the served TTL (16 s) from the first look at TTL 8, not 2 x 2 s from the publish
    assert min(omnipresent) >= changed + timedelta(seconds=15)
    assert mon.violations == []
