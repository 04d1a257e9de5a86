"""Third-party providers: the example distribution (examples/third-party-provider: one module,
one entry point) passes the conformance suite in-process, and, installed with pip into a
temporary venv next to rollover, is found by its entry point, checks its own config section and
writes records through a config that names `type: jsonfile`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterable
from pathlib import Path

import pytest
from providers.conformance import R1, ProviderConformance, Target, fresh_owner

from rollover.model import RRset

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "third-party-provider"
sys.path.insert(0, str(EXAMPLE))
from rollover_jsonfile import JsonFileProvider  # noqa: E402

ZONE = "example.test."


class TestJsonFileConformance(ProviderConformance):
    @pytest.fixture
    def target(self, tmp_path: Path) -> Target:
        path = tmp_path / "records.json"
        provider = JsonFileProvider("mine", path)

        def served(owner: str, rtype: str) -> RRset:
            entry = json.loads(path.read_text()).get(f"{owner} {rtype}") if path.exists() \
                else None
            if not entry:
                return RRset(owner, rtype, None, frozenset())
            return RRset(owner, rtype, entry["ttl"], frozenset(entry["rdatas"]))

        def meddle(owner: str, rtype: str, ttl: int, rdatas: Iterable[str]) -> None:
            data = json.loads(path.read_text()) if path.exists() else {}
            entry = data.setdefault(f"{owner} {rtype}", {"ttl": ttl, "rdatas": []})
            entry["rdatas"] = sorted(set(entry["rdatas"]) | set(rdatas))
            path.write_text(json.dumps(data))

        return Target(provider=provider, zone=ZONE, owner=fresh_owner(ZONE), served=served,
                      meddle=meddle)


SCRIPT = """
import json, sys
from pathlib import Path
from rollover.config import registry
from rollover.config.load import load_config
from rollover.errors import ConfigError
from rollover.providers.base import Change
from rollover.engine.wiring import build_provider

config = load_config(sys.argv[1], resolv_conf=Path("/nonexistent"))
provider = build_provider(config, "mine")
provider.apply(Change("example.test.", "_25._tcp.mail.example.test.", "TLSA", 300,
                      add=frozenset({sys.argv[2]})))
try:
    load_config(sys.argv[3], resolv_conf=Path("/nonexistent"))
    bad = None
except ConfigError as exc:
    bad = str(exc)
print(json.dumps({"names": registry.names("provider"), "type": type(provider).__module__,
                  "read": sorted(provider.read("example.test.", "_25._tcp.mail.example.test.",
                                               "TLSA").rdatas),
                  "bad": bad}))
"""


@pytest.mark.slow
def test_installed_distribution_is_used_through_its_entry_point(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    # The venv sees the interpreter's site-packages for rollover's dependencies; rollover itself
    # and the example are installed into it (they shadow anything installed there).
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    src = tmp_path / "rollover-src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.egg-info", "build", "tests", "examples"))
    example = tmp_path / "example"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("__pycache__"))
    for what in (src, example):
        proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps",
                               "--no-build-isolation", "--disable-pip-version-check", str(what)],
                              capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    records = tmp_path / "records.json"
    good = tmp_path / "good.yaml"
    good.write_text(f"resolver: [127.0.0.1]\nproviders:\n  mine: {{type: jsonfile, path: "
                    f"{records}}}\nendpoints: [{{host: mail.example.test, provider: mine}}]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("resolver: [127.0.0.1]\nproviders:\n  mine:\n    type: jsonfile\n"
                   "    paht: x\nendpoints: [{host: mail.example.test, provider: mine}]\n")
    proc = subprocess.run([str(python), "-c", SCRIPT, str(good), R1, str(bad)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert "jsonfile" in out["names"] and "rfc2136" in out["names"]
    assert out["type"] == "rollover_jsonfile"
    assert out["read"] == [R1]
    assert json.loads(records.read_text())["_25._tcp.mail.example.test. TLSA"]["rdatas"] == [R1]
    # the plugin's own schema, reported with FILE:LINE by the generic loader
    assert f"{bad}:3: providers.mine.path: missing (required)" in out["bad"]
    assert f"{bad}:5: providers.mine.paht: unknown key (did you mean 'path'?)" in out["bad"]
