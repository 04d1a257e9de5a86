"""`status` metrics from the engine's own work, against the lab (BIND x2 + Knot, Pebble,
Postfix): the chain match per address x algorithm at the last post-flight probe, and the time of
the last `run` that finished without error -- in the Prometheus textfile and `status --json`.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rollover.cli.main import main
from rollover.clock import SystemClock, parse_time
from rollover.errors import ExitStatus

from lab.configs import write_full_config
from lab.dns import DnsLab
from lab.pebble import PebbleLab
from lab.postfix import PostfixLab
from schema_check import validate

pytestmark = pytest.mark.lab
ALGS = ("ecdsa-p256", "rsa2048")


def _status(cfg: Path, prom: Path, capsys: pytest.CaptureFixture[str]
            ) -> tuple[dict[str, Any], dict[str, list[tuple[dict[str, str], float]]]]:
    capsys.readouterr()
    code = main(["status", "--json", "--no-observe", "--prometheus", str(prom),
                 "--config", str(cfg)])
    doc = json.loads(capsys.readouterr().out)
    validate(doc, "status.schema.json")
    assert code in (ExitStatus.OK, ExitStatus.WARNING, ExitStatus.ERROR)
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(prom.read_text()):
        for s in family.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), s.value))
    return doc, samples


def test_chain_match_per_address_and_last_success(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    host = f"mx{secrets.token_hex(3)}.example.test"
    dns_lab.update(host, "A", dns_lab.ttl, [postfix_lab.address])
    dns_lab.wait_all(host, "A", [postfix_lab.address])
    cfg = write_full_config(tmp_path, dns_lab, pebble_lab, postfix_lab, host, algorithms=ALGS,
                            policy={"retire_grace": "2s", "key_lifetime": "60d",
                                    "renew_before": "1d"})
    prom = tmp_path / "rollover.prom"
    try:
        # before any run: no probe, no success; the global gauge says "never" (0)
        doc, samples = _status(cfg, prom, capsys)
        assert all(s["probes"] == [] and s["last_success"] is None for s in doc["slots"])
        assert "rollover_slot_chain_match" not in samples
        assert samples["rollover_last_success_timestamp_seconds"] == [({}, 0.0)]

        started = SystemClock().now()
        assert main(["run", "--wait", "--config", str(cfg)]) == 0
        doc, samples = _status(cfg, prom, capsys)
        slots = {s["slot"]: s for s in doc["slots"]}
        assert set(slots) == {f"{host}:25:{a}" for a in ALGS}
        match = {(lab["slot"], lab["address"], lab["algorithm"]): v
                 for lab, v in samples["rollover_slot_chain_match"]}
        success = {lab["slot"]: v for lab, v in
                   samples["rollover_slot_last_success_timestamp_seconds"]}
        for alg in ALGS:
            key = f"{host}:25:{alg}"
            s = slots[key]
            assert s["phase"] == "active"
            (probe,) = s["probes"]  # the post-flight probe of the one address
            assert probe["address"] == postfix_lab.address
            assert probe["matched"] is True and probe["error"] is None
            assert parse_time(probe["at"]) >= started
            assert match[(key, postfix_lab.address, alg)] == 1
            ended = parse_time(s["last_success"])
            assert ended >= parse_time(probe["at"])
            assert success[key] == pytest.approx(ended.timestamp())
        (overall,) = samples["rollover_last_success_timestamp_seconds"]
        assert overall[1] == pytest.approx(min(success.values()))
        first = dict(success)

        # a run that ends with an error (ns1, the primary the updates go to, stops answering)
        # leaves the last success where it was
        dns_lab.pause(dns_lab.primary)
        try:
            code = main(["run", "--roll", "--config", str(cfg)])
        finally:
            dns_lab.resume(dns_lab.primary)
        assert code != 0
        doc, samples = _status(cfg, prom, capsys)
        again = {lab["slot"]: v for lab, v in
                 samples["rollover_slot_last_success_timestamp_seconds"]}
        assert again == first and all(v > 0 for v in again.values())
    finally:
        dns_lab.delete(host, "A")
