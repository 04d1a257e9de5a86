"""A full current+next rollover on real servers: BIND x2 + Knot, Pebble (ACME), Postfix.

The monitor is the most important test of the project: while a rollover runs, it polls every
nameserver and Postfix's STARTTLS about every 100 ms and fails on any moment where the key
Postfix presents has no 3 1 1 record on some server.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from rollover.cli.main import main
from rollover.clock import SystemClock, parse_time
from rollover.dane import tlsa

from lab.configs import write_full_config
from lab.dns import DnsLab
from lab.pebble import PebbleLab
from lab.postfix import PostfixLab, served_chain
from lab.proc import wait_for

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parent.parent
CLOCK = SystemClock()
ALG = "ecdsa-p256"


def owner(host: str) -> str:
    return f"_25._tcp.{host}."


def setup(tmp_path: Path, dns_lab: DnsLab, pebble: PebbleLab, postfix: PostfixLab, *,
          algorithms: tuple[str, ...] = (ALG,), reload: list[str] | None = None,
          retire_grace: str = "2s", archive_keys: bool = False) -> tuple[str, Path]:
    """A fresh MX name pointing at the lab Postfix, and a config managing it end to end."""
    host = f"mx{secrets.token_hex(3)}.example.test"
    dns_lab.update(host, "A", dns_lab.ttl, [postfix.address])
    dns_lab.wait_all(host, "A", [postfix.address])
    cfg = write_full_config(
        tmp_path, dns_lab, pebble, postfix, host, algorithms=algorithms,
        policy={"retire_grace": retire_grace, "key_lifetime": "60d", "renew_before": "1d",
                "archive_keys": archive_keys},
        reload_command=reload)
    return host, cfg


def state(cfg: Path) -> dict[str, Any]:
    return json.loads((cfg.parent / "state" / "state.json").read_text())


def slot(cfg: Path, host: str, alg: str = ALG) -> dict[str, Any]:
    return state(cfg)["slots"][f"{host}:25:{alg}"]


def key_of(s: dict[str, Any], role: str) -> dict[str, Any] | None:
    return next((k for k in s["keys"] if k["role"] == role), None)


def presented_spki(postfix: PostfixLab, alg: str = ALG) -> str:
    der = served_chain(postfix.address, postfix.port, alg)
    return tlsa.spki_sha256_hex(x509.load_der_x509_certificate(der[0]))


def rrsets(dns_lab: DnsLab, host: str) -> list[frozenset[str]]:
    return [dns_lab.query(s, owner(host), "TLSA").records for s in dns_lab.servers]


def openssl_dane(postfix: PostfixLab, host: str, rdata: str, alg: str = ALG) -> bool:
    cipher = "ECDHE-ECDSA-AES128-GCM-SHA256" if alg.startswith("ecdsa") else \
        "ECDHE-RSA-AES128-GCM-SHA256"
    proc = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect", f"{postfix.address}:25",
         "-tls1_2", "-cipher", cipher, "-dane_tlsa_domain", host, "-dane_tlsa_rrdata", rdata,
         "-verify_return_error", "-brief"],
        input=b"QUIT\r\n", capture_output=True, timeout=20)
    return proc.returncode == 0 and b"Verification: OK" in proc.stderr + proc.stdout


class Monitor(threading.Thread):
    """Every ~100 ms: which key does Postfix present, and does every server have its 3 1 1?"""

    def __init__(self, dns_lab: DnsLab, postfix: PostfixLab, host: str, *,
                 before_dane: bool = False) -> None:
        super().__init__(daemon=True)
        self.dns_lab, self.postfix, self.host = dns_lab, postfix, host
        # before_dane: a server with no TLSA RRset at all is fine (DANE is not on there yet);
        # otherwise an empty RRset during a rollover is a failure too.
        self.before_dane = before_dane
        self.samples = 0
        self.keys_seen: list[str] = []
        self.violations: list[str] = []
        self.down: set[str] = set()  # addresses of servers a test stopped: they answer nobody
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                spki = presented_spki(self.postfix)
            except Exception as exc:  # Postfix must keep answering during a rollover
                self.violations.append(f"STARTTLS failed: {exc}")
                spki = None
            if spki is not None:
                if not self.keys_seen or self.keys_seen[-1] != spki:
                    self.keys_seen.append(spki)
                for srv in self.dns_lab.servers:
                    if srv.address in self.down:
                        continue
                    try:
                        records = self.dns_lab.query(srv, owner(self.host), "TLSA").records
                    except Exception as exc:
                        self.violations.append(f"{srv.name}: no answer: {exc}")
                        continue
                    if not records and self.before_dane:
                        continue
                    if f"3 1 1 {spki}" not in records:
                        self.violations.append(
                            f"{srv.name} ({srv.address}) lacks 3 1 1 {spki[:12]}… while Postfix "
                            "presents it")
            self.samples += 1
            self.halt.wait(0.1)

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


def test_bootstrap_from_nothing_serves_a_pebble_cert_that_dane_verifies(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path) -> None:
    host, cfg = setup(tmp_path, dns_lab, pebble_lab, postfix_lab,
                      algorithms=("ecdsa-p256", "rsa2048"))
    in_service = presented_spki(postfix_lab)  # what Postfix presents before rollover starts
    mon = Monitor(dns_lab, postfix_lab, host, before_dane=True)
    mon.start()
    try:
        assert main(["run", "--wait", "--config", str(cfg)]) == 0
    finally:
        mon.stop()
    # from the first TLSA record on, Postfix's certificate matched: the key in service was
    # published with ours and retired only after our certificate took over
    assert mon.violations == [] and mon.keys_seen[0] == in_service
    assert len(mon.keys_seen) >= 2
    for records in rrsets(dns_lab, host):
        assert f"3 1 1 {in_service}" not in records
    for alg in ("ecdsa-p256", "rsa2048"):
        s = slot(cfg, host, alg)
        assert s["phase"] == "active", s
        current = key_of(s, "current")
        assert current is not None and s["installed"]["key_id"] == current["key_id"]
        assert presented_spki(postfix_lab, alg) == current["spki_sha256"]
        chain = served_chain(postfix_lab.address, postfix_lab.port, alg)
        leaf = x509.load_der_x509_certificate(chain[0])
        issuer = x509.load_der_x509_certificate(chain[1])
        assert host in str(leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
        assert leaf.issuer == issuer.subject  # Pebble's intermediate is served too
        for records in rrsets(dns_lab, host):  # what every server serves verifies, per record
            mine = [r for r in records if r.endswith(current["spki_sha256"])]
            assert mine and all(openssl_dane(postfix_lab, host, r, alg) for r in mine)
        nxt = key_of(s, "next")
        assert nxt is not None
        assert not openssl_dane(postfix_lab, host, f"3 1 1 {nxt['spki_sha256']}", alg)


def test_a_served_rsa_key_blocks_an_ecdsa_only_bootstrap(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Postfix serves an RSA certificate next to the ECDSA one (a stock snakeoil); the endpoint
    asks for ecdsa-p256 only. Publishing its records would leave every client that gets the RSA
    certificate without a match (mail deferred): nothing is published, run exits 2 and says
    why. Once Postfix serves ECDSA only, the bootstrap goes on."""
    host, cfg = setup(tmp_path, dns_lab, pebble_lab, postfix_lab)  # serves ecdsa-p256 only
    postfix_lab.serve(("ecdsa-p256", "rsa2048"))
    rsa = presented_spki(postfix_lab, "rsa2048")
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{postfix_lab.address}:25: presents an RSA key (3 1 1 {rsa[:12]}" in err, err
    assert all(not records for records in rrsets(dns_lab, host))  # nothing published
    postfix_lab.serve(("ecdsa-p256",))  # the operator took the RSA certificate out
    retry_at = parse_time(slot(cfg, host)["retry_at"])  # a look again after a poll interval
    wait_for(lambda: SystemClock().now() >= retry_at, 30, "the next look of the blocked slot")
    mon = Monitor(dns_lab, postfix_lab, host, before_dane=True)
    mon.start()
    try:
        assert main(["run", "--wait", "--config", str(cfg)]) == 0
    finally:
        mon.stop()
    assert mon.violations == [] and slot(cfg, host)["phase"] == "active"


def test_forced_rollover_never_leaves_the_served_key_unpublished(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    host, cfg = setup(tmp_path, dns_lab, pebble_lab, postfix_lab)
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    before = slot(cfg, host)
    old, nxt = key_of(before, "current"), key_of(before, "next")
    assert old and nxt
    mon = Monitor(dns_lab, postfix_lab, host)
    mon.start()
    try:
        t0 = CLOCK.monotonic()
        assert main(["run", "--roll", "--wait", "--config", str(cfg)]) == 0
        took = CLOCK.monotonic() - t0
        CLOCK.sleep(1.0)  # keep watching after the retire
    finally:
        mon.stop()
    after = slot(cfg, host)
    assert after["phase"] == "active"
    cur, new_next = key_of(after, "current"), key_of(after, "next")
    assert cur and new_next and cur["key_id"] == nxt["key_id"]
    assert new_next["key_id"] not in (old["key_id"], nxt["key_id"])
    assert key_of(after, "previous") is None
    for records in rrsets(dns_lab, host):
        assert f"3 1 1 {old['spki_sha256']}" not in records  # the old record is gone
        assert {f"3 1 1 {cur['spki_sha256']}", f"3 1 1 {new_next['spki_sha256']}"} <= records
    assert not (tmp_path / "state" / "keys" / f"{old['key_id']}.pem").exists()
    assert presented_spki(postfix_lab) == cur["spki_sha256"]
    assert mon.violations == []
    assert mon.samples >= 20
    assert mon.keys_seen[-2:] == [old["spki_sha256"], cur["spki_sha256"]]  # it saw the switch
    capsys.readouterr()
    assert main(["status", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert f"{postfix_lab.address}: presents 3 1 1 {cur['spki_sha256'][:12]}… (current key)" in out
    assert out.count("ns3.example.test. matches") == 1 and "NO MATCH" not in out
    print(f"\nmeasured: forced rollover {took:.1f}s, monitor samples {mon.samples}")


def test_frozen_knot_during_rollover_blocks_the_next_install(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Roll A -> B; Knot freezes during B's retire grace, so the new next key C is published
    while Knot keeps serving the old set. Until Knot is thawed C must not go into service."""
    host, cfg = setup(tmp_path, dns_lab, pebble_lab, postfix_lab, retire_grace="3s")
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    roll = subprocess.Popen([sys.executable, "-m", "rollover", "run", "--roll", "--wait",
                             "--max-wait", "10", "--config", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: slot(cfg, host)["phase"] == "retiring", 60, "B in service, retiring A")
        dns_lab.freeze_knot()
        assert roll.wait(60) == 0
        s = slot(cfg, host)
        b, c = key_of(s, "current"), key_of(s, "next")
        assert s["phase"] == "propagating" and b and c
        knot = dns_lab.knot_secondary
        assert f"3 1 1 {c['spki_sha256']}" not in dns_lab.query(knot, owner(host), "TLSA").records
        assert presented_spki(postfix_lab) == b["spki_sha256"]
        assert main(["run", "--roll", "--wait", "--max-wait", "5", "--config", str(cfg)]) == 0
        assert presented_spki(postfix_lab) == b["spki_sha256"]  # C is not installed
        assert slot(cfg, host)["phase"] == "propagating"
        capsys.readouterr()
        main(["status", "--config", str(cfg)])
        out = capsys.readouterr().out
        assert f"{knot.name} ({knot.address})" in out
    finally:
        dns_lab.thaw_knot()
        if roll.poll() is None:
            roll.kill()
            roll.wait()
    assert main(["run", "--wait", "--config", str(cfg)]) == 0  # settles; the roll is still asked
    s = slot(cfg, host)
    assert s["phase"] == "active"
    assert presented_spki(postfix_lab) == c["spki_sha256"]


def test_failing_reload_keeps_the_old_certificate_and_record(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    host, cfg = setup(tmp_path, dns_lab, pebble_lab, postfix_lab)
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    s = slot(cfg, host)
    a = key_of(s, "current")
    assert a is not None
    chain_file = postfix_lab.chain_files[ALG]
    before = chain_file.read_bytes()
    doc = yaml.safe_load(cfg.read_text())
    doc["installers"]["postfix"]["reload_command"] = ["false"]  # a reload that fails
    cfg.write_text(yaml.safe_dump(doc))
    main(["run", "--roll", "--wait", "--max-wait", "10", "--config", str(cfg)])
    s = slot(cfg, host)
    assert s["phase"] == "installing" and "`false` failed" in s["last_error"]
    assert s["installed"]["key_id"] == a["key_id"] == key_of(s, "current")["key_id"]  # type: ignore[index]
    assert s["retry_at"] is not None
    assert chain_file.read_bytes() == before  # restored byte for byte
    assert presented_spki(postfix_lab) == a["spki_sha256"]
    for records in rrsets(dns_lab, host):
        assert f"3 1 1 {a['spki_sha256']}" in records


def test_crash_between_install_and_retire_is_finished_by_the_next_run(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    host, cfg = setup(tmp_path, dns_lab, pebble_lab, postfix_lab, retire_grace="4s",
                      archive_keys=True)
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    a = key_of(slot(cfg, host), "current")
    b = key_of(slot(cfg, host), "next")
    assert a and b
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "rollover", "run", "--roll", "--wait",
                             "--config", str(cfg)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: slot(cfg, host)["phase"] == "retiring", 60, "the retiring phase",
                 interval=0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert presented_spki(postfix_lab) == b["spki_sha256"]
    # plan in the middle of it changes nothing
    snapshot = (cfg.parent / "state" / "state.json").read_bytes()
    assert main(["plan", "--config", str(cfg)]) == 0
    assert (cfg.parent / "state" / "state.json").read_bytes() == snapshot
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    s = slot(cfg, host)
    assert s["phase"] == "active" and key_of(s, "current")["key_id"] == b["key_id"]  # type: ignore[index]
    for records in rrsets(dns_lab, host):
        assert f"3 1 1 {a['spki_sha256']}" not in records
        assert f"3 1 1 {b['spki_sha256']}" in records
    keys = cfg.parent / "state" / "keys"
    assert not (keys / f"{a['key_id']}.pem").exists()  # retired: archived, not kept in use
    archived = keys / "archive" / f"{a['key_id']}.pem"
    assert archived.exists() and archived.stat().st_mode & 0o077 == 0


def test_post_flight_mismatch_rolls_back_and_keeps_the_old_record(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path) -> None:
    """The installer writes where Postfix does not look (a wrong path: reload succeeds, the
    server keeps presenting the old key). The post-flight probe must catch it and roll back."""
    host, cfg = setup(tmp_path, dns_lab, pebble_lab, postfix_lab)
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    a = key_of(slot(cfg, host), "current")
    b = key_of(slot(cfg, host), "next")
    assert a and b
    wrong = tmp_path / "not-read-by-postfix"
    wrong.mkdir()
    doc = yaml.safe_load(cfg.read_text())
    doc["installers"]["postfix"]["directory"] = str(wrong)
    cfg.write_text(yaml.safe_dump(doc))
    mon = Monitor(dns_lab, postfix_lab, host)
    mon.start()
    try:
        main(["run", "--roll", "--wait", "--max-wait", "10", "--config", str(cfg)])
    finally:
        mon.stop()
    s = slot(cfg, host)
    assert "post-flight" in s["last_error"] and "presents another key" in s["last_error"]
    assert s["phase"] in ("active", "issuing") and s["installed"]["key_id"] == a["key_id"]
    assert key_of(s, "current")["key_id"] == a["key_id"]  # type: ignore[index]
    assert not list(wrong.glob("*.pem"))  # the wrongly placed file is rolled back
    assert presented_spki(postfix_lab) == a["spki_sha256"]
    for records in rrsets(dns_lab, host):
        assert {f"3 1 1 {a['spki_sha256']}", f"3 1 1 {b['spki_sha256']}"} <= records
    assert mon.violations == [] and mon.samples >= 2  # it watched before and after


def test_pre_flight_refuses_a_chain_some_clients_would_reject(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path) -> None:
    """Safety rule 2. Someone published a stray 3 1 2 record: a client that prefers SHA2-512
    (RFC 7671 section 9) ignores every 3 1 1 and matches nothing. The next key's 3 1 1 is on
    every server, so only the pre-flight (RFC 7671 matching per server) can refuse."""
    host, cfg = setup(tmp_path, dns_lab, pebble_lab, postfix_lab)
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    s = slot(cfg, host)
    a = key_of(s, "current")
    assert a
    stray = "3 1 2 " + secrets.token_hex(64)
    served_now = rrsets(dns_lab, host)[0]
    dns_lab.update(owner(host), "TLSA", dns_lab.ttl, [*served_now, stray])
    dns_lab.wait_all(owner(host), "TLSA", [*served_now, stray])
    try:
        main(["run", "--roll", "--wait", "--max-wait", "5", "--config", str(cfg)])
        s = slot(cfg, host)
        assert s["last_error"].startswith("pre-flight: ns")
        assert s["installed"]["key_id"] == a["key_id"]
        assert presented_spki(postfix_lab) == a["spki_sha256"]
    finally:
        dns_lab.update(owner(host), "TLSA", dns_lab.ttl, list(served_now))
        dns_lab.wait_all(owner(host), "TLSA", list(served_now))
