from __future__ import annotations

import pytest

from rollover import __version__
from rollover.cli.main import main
from rollover.errors import ExitStatus


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_unknown_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == ExitStatus.USAGE
    err = capsys.readouterr().err
    assert "invalid choice" in err
    assert "Traceback" not in err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == ExitStatus.USAGE
    assert "COMMAND" in capsys.readouterr().err
