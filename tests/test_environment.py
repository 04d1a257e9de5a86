"""Commands touch the world only through the Environment `main(argv, env)` hands them: its
streams, its clock, its variables (HTTPie's rule). Nothing reaches the process's own streams."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import pytest

from rollover.cli.main import main
from rollover.core.machine import transitions_table
from rollover.environment import Environment
from rollover.errors import ExitStatus

REPO = Path(__file__).resolve().parent.parent
Capture = pytest.CaptureFixture[str]


def _env(**environ: str) -> Environment:
    return Environment(stdout=io.StringIO(), stderr=io.StringIO(), environ=environ)


def _text(stream: object) -> str:
    assert isinstance(stream, io.StringIO)
    return stream.getvalue()


def test_output_goes_to_the_environments_stdout(capsys: Capture) -> None:
    env = _env()
    assert main(["transitions"], env) == ExitStatus.OK
    assert _text(env.stdout) == transitions_table() + "\n"
    assert capsys.readouterr() == ("", "")


def test_errors_and_log_lines_go_to_the_environments_stderr(tmp_path: Path,
                                                             capsys: Capture) -> None:
    env = _env()
    status = main(["tlsa", str(tmp_path / "missing.pem")], env)
    assert status != ExitStatus.OK
    err = _text(env.stderr)
    assert err.startswith("rollover: error: ") and "missing.pem" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert capsys.readouterr() == ("", "")


def test_the_config_path_comes_from_the_environments_variables(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: Capture) -> None:
    ours, process = tmp_path / "ours.yaml", tmp_path / "process.yaml"
    monkeypatch.setenv("ROLLOVER_CONFIG", str(process))
    env = _env(ROLLOVER_CONFIG=str(ours))
    assert main(["plan"], env) == ExitStatus.CONFIG
    err = _text(env.stderr)
    assert "ours.yaml" in err and "process.yaml" not in err
    assert capsys.readouterr() == ("", "")


def test_usage_errors_go_to_the_environments_stderr(capsys: Capture) -> None:
    env = _env()
    assert main(["no-such-command"], env) == ExitStatus.USAGE
    assert "invalid choice" in _text(env.stderr)
    assert capsys.readouterr() == ("", "")


FORBIDDEN_NAMES = {("sys", "stdout"), ("sys", "stderr"), ("os", "environ")}


def test_no_command_module_reaches_past_the_environment() -> None:
    """The rule held for every command module: no print() to the process streams, no
    os.environ, no SystemClock of its own (--help/--version are argparse's, in main.py)."""
    wrong = []
    for path in sorted((REPO / "rollover" / "cli").glob("*.py")):
        if path.name == "main.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    (node.value.id, node.attr) in FORBIDDEN_NAMES:
                wrong.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id in ("print", "SystemClock"):
                wrong.append(f"{path.name}:{node.lineno} {node.func.id}()")
    assert wrong == []
