"""The operations examples are usable as shipped: the systemd units pass `systemd-analyze
verify` (with the binary path pointed at one that exists here), the timer is hourly with a
random delay, and the command lines of the service and of the cron entry parse with rollover's
own command line (global options before the command)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from rollover.cli.main import build_parser, hoist

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def unit(name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (EXAMPLES / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def parses(argv: list[str]) -> None:
    argv = hoist(argv)
    build_parser(argv).parse_args(argv)  # raises on a bad command line


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_verify(tmp_path: Path) -> None:
    for name in ("rollover.service", "rollover.timer"):
        text = (EXAMPLES / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("/usr/local/bin/rollover", "/bin/true"))
    proc = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "rollover.service"),
                           str(tmp_path / "rollover.timer")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Unknown" not in proc.stderr, proc.stderr


def test_service_is_hardened_and_its_command_parses() -> None:
    svc = unit("rollover.service")
    assert svc["ProtectSystem"] == ["strict"] and svc["NoNewPrivileges"] == ["yes"]
    assert "/etc/postfix/tls" in svc["ReadWritePaths"]
    assert svc["StateDirectory"] == ["rollover"] and svc["UMask"] == ["0077"]
    parses(shlex.split(svc["ExecStart"][0])[1:])
    timer = unit("rollover.timer")
    assert timer["OnCalendar"] == ["hourly"] and timer["RandomizedDelaySec"]


def test_cron_line_parses() -> None:
    lines = [ln for ln in (EXAMPLES / "cron").read_text().splitlines()
             if ln.strip() and not ln.startswith("#") and "=" not in ln.split()[0]]
    assert len(lines) == 1
    fields = lines[0].split(None, 6)
    assert fields[5] == "root"
    argv = shlex.split(fields[6])
    assert argv[:2] == ["flock", "-n"]
    assert argv[3] == "/usr/local/bin/rollover"
    parses(argv[4:])
