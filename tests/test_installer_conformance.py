"""Every installer passes the installer conformance suite (tests/installers/conformance.py):
Postfix and Dovecot against the lab's real servers (what they present is checked on the wire),
Exim's and the command installer's file rules in a temp directory (Exim on the wire:
tests/test_install_exim.py)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from installers.conformance import InstallerConformance, Target

from rollover.hooks.files import previous_path
from rollover.model import SlotId

from lab.dovecot import DovecotLab
from lab.pki import write_private
from lab.postfix import PostfixLab
from lab.proc import LabError, wait_for
from lab.tlsclient import served_spki


def restored(chain_files: dict[str, Path], directory: Path) -> Iterator[None]:
    """Put a lab server's files back as they were (and nothing else left in its directory)."""
    originals = {a: p.read_bytes() for a, p in chain_files.items()}
    keep = set(chain_files.values())
    try:
        yield
    finally:
        for p in directory.iterdir():
            if p not in keep:
                p.unlink()
        for alg, data in originals.items():
            path = chain_files[alg]
            if not path.exists() or path.read_bytes() != data or \
                    stat.S_IMODE(path.stat().st_mode) != 0o600:
                write_private(path, data)
            previous_path(path).unlink(missing_ok=True)


def presents_on(address: str, starttls: str | None) -> object:
    def presents(slot: SlotId, spki: str) -> bool:
        try:
            wait_for(lambda: served_spki(address, slot.port, slot.algorithm.value,
                                         starttls) == spki, 15, f"{address} to present {spki}",
                     interval=0.1)
        except LabError:
            return False
        return True
    return presents


@pytest.mark.lab
class TestPostfixConformance(InstallerConformance):
    @pytest.fixture
    def target(self, postfix_lab: PostfixLab) -> Iterator[Target]:
        it = restored(postfix_lab.chain_files, postfix_lab.tls_dir)
        next(it)
        yield Target("postfix", postfix_lab.tls_dir,
                     {"file_name": "{algorithm}.pem",
                      "reload_command": postfix_lab.reload_command},
                     presents=presents_on(postfix_lab.address, "smtp"))  # type: ignore[arg-type]
        next(it, None)
        postfix_lab.reload()


@pytest.mark.lab
class TestDovecotConformance(InstallerConformance):
    @pytest.fixture
    def target(self, dovecot_lab: DovecotLab) -> Iterator[Target]:
        it = restored(dovecot_lab.chain_files, dovecot_lab.tls_dir)
        next(it)
        yield Target("dovecot", dovecot_lab.tls_dir,
                     {"file_name": "{algorithm}.pem",
                      "reload_command": dovecot_lab.reload_command},
                     presents=presents_on(dovecot_lab.address, "imap"),  # type: ignore[arg-type]
                     host=dovecot_lab.hostname, port=143)
        next(it, None)
        dovecot_lab.reload()


class TestEximFilesConformance(InstallerConformance):
    @pytest.fixture
    def target(self, tmp_path: Path) -> Target:
        directory = tmp_path / "exim"
        directory.mkdir()
        # the file rules only: no Exim here, so no settle wait (tests/test_install_exim.py)
        return Target("exim", directory, {"file_mode": "0600", "settle": 0},
                      failing={"reload_command": ["false"]})


class TestEximSeparateFilesConformance(InstallerConformance):
    @pytest.fixture
    def target(self, tmp_path: Path) -> Target:
        directory = tmp_path / "exim"
        directory.mkdir()
        return Target("exim", directory,
                      {"file_mode": "0600", "settle": 0, "key_name": "{host}.{algorithm}.key",
                       "chain_name": "{host}.{algorithm}.crt"})


class TestCommandConformance(InstallerConformance):
    @pytest.fixture
    def target(self, tmp_path: Path) -> Target:
        directory = tmp_path / "cmd"
        directory.mkdir()
        return Target("command", directory, {"command": ["true"]},
                      failing={"command": ["sh", "-c", "echo upload refused >&2; exit 3"]})


def test_the_suite_covers_every_registered_installer() -> None:
    from rollover.config import registry

    covered = {"postfix", "dovecot", "exim", "command"}
    assert set(registry.names("installer")) <= covered, "an installer without conformance"
    assert os.path.exists(Path(__file__).parent / "installers" / "conformance.py")
