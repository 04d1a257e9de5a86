"""The DNS half of the engine against the real lab: BIND primary, BIND + Knot secondaries.

Times are read from an independent monitor that polls every server, never from the engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rollover.cli.main import main
from rollover.clock import SystemClock, parse_time
from rollover.errors import ExitStatus

from lab.configs import write_config
from lab.dns import DnsLab
from lab.proc import wait_for

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parent.parent
CLOCK = SystemClock()


def new_host() -> str:
    return f"m{secrets.token_hex(4)}.example.test"


def owner(host: str) -> str:
    return f"_25._tcp.{host}."


def load_state(cfg_dir: Path) -> dict:
    return json.loads((cfg_dir / "state" / "state.json").read_text())


def slot(cfg_dir: Path, host: str, alg: str = "ecdsa-p256") -> dict:
    return load_state(cfg_dir)["slots"][f"{host}:25:{alg}"]


def wanted(s: dict) -> set[str]:
    return {r["rdata"] for r in s["records"] if r["state"] in ("rumoured", "omnipresent")}


def served(lab: DnsLab, host: str) -> list[frozenset[str]]:
    return [lab.query(srv, owner(host), "TLSA").records for srv in lab.servers]


class Monitor(threading.Thread):
    """Polls every server every 50 ms and records what each serves, with the time."""

    def __init__(self, lab: DnsLab, host: str) -> None:
        super().__init__(daemon=True)
        self.lab, self.host = lab, host
        self.samples: list[tuple[datetime, list[frozenset[str] | None]]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            now = CLOCK.now()
            row: list[frozenset[str] | None] = []
            for srv in self.lab.servers:
                try:
                    row.append(self.lab.query(srv, owner(self.host), "TLSA", timeout=0.3).records)
                except Exception:
                    row.append(None)
            self.samples.append((now, row))
            self.stopping.wait(0.05)

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)

    def all_serve_since(self, records: set[str], until: datetime) -> datetime | None:
        """Start of the last unbroken run (before `until`) in which every server served all."""
        start = None
        for t, row in self.samples:
            if t > until:
                break
            ok = all(r is not None and records <= r for r in row)
            start = (start or t) if ok else None
        return start


def test_bootstrap_reaches_ready_no_earlier_than_two_ttls_after_last_server_agreed(
        dns_lab: DnsLab, tmp_path: Path) -> None:
    host = new_host()
    cfg = write_config(tmp_path, dns_lab, host)
    mon = Monitor(dns_lab, host)
    mon.start()
    try:
        assert main(["run", "--wait", "--config", str(cfg)]) == 0
    finally:
        mon.stop()
    s = slot(tmp_path, host)
    assert s["phase"] == "ready"
    ours = wanted(s)
    assert len(ours) == 2 and all(r.startswith("3 1 1 ") for r in ours)
    assert all(set(x) == ours for x in served(dns_lab, host))
    ready_at = parse_time(s["phase_since"])
    agreed = mon.all_serve_since(ours, ready_at)
    assert agreed is not None
    ttl = dns_lab.ttl
    # the monitor samples every 50 ms: it may see agreement up to one sample after the engine
    assert ready_at - agreed >= timedelta(seconds=2 * ttl) - timedelta(milliseconds=100)
    print(f"\nmeasured: first update -> ready {(ready_at - mon.samples[0][0]).total_seconds():.2f}s"
          f", agreement -> ready {(ready_at - agreed).total_seconds():.2f}s, TTL {ttl}s")


def test_two_algorithms_publish_one_rrset_with_four_records(dns_lab: DnsLab,
                                                           tmp_path: Path) -> None:
    host = new_host()
    cfg = write_config(tmp_path, dns_lab, host, algorithms=("ecdsa-p256", "rsa2048"))
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    a, b = slot(tmp_path, host, "ecdsa-p256"), slot(tmp_path, host, "rsa2048")
    assert a["phase"] == b["phase"] == "ready"
    assert not wanted(a) & wanted(b)
    assert all(set(x) == wanted(a) | wanted(b) for x in served(dns_lab, host))


def test_frozen_knot_blocks_ready_and_status_names_it(dns_lab: DnsLab, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    host = new_host()
    cfg = write_config(tmp_path, dns_lab, host)
    dns_lab.freeze_knot()
    try:
        assert main(["run", "--wait", "--max-wait", "6", "--config", str(cfg)]) == 0
        assert slot(tmp_path, host)["phase"] == "propagating"
        capsys.readouterr()
        assert main(["status", "--config", str(cfg)]) == 0
        out = capsys.readouterr().out
        knot = dns_lab.knot_secondary
        assert f"{knot.name} ({knot.address}) still serves the old set" in out
        assert main(["status", "--nagios", "--config", str(cfg)]) == ExitStatus.WARNING
    finally:
        dns_lab.thaw_knot()
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    assert slot(tmp_path, host)["phase"] == "ready"


def test_secondary_that_does_not_answer_blocks_the_same_way(
        dns_lab: DnsLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = new_host()
    cfg = write_config(tmp_path, dns_lab, host)
    sec = dns_lab.bind_secondary
    dns_lab.pause(sec)
    try:
        assert main(["run", "--wait", "--max-wait", "6", "--config", str(cfg)]) == 0
        assert slot(tmp_path, host)["phase"] == "propagating"
        capsys.readouterr()
        main(["status", "--config", str(cfg)])
        out = capsys.readouterr().out
        assert f"{sec.name} ({sec.address})" in out and "tim" in out.lower()
    finally:
        dns_lab.resume(sec)
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    assert slot(tmp_path, host)["phase"] == "ready"


def test_wrong_tsig_key_is_a_provider_error_and_changes_nothing(
        dns_lab: DnsLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = new_host()
    bad = tmp_path / "bad.key"
    bad.write_text(__import__("base64").b64encode(secrets.token_bytes(32)).decode() + "\n")
    os.chmod(bad, 0o600)
    cfg = write_config(tmp_path / "cfg", dns_lab, host, tsig_secret_file=bad)
    serials = [dns_lab.serial(s) for s in dns_lab.servers]
    rc = main(["run", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert rc == ExitStatus.ERROR
    assert "rollover-key" in err and "Traceback" not in err
    assert bad.read_text().strip() not in err
    assert len([ln for ln in err.splitlines() if ln.startswith("rollover: error")]) == 1
    assert not (tmp_path / "cfg" / "state" / "state.json").exists()
    assert [dns_lab.serial(s) for s in dns_lab.servers] == serials
    assert all(not x for x in served(dns_lab, host))


def _tree_digest(root: Path) -> dict[str, str]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_plan_changes_nothing_in_any_phase(dns_lab: DnsLab, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    host = new_host()
    cfg = write_config(tmp_path, dns_lab, host)
    state_dir = tmp_path / "state"

    def plan_is_pure() -> str:
        before = (_tree_digest(state_dir), state_dir.exists(),
                  [dns_lab.serial(s) for s in dns_lab.servers], served(dns_lab, host))
        capsys.readouterr()
        assert main(["plan", "--config", str(cfg)]) == 0
        out = capsys.readouterr().out
        after = (_tree_digest(state_dir), state_dir.exists(),
                 [dns_lab.serial(s) for s in dns_lab.servers], served(dns_lab, host))
        assert before == after
        return out

    out = plan_is_pure()  # no state at all yet
    assert "would generate the current" in out and "would update" in out
    assert not state_dir.exists()
    dns_lab.freeze_knot()
    try:
        main(["run", "--config", str(cfg)])
        assert slot(tmp_path, host)["phase"] == "propagating"
        out = plan_is_pure()
        assert "still serves the old set" in out
    finally:
        dns_lab.thaw_knot()
    main(["run", "--wait", "--config", str(cfg)])
    out = plan_is_pure()
    assert "no certificate source" in out


def test_kill_9_at_random_points_then_resume(dns_lab: DnsLab, tmp_path: Path) -> None:
    """20 runs killed at random moments (in parallel, each its own slot): the state file is
    always valid JSON, and the next run resumes and finishes with exactly our records."""
    rng = random.Random(int.from_bytes(secrets.token_bytes(4), "big"))
    cases = []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for i in range(20):
        host = new_host()
        d = tmp_path / f"c{i}"
        cfg = write_config(d, dns_lab, host)
        proc = subprocess.Popen([sys.executable, "-m", "rollover", "run", "--wait", "--config",
                                 str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env)
        cases.append((host, d, cfg, proc, rng.uniform(0.3, 4.0)))
    start = CLOCK.monotonic()
    for _host, _d, _cfg, proc, at in sorted(cases, key=lambda c: c[4]):
        CLOCK.sleep(max(0.0, start + at - CLOCK.monotonic()))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    for _host, d, _cfg, _proc, _at in cases:
        f = d / "state" / "state.json"
        if f.exists():
            json.loads(f.read_text())  # never half-written
    resumed = [subprocess.Popen([sys.executable, "-m", "rollover", "run", "--wait", "--config",
                                 str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env) for _host, _d, cfg, _proc, _at in cases]
    for p in resumed:
        out = p.communicate(timeout=120)[0].decode()
        assert p.returncode == 0, out
    for host, d, _cfg, _proc, _at in cases:
        s = slot(d, host)
        assert s["phase"] == "ready", (host, s["phase"])
        ours = wanted(s)
        assert len(ours) == 2
        assert all(set(x) == ours for x in served(dns_lab, host)), host
        keys = {k["key_id"] for k in s["keys"]}
        on_disk = {p.stem for p in (d / "state" / "keys").glob("*.pem")}
        assert keys == on_disk  # no orphaned key from an interrupted staging
        for p in (d / "state" / "keys").glob("*.pem"):
            assert p.stat().st_mode & 0o077 == 0


def test_second_run_while_locked_exits_with_its_own_code(dns_lab: DnsLab, tmp_path: Path) -> None:
    host = new_host()
    cfg = write_config(tmp_path, dns_lab, host)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-m", "rollover", "run", "--wait", "--config",
                              str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=env)
    try:
        wait_for(lambda: (tmp_path / "state" / "state.json").exists(), 10, "first run started")
        second = subprocess.run([sys.executable, "-m", "rollover", "run", "--config", str(cfg)],
                                capture_output=True, text=True, env=env, timeout=30)
        assert second.returncode == ExitStatus.LOCKED
        assert "lock" in second.stderr and "Traceback" not in second.stderr
    finally:
        first.wait(60)
    assert first.returncode == 0


def test_now_helper_is_utc() -> None:
    assert CLOCK.now().tzinfo is UTC or CLOCK.now().utcoffset() == timedelta(0)


def test_secrets_never_reach_output_logs_or_state(dns_lab: DnsLab, tmp_path: Path,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    host = new_host()
    cfg = write_config(tmp_path, dns_lab, host)
    assert main(["-vv", "run", "--wait", "--config", str(cfg)]) == 0
    run_out, run_err = capfd.readouterr()
    assert main(["status", "--json", "--config", str(cfg)]) == 0
    status_out, status_err = capfd.readouterr()
    assert main(["plan", "--json", "--config", str(cfg)]) == 0
    plan_out, plan_err = capfd.readouterr()
    out, err = run_out + status_out + plan_out, run_err + status_err + plan_err
    state_text = (tmp_path / "state" / "state.json").read_text()
    status = json.loads(status_out)
    assert json.loads(plan_out)["slots"][0]["phase"] == "ready"
    assert status["slots"][0]["phase"] == "ready"
    assert len(status["slots"][0]["observation"]["answers"]) == 3
    for text in (out, err, state_text):
        assert dns_lab.tsig_secret not in text
        assert "PRIVATE KEY" not in text
    assert "rollover.engine" in err or "publish" in err  # -vv did log
    for key in (tmp_path / "state" / "keys").glob("*.pem"):
        assert key.read_text().split("\n")[1] not in out + err + state_text
