"""Logging and global options: `rollover --config X status` (options before the command), one
warning per advice however many endpoints share it, `--log-format json`, `--syslog` (facility
mail, to a real datagram socket), `--quiet`."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from rollover import logsetup
from rollover.cli.main import hoist, main


def config(tmp_path: Path, endpoints: int = 5, ttl: int = 3) -> Path:
    secret = tmp_path / "tsig.key"
    secret.write_text("c2VjcmV0LWZvci10ZXN0cw==\n")
    secret.chmod(0o600)
    eps = "".join(f"""\
  - host: mx{n}.example.test
    provider: p
    ttl: {ttl}
""" for n in range(endpoints))
    cfg = tmp_path / "rollover.yaml"
    cfg.write_text(f"""\
state_dir: {tmp_path / "state"}
resolver: [127.0.0.1]
providers:
  p: {{type: rfc2136, server: 127.0.0.1, tsig_key_name: k, tsig_secret_file: {secret}}}
endpoints:
{eps}""")
    return cfg


def test_options_before_the_command_reach_it(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert hoist(["-v", "--config", "X", "--log-format", "json", "run", "--wait"]) == \
        ["-v", "--log-format", "json", "run", "--config", "X", "--wait"]
    missing = tmp_path / "nope.yaml"
    assert main(["--config", str(missing), "status", "--no-observe"]) == 78
    err = capsys.readouterr().err
    assert str(missing) in err and "invalid choice" not in err


def test_one_warning_per_advice_for_a_hundred_endpoints(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path, endpoints=100)
    main(["--config", str(cfg), "status", "--no-observe"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "TTL 3" in ln]
    assert len(lines) == 1, lines
    assert "endpoints[*].ttl" in lines[0] and "(and 99 more, lines" in lines[0]


def test_json_log_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path, endpoints=2)
    main(["--log-format", "json", "--config", str(cfg), "status", "--no-observe"])
    lines = capsys.readouterr().err.splitlines()
    records = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert records and records[0]["level"] == "warning" and "TTL 3" in records[0]["message"]
    assert records[0]["time"].endswith("+00:00")


def test_quiet_hides_advice_and_syslog_gets_it_with_facility_mail(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "log.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setattr(logsetup, "SYSLOG_SOCKET", str(path))
    try:
        cfg = config(tmp_path, endpoints=1)
        main(["--quiet", "--syslog", "--config", str(cfg), "status", "--no-observe"])
        assert "TTL 3" not in capsys.readouterr().err
        data = sock.recv(4096).decode()
    finally:
        sock.close()
    # <PRI> = facility mail (2) * 8 + warning (4)
    assert data.startswith("<20>rollover: warning: ") and "TTL 3" in data


def test_syslog_without_a_socket_warns_once_and_goes_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logsetup, "SYSLOG_SOCKET", str(tmp_path / "absent.sock"))
    cfg = config(tmp_path, endpoints=1, ttl=1800)
    code = main(["--syslog", "--config", str(cfg), "status", "--no-observe"])
    err = capsys.readouterr().err
    assert err.count("--syslog: cannot open") == 1 and code in (0, 1, 2, 3)
