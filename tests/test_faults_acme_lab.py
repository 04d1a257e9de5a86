"""Issue #13, ACME rows of the fault matrix: real Pebble behind a small fault-injecting HTTPS
proxy (tests/lab/acme_proxy.py), real BIND/Knot, real Postfix, under the invariant monitor."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_rollover_lab import Monitor, key_of, presented_spki, setup, slot

from rollover.cli.main import main
from rollover.clock import SystemClock, parse_time

from lab.acme_proxy import (
    AUTHZ,
    FINALIZE,
    NEW_ORDER,
    ORDER,
    AcmeProxy,
    Refuse,
    Rewrite,
    stuck,
    wrong_token,
)
from lab.dns import DnsLab
from lab.pebble import PebbleLab
from lab.postfix import PostfixLab

pytestmark = pytest.mark.lab
CLOCK = SystemClock()


def configure(cfg: Path, **acme: str) -> None:
    doc: dict[str, Any] = yaml.safe_load(cfg.read_text())
    doc["endpoints"][0]["policy"]["retry_backoff"] = "1s"
    doc["acme"].update(acme)
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))


def wait_until_due(cfg: Path, host: str) -> None:
    at = slot(cfg, host)["retry_at"]
    assert at is not None
    left = (parse_time(at) - CLOCK.now()).total_seconds()
    CLOCK.sleep(max(0.0, left) + 0.3)


@pytest.fixture
def proxy(pebble_lab: PebbleLab) -> Any:
    p = AcmeProxy(pebble_lab, 14300)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def test_ca_down_then_timing_out_waits_with_backoff_and_completes_when_back(
        dns_lab: DnsLab, proxy: AcmeProxy, postfix_lab: PostfixLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    host, cfg = setup(tmp_path, dns_lab, proxy, postfix_lab)  # type: ignore[arg-type]
    configure(cfg, network_timeout="2s")
    in_service = presented_spki(postfix_lab)
    mon = Monitor(dns_lab, postfix_lab, host, before_dane=True)
    mon.start()
    try:
        proxy.stop()  # connection refused
        # --wait keeps retrying with a doubling backoff (1 s, 2 s, ...) until --max-wait
        main(["run", "--wait", "--max-wait", "20", "--config", str(cfg)])
        s = slot(cfg, host)
        failed = s["failures"]
        assert s["phase"] == "issuing" and failed >= 2
        assert "connection refused" in s["last_error"] and "14300" in s["last_error"]
        staged = [k["key_id"] for k in s["keys"]]
        capsys.readouterr()
        main(["status", "--no-observe", "--config", str(cfg)])
        assert "backoff: last attempt failed" in capsys.readouterr().out
        # the CA answers TCP but never HTTP: a timeout, the backoff doubles
        proxy.start()
        proxy.hang = True
        wait_until_due(cfg, host)
        t0 = CLOCK.monotonic()
        main(["run", "--config", str(cfg)])
        assert CLOCK.monotonic() - t0 < 20
        s = slot(cfg, host)
        assert s["failures"] == failed + 1 and "did not answer in time" in s["last_error"]
        assert [k["key_id"] for k in s["keys"]] == staged  # nothing lost, nothing re-staged
        proxy.hang = False
        proxy.stop()
        proxy.start()
        wait_until_due(cfg, host)
        assert main(["run", "--wait", "--config", str(cfg)]) == 0
    finally:
        mon.stop()
    s = slot(cfg, host)
    assert s["phase"] == "active" and s["failures"] == 0 and s["last_error"] is None
    current = key_of(s, "current")
    assert current and current["key_id"] in staged
    assert presented_spki(postfix_lab) == current["spki_sha256"] != in_service
    assert mon.violations == []


@pytest.mark.parametrize("path", [NEW_ORDER, FINALIZE])
def test_rate_limited_waits_for_retry_after_then_completes(
        dns_lab: DnsLab, proxy: AcmeProxy, postfix_lab: PostfixLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], path: str) -> None:
    host, cfg = setup(tmp_path, dns_lab, proxy, postfix_lab)  # type: ignore[arg-type]
    configure(cfg)
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    n0 = len(proxy.calls(path))  # the first issue's
    proxy.rules.refuse.append(Refuse(path, retry_after=6))
    mon = Monitor(dns_lab, postfix_lab, host)
    mon.start()
    try:
        main(["run", "--roll", "--wait", "--max-wait", "3", "--config", str(cfg)])
        refused = proxy.calls(path)[n0:]
        assert [c.status for c in refused] == [429]
        s = slot(cfg, host)
        assert "rateLimited" in s["last_error"] and "Retry-After" in s["last_error"]
        left = (parse_time(s["retry_at"]) - CLOCK.now()).total_seconds()
        assert 3 < left <= 6.5  # the CA's 6 s, not our 1 s backoff
        capsys.readouterr()
        main(["status", "--no-observe", "--config", str(cfg)])
        assert "retry in" in capsys.readouterr().out
        main(["run", "--config", str(cfg)])  # cron again, too early: no request to the CA
        assert len(proxy.calls(path)) == n0 + 1
        wait_until_due(cfg, host)
        assert main(["run", "--wait", "--config", str(cfg)]) == 0
    finally:
        mon.stop()
    again = proxy.calls(path)[n0:]
    assert len(again) == 2 and again[1].at - refused[0].at >= 6
    assert slot(cfg, host)["phase"] in ("active", "retiring")
    assert mon.violations == []


def test_order_stuck_processing_is_given_up_and_a_fresh_one_completes(
        dns_lab: DnsLab, proxy: AcmeProxy, postfix_lab: PostfixLab, tmp_path: Path) -> None:
    host, cfg = setup(tmp_path, dns_lab, proxy, postfix_lab)  # type: ignore[arg-type]
    configure(cfg, order_timeout="3s")
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    before = presented_spki(postfix_lab)
    proxy.rules.rewrite.append(Rewrite(ORDER, stuck("processing")))
    t0 = CLOCK.monotonic()
    main(["run", "--roll", "--wait", "--max-wait", "0.5", "--config", str(cfg)])
    assert CLOCK.monotonic() - t0 < 25  # the run ends; nothing hangs
    s = slot(cfg, host)
    assert s["phase"] == "issuing" and s["failures"] == 1
    assert "gave up after 3s" in s["last_error"] and "still processing" in s["last_error"]
    assert "acme.order_timeout" in s["last_error"]
    assert presented_spki(postfix_lab) == before  # nothing installed
    proxy.rules.rewrite.clear()
    wait_until_due(cfg, host)
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    assert len(proxy.calls(NEW_ORDER)) == 3  # first issue, the stuck order, a fresh one
    assert slot(cfg, host)["phase"] == "active"


@pytest.fixture
def own_proxy(dns_lab: DnsLab) -> Any:
    """A Pebble of this test's own behind the proxy: the session's Pebble holds the valid
    authorizations of every earlier test (seen reused in CI), this one holds none."""
    pebble = PebbleLab(f"{dns_lab.primary.address}:53", dns_lab.net, port=14009,
                       management_port=15009)
    pebble.start()
    p = AcmeProxy(pebble, 14309)
    p.start()
    try:
        yield p
    finally:
        p.stop()
        pebble.close()


def test_invalid_challenge_is_retried_then_stops_the_slot_until_resumed(
        dns_lab: DnsLab, own_proxy: AcmeProxy, postfix_lab: PostfixLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    proxy = own_proxy
    host, cfg = setup(tmp_path, dns_lab, proxy, postfix_lab)  # type: ignore[arg-type]
    configure(cfg)
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    before = presented_spki(postfix_lab)
    # the client is told another token than Pebble checks: Pebble's real DNS-01 validation
    # against the lab's primary finds the wrong TXT value and the authorization goes invalid
    proxy.rules.rewrite.append(Rewrite(AUTHZ, wrong_token))
    mon = Monitor(dns_lab, postfix_lab, host)
    mon.start()
    try:
        codes = []
        for _ in range(3):
            codes.append(main(["run", "--roll", "--config", str(cfg)]))
            s = slot(cfg, host)
            if s["stopped"]:
                break
            assert "dns-01 challenge" in s["last_error"] and "attempt" in s["last_error"]
            wait_until_due(cfg, host)
        s = slot(cfg, host)
        # a CA counts failed validations (Let's Encrypt: 5 per hour per name): the slot
        # stops after acme.challenge_attempts (3) in a row instead of backing off forever
        assert s["stopped"] and "dns-01 challenge" in s["stopped"]
        assert "3 attempts in a row" in s["stopped"]
        assert codes[:2] == [0, 0] and codes[-1] == 2 and s["failures"] == 2
        n = len(proxy.calls(NEW_ORDER))
        assert main(["run", "--config", str(cfg)]) == 2  # stays stopped: no new order
        assert len(proxy.calls(NEW_ORDER)) == n
        capsys.readouterr()
        main(["status", "--no-observe", "--config", str(cfg)])
        assert "stopped" in capsys.readouterr().out
        assert presented_spki(postfix_lab) == before  # nothing installed
        proxy.rules.rewrite.clear()
        assert main(["run", "--resume", "--wait", "--config", str(cfg)]) == 0
    finally:
        mon.stop()
    s = slot(cfg, host)
    assert s["stopped"] is None and s["phase"] in ("active", "retiring")
    assert presented_spki(postfix_lab) != before
    assert mon.violations == []


def test_bad_nonces_during_a_rollover_are_retried_and_it_completes(
        dns_lab: DnsLab, postfix_lab: PostfixLab, tmp_path: Path) -> None:
    # the ACME library logs each badNonce it retries (on its own logger: main() resets root)
    retried: list[str] = []
    acme_log = logging.getLogger("acme.client")
    catch = logging.Handler(logging.DEBUG)
    catch.emit = lambda r: retried.append(r.getMessage()) if "badNonce" in r.getMessage() \
        else None  # type: ignore[method-assign]
    acme_log.addHandler(catch)
    acme_log.setLevel(logging.DEBUG)
    # Pebble itself rejects 50 % of good nonces (PEBBLE_WFE_NONCEREJECT): the ACME library
    # retries a badNonce once, two in a row fail the attempt, the engine backs off and orders again
    flaky = PebbleLab(f"{dns_lab.primary.address}:53", dns_lab.net, port=14007,
                      management_port=15007, nonce_reject=50)
    flaky.start()
    try:
        host, cfg = setup(tmp_path, dns_lab, flaky, postfix_lab)
        configure(cfg)
        mon = Monitor(dns_lab, postfix_lab, host, before_dane=True)
        mon.start()
        try:
            assert main(["run", "--wait", "--config", str(cfg)]) == 0
            first = presented_spki(postfix_lab)
            assert main(["run", "--roll", "--wait", "--config", str(cfg)]) == 0
        finally:
            mon.stop()
    finally:
        flaky.close()
        acme_log.removeHandler(catch)
        acme_log.setLevel(logging.NOTSET)
    s = slot(cfg, host)
    assert s["phase"] in ("active", "retiring") and s["stopped"] is None
    current = key_of(s, "current")
    assert current and presented_spki(postfix_lab) == current["spki_sha256"] != first
    assert mon.violations == []
    assert mon.samples > 10
    assert len(retried) >= 3  # Pebble did reject nonces (about half of ~40 requests)
