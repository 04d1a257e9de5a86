"""Errors that retrying cannot heal stop the slot (exit 2, status says why, no retry on every
run) and it resumes when the configuration changes. Real Pebble requiring an ACME external
account binding, real BIND/Knot, real Postfix."""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path

import pytest
import yaml
from test_rollover_lab import setup

from rollover.cli.main import main
from rollover.errors import ExitStatus

from lab.dns import DnsLab
from lab.pebble import PebbleLab
from lab.postfix import PostfixLab

pytestmark = pytest.mark.lab


def _slot(cfg: Path, host: str) -> dict:
    doc = json.loads((cfg.parent / "state" / "state.json").read_text())
    return doc["slots"][f"{host}:25:ecdsa-p256"]


def test_an_account_that_needs_eab_stops_the_slot_until_the_config_gives_it(
        dns_lab: DnsLab, postfix_lab: PostfixLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    hmac = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    pebble = PebbleLab(f"{dns_lab.primary.address}:53", port=14200, management_port=15200,
                       eab_keys={"kid-1": hmac})
    pebble.start()
    try:
        host, cfg = setup(tmp_path, dns_lab, pebble, postfix_lab)
        assert main(["run", "--wait", "--config", str(cfg)]) == ExitStatus.ERROR
        out = capsys.readouterr().out
        s = _slot(cfg, host)
        assert s["stopped"] and "requires external account binding" in s["stopped"]
        assert "stopped: " in out and "requires external account binding" in out
        # cron runs again: still stopped, said again, and no new order was tried
        assert main(["run", "--config", str(cfg)]) == ExitStatus.ERROR
        assert _slot(cfg, host)["stopped"] == s["stopped"]
        assert _slot(cfg, host)["failures"] == s["failures"]
        assert main(["status", "--no-observe", "--config", str(cfg)]) == ExitStatus.ERROR
        assert "stopped: " in capsys.readouterr().out
        # the operator adds the binding: the changed configuration resumes the slot
        key_file = tmp_path / "eab.key"
        key_file.write_text(hmac + "\n")
        os.chmod(key_file, 0o600)
        doc = yaml.safe_load(cfg.read_text())
        doc["acme"]["eab"] = {"kid": "kid-1", "hmac_key_file": str(key_file)}
        cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
        assert main(["run", "--wait", "--config", str(cfg)]) == ExitStatus.OK
        s = _slot(cfg, host)
        assert s["phase"] in ("active", "retiring") and s["stopped"] is None
    finally:
        pebble.close()
