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


HEAVY = ("rollover.engine.loop", "rollover.edges.observe", "rollover.edges.acme_client",
         "rollover.config.load", "acme", "requests")


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["certbot-hook"], ["run", "--help"],
                                  ["transitions"]])
def test_quick_commands_do_not_import_the_engine(argv: list[str]) -> None:
    """Cron and certbot call these many times: they must not pay for the engine, ACME or the
    config loader (a fresh interpreter, so nothing was imported before)."""
    import subprocess
    import sys

    code = (f"import sys\nfrom rollover.cli.main import main\nmain({argv!r})\n"
            "print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, timeout=60).stdout.split("\n")[-2].split()
    heavy = set(HEAVY) - ({"rollover.config.load"} if argv[0] == "run" else set())
    assert heavy.isdisjoint(out), sorted(heavy & set(out))
