"""certbot mode with the real thing: certbot + certbot-dns-rfc2136 (PyPI) ordering from Pebble with
DNS-01 on the lab BIND primary (TSIG), `rollover certbot-hook` as its deploy hook, rollover
installing into the lab Postfix, and an invariant monitor sampling every ~100 ms what Postfix
presents and what every nameserver serves.

Each scenario is timed against 2 x TTL (the lab TTL is 2 s) and prints a "measured:" line.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from test_rollover_lab import key_of, owner, rrsets, slot

from rollover.cli.main import main
from rollover.dane import tlsa

from lab.certbot import Certbot, certbot_binary
from lab.dns import DnsLab
from lab.pebble import PebbleLab
from lab.postfix import PostfixLab, served_chain
from lab.proc import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.slow]
ALG = "ecdsa-p256"
REPO = Path(__file__).resolve().parent.parent


class Timeline(threading.Thread):
    """Every ~100 ms: the chain Postfix presents and every server's RRset. A moment where
    nothing on some server matches the chain is a violation (current+issuer: the leaf's 3 1 1
    or a 2 1 1 of a certificate in the chain; current+next: the leaf's 3 1 1)."""

    def __init__(self, dns_lab: DnsLab, postfix: PostfixLab, host: str, *,
                 issuer: bool = False, before_dane: bool = False) -> None:
        super().__init__(daemon=True)
        self.dns_lab, self.postfix, self.host = dns_lab, postfix, host
        self.issuer, self.before_dane = issuer, before_dane
        self.samples: list[tuple[float, str, list[frozenset[str]]]] = []
        self.violations: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            t = time.monotonic()
            try:
                chain = [x509.load_der_x509_certificate(d) for d in
                         served_chain(self.postfix.address, self.postfix.port, ALG)]
            except Exception as exc:
                self.violations.append(f"STARTTLS failed: {exc}")
                chain = []
            if chain:
                leaf = f"3 1 1 {tlsa.spki_sha256_hex(chain[0])}"
                ok = {leaf}
                if self.issuer:
                    ok |= {tlsa.tlsa_record(c, 2, 1, 1).to_text() for c in chain[1:]}
                sets = []
                for srv in self.dns_lab.servers:
                    try:
                        records = self.dns_lab.query(srv, owner(self.host), "TLSA").records
                    except Exception as exc:
                        self.violations.append(f"{srv.name}: no answer: {exc}")
                        records = frozenset()
                    sets.append(records)
                    if not records and self.before_dane:
                        continue
                    if not ok & records:
                        self.violations.append(f"{srv.name} ({srv.address}): nothing matches "
                                               f"the served leaf {leaf[:20]}…")
                self.samples.append((t, leaf, sets))
            self.halt.wait(0.1)

    def stop(self) -> None:
        self.halt.set()
        self.join(10)

    def first_everywhere(self, rdata: str) -> float | None:
        return next((t for t, _, sets in self.samples if all(rdata in s for s in sets)), None)

    def first_served(self, rdata: str) -> float | None:
        return next((t for t, leaf, _ in self.samples if leaf == rdata), None)

    def rrsets_seen(self) -> set[frozenset[str]]:
        return {s for _, _, sets in self.samples for s in sets}


def lineage_rdata(live: Path) -> str:
    leaf = x509.load_pem_x509_certificates((live / "fullchain.pem").read_bytes())[0]
    return f"3 1 1 {tlsa.spki_sha256_hex(leaf)}"


def lineage_serial(live: Path) -> str:
    leaf = x509.load_pem_x509_certificates((live / "fullchain.pem").read_bytes())[0]
    return format(leaf.serial_number, "x")


def served_rdata(postfix: PostfixLab) -> str:
    der = served_chain(postfix.address, postfix.port, ALG)
    return f"3 1 1 {tlsa.spki_sha256_hex(x509.load_der_x509_certificate(der[0]))}"


def served_serial(postfix: PostfixLab) -> str:
    der = served_chain(postfix.address, postfix.port, ALG)
    return format(x509.load_der_x509_certificate(der[0]).serial_number, "x")


def hook_command(cfg: Path, *extra: str) -> str:
    return " ".join([sys.executable, "-m", "rollover", "certbot-hook", "--config", str(cfg),
                     *extra])


def setup(tmp_path: Path, dns_lab: DnsLab, pebble: PebbleLab, postfix: PostfixLab, *,
          scheme: str = "current+next") -> tuple[str, Path, Certbot, Path]:
    """A fresh MX name at the lab Postfix, a certbot with its dirs in tmp, a config whose
    endpoint takes its certificate from the (future) lineage and installs into Postfix."""
    host = f"mx{secrets.token_hex(3)}.example.test"
    dns_lab.update(host, "A", dns_lab.ttl, [postfix.address])
    dns_lab.wait_all(host, "A", [postfix.address])
    certbot = Certbot(tmp_path / "certbot", dns_lab, pebble)
    cfgdir = tmp_path / "rollover"
    cfgdir.mkdir(mode=0o700)
    endpoint: dict[str, Any] = {
        "host": host, "zone": "example.test", "provider": "lab", "algorithms": [ALG],
        "ttl": dns_lab.ttl, "installer": "postfix", "scheme": scheme,
        "policy": {"retire_grace": "2s"},
        "certificate": {"source": "certbot", "lineage": "mx",
                        "certbot_config_dir": str(certbot.config_dir)},
    }
    if scheme == "current+issuer":
        bundle = tmp_path / "roots.pem"
        bundle.write_bytes(b"".join(pebble.roots()))
        endpoint.update({"issuer": "root", "issuer_bundle": str(bundle)})
    doc = {
        "state_dir": str(cfgdir / "state"),
        "resolver": [dns_lab.primary.address],
        "dns": {"timeout": 1.0},
        "providers": {"lab": {
            "type": "rfc2136", "server": dns_lab.primary.address,
            "tsig_key_name": dns_lab.tsig_name, "tsig_algorithm": dns_lab.tsig_algorithm,
            "tsig_secret_file": str(dns_lab.tsig_secret_file)}},
        "installers": {"postfix": {
            "type": "postfix", "directory": str(postfix.tls_dir), "file_name": "{algorithm}.pem",
            "reload_command": list(postfix.reload_command)}},
        "endpoints": [endpoint],
    }
    cfg = cfgdir / "rollover.yaml"
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    return host, cfg, certbot, certbot.live("mx")


def spooled(cfg: Path) -> list[str]:
    spool = cfg.parent / "state" / "spool"
    return sorted(p.name for p in spool.iterdir()) if spool.exists() else []


def bootstrap(tmp_path: Path, dns_lab: DnsLab, pebble: PebbleLab, postfix: PostfixLab,
              scheme: str = "current+next") -> tuple[str, Path, Certbot, Path, float]:
    host, cfg, certbot, live = setup(tmp_path, dns_lab, pebble, postfix, scheme=scheme)
    certbot.certonly("mx", host, deploy_hook=hook_command(cfg))
    assert spooled(cfg) == [f"{host}_25.json"]  # the hook left its note, nothing else
    t0 = time.monotonic()
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    took = time.monotonic() - t0
    assert spooled(cfg) == []
    s = slot(cfg, host)
    if scheme == "current+issuer" and s["phase"] != "active":  # the 2 1 1 goes out after
        assert main(["run", "--wait", "--config", str(cfg)]) == 0
        s = slot(cfg, host)
    assert s["phase"] == "active", s
    return host, cfg, certbot, live, took


@pytest.fixture(scope="module", autouse=True)
def _need_certbot() -> None:
    if certbot_binary() is None:
        pytest.skip("certbot is not installed (pip install '.[test]')")


@pytest.fixture(autouse=True)
def _restore_postfix(postfix_lab: PostfixLab) -> Iterator[None]:
    """The shared Postfix gets its own chain files back (other tests expect its lab
    certificate for mail.example.test, e.g. openssl's DANE-EE name checks)."""
    saved = {alg: path.read_bytes() for alg, path in postfix_lab.chain_files.items()}
    yield
    for alg, data in saved.items():
        postfix_lab.install_chain(alg, data)
    postfix_lab.reload()


def test_certonly_hook_and_run_wait_bootstrap(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path) -> None:
    host, cfg, certbot, live = setup(tmp_path, dns_lab, pebble_lab, postfix_lab)
    in_service = served_rdata(postfix_lab)
    mon = Timeline(dns_lab, postfix_lab, host, before_dane=True)
    mon.start()
    try:
        proc = certbot.certonly("mx", host, deploy_hook=hook_command(cfg))
        assert "noted for " + host in certbot.log() + proc.stderr
        tree = certbot.tree()
        t0 = time.monotonic()
        assert main(["run", "--wait", "--config", str(cfg)]) == 0
        took = time.monotonic() - t0
        time.sleep(0.5)
    finally:
        mon.stop()
    theirs = lineage_rdata(live)
    s = slot(cfg, host)
    assert s["phase"] == "active" and s["installed"]["serial"] == lineage_serial(live)
    # certbot's key is the key: rollover generated none, and serves certbot's certificate
    assert [k["spki_sha256"] for k in s["keys"]] == [theirs.split()[-1]]
    assert served_rdata(postfix_lab) == theirs
    assert served_serial(postfix_lab) == lineage_serial(live)
    assert all(r == {theirs} for r in rrsets(dns_lab, host))  # the adopted record is retired
    assert mon.violations == [], mon.violations[:5]
    assert mon.first_served(in_service) is not None and mon.first_served(theirs) is not None
    pub, switch = mon.first_everywhere(theirs), mon.first_served(theirs)
    assert pub is not None and switch is not None and switch - pub >= 2 * dns_lab.ttl - 0.3
    assert certbot.tree() == tree  # nothing written into certbot's directories
    assert spooled(cfg) == []
    print(f"\nmeasured: bootstrap run {took:.1f}s; new record everywhere -> served "
          f"{switch - pub:.1f}s (2 x TTL = {2 * dns_lab.ttl}s); {len(mon.samples)} samples, "
          "0 violations")


def test_renew_reuse_key_installs_without_tlsa_change(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path) -> None:
    host, cfg, certbot, live, _ = bootstrap(tmp_path, dns_lab, pebble_lab, postfix_lab)
    before, old_serial = rrsets(dns_lab, host), served_serial(postfix_lab)
    mon = Timeline(dns_lab, postfix_lab, host)
    mon.start()
    try:
        certbot.renew("mx", new_key=False, deploy_hook=hook_command(cfg))
        assert os.readlink(live / "fullchain.pem").endswith("fullchain2.pem")
        t0 = time.monotonic()
        assert main(["run", "--wait", "--config", str(cfg)]) == 0
        took = time.monotonic() - t0
        time.sleep(0.3)
    finally:
        mon.stop()
    assert served_serial(postfix_lab) == lineage_serial(live) != old_serial
    assert rrsets(dns_lab, host) == before
    assert mon.rrsets_seen() == {before[0]}  # not one TLSA change, on any server
    assert mon.violations == [], mon.violations[:5]
    assert took < 2 * dns_lab.ttl  # no 2 x TTL wait for a key already omnipresent
    assert len(slot(cfg, host)["keys"]) == 1
    print(f"\nmeasured: --reuse-key renewal installed in {took:.1f}s (< 2 x TTL = "
          f"{2 * dns_lab.ttl}s), TLSA unchanged, {len(mon.samples)} samples, 0 violations")


def test_renew_new_key_current_next_keeps_old_cert_until_new_record_is_omnipresent(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    host, cfg, certbot, live, _ = bootstrap(tmp_path, dns_lab, pebble_lab, postfix_lab)
    old = lineage_rdata(live)
    mon = Timeline(dns_lab, postfix_lab, host)
    mon.start()
    try:
        certbot.renew("mx", new_key=True, deploy_hook=hook_command(cfg))
        new = lineage_rdata(live)
        assert new != old
        assert served_rdata(postfix_lab) == old  # certbot renewed; nothing installed yet
        # one run without --wait: the new record goes out, the old certificate stays
        assert main(["run", "--config", str(cfg)]) == 0
        assert served_rdata(postfix_lab) == old
        capsys.readouterr()
        assert main(["status", "--config", str(cfg)]) == 0
        status = capsys.readouterr().out
        assert "time says no:" in status or "waiting:" in status, status
        t0 = time.monotonic()
        assert main(["run", "--wait", "--config", str(cfg)]) == 0
        took = time.monotonic() - t0
        time.sleep(0.5)
    finally:
        mon.stop()
    pub, switch = mon.first_everywhere(new), mon.first_served(new)
    assert pub is not None and switch is not None
    assert switch - pub >= 2 * dns_lab.ttl - 0.3, (switch - pub)
    assert mon.violations == [], mon.violations[:5]
    assert served_rdata(postfix_lab) == new
    assert all(r == {new} for r in rrsets(dns_lab, host))  # the old record is retired
    s = slot(cfg, host)
    assert s["phase"] == "active" and len(s["keys"]) == 1
    print(f"\nmeasured: --new-key (current+next): new 3 1 1 everywhere -> served "
          f"{switch - pub:.1f}s (2 x TTL = {2 * dns_lab.ttl}s); run --wait {took:.1f}s; "
          f"{len(mon.samples)} samples, 0 violations")


def test_renew_new_key_current_issuer_goes_in_under_the_issuer_record(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path) -> None:
    host, cfg, certbot, live, _ = bootstrap(tmp_path, dns_lab, pebble_lab, postfix_lab,
                                            scheme="current+issuer")
    old = lineage_rdata(live)
    root = tlsa.tlsa_record(x509.load_pem_x509_certificate(pebble_lab.roots()[0]),
                            2, 1, 1).to_text()
    assert all(r == {old, root} for r in rrsets(dns_lab, host))
    mon = Timeline(dns_lab, postfix_lab, host, issuer=True)
    mon.start()
    try:
        certbot.renew("mx", new_key=True, deploy_hook=hook_command(cfg))
        new = lineage_rdata(live)
        t0 = time.monotonic()
        assert main(["run", "--wait", "--config", str(cfg)]) == 0
        took = time.monotonic() - t0
        time.sleep(0.5)
    finally:
        mon.stop()
    switch = mon.first_served(new)
    pub = mon.first_everywhere(new)
    assert switch is not None and pub is not None
    assert switch <= pub + 0.3  # in service under the 2 1 1, not after its own 2 x TTL
    assert mon.violations == [], mon.violations[:5]
    assert all(r == {new, root} for r in rrsets(dns_lab, host))
    print(f"\nmeasured: --new-key (current+issuer): served {switch - t0:.1f}s after the run "
          f"started (no 2 x TTL wait: covered by the root's 2 1 1); run --wait {took:.1f}s; "
          f"{len(mon.samples)} samples, 0 violations")


def test_hook_while_run_holds_the_lock_is_picked_up_later(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path) -> None:
    host, cfg, certbot, live = setup(tmp_path, dns_lab, pebble_lab, postfix_lab)
    certbot.certonly("mx", host)  # no hook yet: the run finds the lineage by itself
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.Popen([sys.executable, "-m", "rollover", "run", "--wait", "--config",
                            str(cfg)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (cfg.parent / "state" / "state.json").exists()
                 and slot(cfg, host)["phase"] == "propagating", 30, "the run waiting 2 x TTL")
        first_serial = lineage_serial(live)
        t0 = time.monotonic()
        proc = certbot.renew("mx", new_key=False, deploy_hook=hook_command(cfg, "--run"))
        hook_took = time.monotonic() - t0
        log = certbot.log()
        assert "another rollover run holds the lock" in log, log[-3000:]
        assert "noted for " + host in log
        assert "returned error code" not in log and proc.returncode == 0
        assert run.wait(60) == 0
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    assert lineage_serial(live) != first_serial
    assert served_serial(postfix_lab) == lineage_serial(live)  # the renewal went in
    assert spooled(cfg) == []
    print(f"\nmeasured: certbot renew with the hook (--run) while run held the lock: "
          f"{hook_took:.1f}s in all (certbot included)")


def test_hook_with_a_broken_config_exits_0_with_one_line_and_changes_nothing(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path) -> None:
    host, cfg, certbot, live, _ = bootstrap(tmp_path, dns_lab, pebble_lab, postfix_lab)
    state_before = (cfg.parent / "state" / "state.json").read_bytes()
    served_before = served_serial(postfix_lab)
    doc = yaml.safe_load(cfg.read_text())
    doc["endpoints"][0]["certificate"]["lineage"] = {"rsa2048": "mx"}  # wrong algorithm
    doc["endpoints"][0]["polcy"] = {}  # and a typo
    broken = cfg.parent / "broken.yaml"
    broken.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(REPO), "RENEWED_LINEAGE": str(live),
           "RENEWED_DOMAINS": host}
    direct = subprocess.run([sys.executable, "-m", "rollover", "certbot-hook", "--config",
                             str(broken)], env=env, capture_output=True, text=True, timeout=30)
    assert direct.returncode == 0
    lines = direct.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rollover certbot-hook: error: "), lines
    assert "broken.yaml:" in lines[0] and "Traceback" not in direct.stderr
    assert dns_lab.tsig_secret not in direct.stderr + direct.stdout
    # and through certbot itself: the renewal succeeds, the hook's line is in certbot's log
    certbot.renew("mx", new_key=True, deploy_hook=hook_command(broken))
    assert "rollover certbot-hook: error: " in certbot.log()
    assert (cfg.parent / "state" / "state.json").read_bytes() == state_before
    assert spooled(cfg) == []
    assert served_serial(postfix_lab) == served_before
    assert json.loads(state_before)["slots"]  # (the state it kept is a real one)
    assert key_of(slot(cfg, host), "current") is not None
