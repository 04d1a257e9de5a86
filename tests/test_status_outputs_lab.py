"""`rollover status` for monitoring systems, against the lab: the JSON validates against
schemas/status.schema.json, the Nagios text carries perfdata and honours -w/--critical, the
Prometheus textfile parses with prometheus_client's own parser and says what the slot waits for.
A frozen Knot secondary keeps the slot propagating (what an operator would be paged about)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rollover.cli.main import main
from rollover.errors import ExitStatus

from lab.configs import write_config
from lab.dns import DnsLab
from schema_check import validate

pytestmark = pytest.mark.lab


def _samples(path: Path) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def test_status_json_nagios_and_prometheus_while_a_secondary_lags(
        dns_lab: DnsLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = f"m{secrets.token_hex(4)}.example.test"
    cfg = str(write_config(tmp_path, dns_lab, host))
    prom = tmp_path / "textfile" / "rollover.prom"
    prom.parent.mkdir()
    dns_lab.freeze_knot()
    try:
        assert main(["run", "--wait", "--max-wait", "4", "--config", cfg]) == 0
        capsys.readouterr()
        code = main(["status", "--json", "--prometheus", str(prom), "--config", cfg])
        doc = json.loads(capsys.readouterr().out)
        assert code == ExitStatus.OK
        validate(doc, "status.schema.json")
        (slot,) = [s for s in doc["slots"] if s["slot"].startswith(host)]
        assert slot["phase"] == "propagating"

        samples = _samples(prom)
        key = slot["slot"]
        phases = {lab["phase"]: v for lab, v in samples["rollover_slot_phase"]
                  if lab["slot"] == key}
        assert phases["propagating"] == 1 and sum(phases.values()) == 1
        served = {lab["address"]: v for lab, v in samples["rollover_slot_records"]
                  if lab["slot"] == key}
        knot = dns_lab.knot_secondary.address
        assert served[knot] == 0 and served[dns_lab.primary.address] >= 1
        assert [v for lab, v in samples["rollover_slot_error"] if lab["slot"] == key] == [0]
        assert samples["rollover_status_timestamp_seconds"][0][1] > 0
        assert not list(prom.parent.glob("*.tmp*"))  # written atomically, nothing left over

        code = main(["status", "--nagios", "--config", cfg])
        out = capsys.readouterr().out
        assert code == ExitStatus.WARNING, out
        head, *details = out.splitlines()
        assert head.startswith("ROLLOVER WARNING - ") and " | " in head
        perf = head.split(" | ", 1)[1]
        assert f"'{key}_records'=" in perf and f"'{key}_seconds_waiting'=" in perf
        assert any(knot in line for line in details) or knot in head
    finally:
        dns_lab.thaw_knot()


def test_status_nagios_bad_config_is_unknown(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "rollover.yaml"
    bad.write_text("endpoints: [\n")
    code = main(["status", "--nagios", "--no-observe", "--config", str(bad)])
    out = capsys.readouterr().out
    assert code == ExitStatus.UNKNOWN
    assert out.startswith("ROLLOVER UNKNOWN - ") and len(out.splitlines()) == 1


def test_prometheus_into_a_missing_directory_is_one_line(
        tmp_path: Path, dns_lab: DnsLab, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(write_config(tmp_path, dns_lab, f"m{secrets.token_hex(4)}.example.test"))
    code = main(["status", "--no-observe", "--prometheus", str(tmp_path / "no" / "x.prom"),
                 "--config", cfg])
    err = capsys.readouterr().err
    assert code != 0 and "does not exist" in err and "Traceback" not in err
