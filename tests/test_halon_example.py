"""examples/halon-install.sh as a `type: command` installer (Halon itself is not in the lab: a
recording `halonctl` stands in for it, so this proves the script's file handling and that a
failed reload restores, not Halon's behaviour)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rollover.errors import InstallError
from rollover.hooks.command import CommandInstaller
from rollover.model import Algorithm, SlotId

import certgen

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "halon-install.sh"
SLOT = SlotId("mail.example.test", 25, Algorithm.ECDSA_P256)


def setup(tmp_path: Path, exit_code: int) -> tuple[CommandInstaller, Path, Path]:
    bin_dir, pki, files = tmp_path / "bin", tmp_path / "pki", tmp_path / "files"
    for d in (bin_dir, pki, files):
        d.mkdir()
    calls = tmp_path / "calls"
    fake = bin_dir / "halonctl"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nexit {exit_code}\n")
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HALON_SMTPD_PKI_DIR": str(pki)}
    inst = CommandInstaller(files, [str(SCRIPT)], key_name="{host}.{algorithm}.key",
                            chain_name="{host}.{algorithm}.crt", base_env=env)
    return inst, pki, calls


def test_halon_example_copies_key_and_chain_and_reloads(tmp_path: Path) -> None:
    inst, pki, calls = setup(tmp_path, 0)
    chain = certgen.make_chain(2)
    inst.install(SLOT, chain.leaf.key_pem(), certgen.pem(*chain.served()))
    key = pki / "mailexampletestecdsap256.key"
    assert key.read_bytes() == chain.leaf.key_pem()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (pki / "mailexampletestecdsap256.crt").read_bytes() == certgen.pem(*chain.served())
    assert calls.read_text() == "config reload\n"


def test_halon_example_failing_reload_restores_the_previous_files(tmp_path: Path) -> None:
    inst, _, _ = setup(tmp_path, 0)
    first = certgen.make_chain(2)
    inst.install(SLOT, first.leaf.key_pem(), certgen.pem(*first.served()))
    (tmp_path / "x").mkdir()
    failing, pki2, _ = setup(tmp_path / "x", 1)
    failing.directory = inst.directory
    second = certgen.make_chain(2)
    with pytest.raises(InstallError, match="failed"):
        failing.install(SLOT, second.leaf.key_pem(), certgen.pem(*second.served()))
    assert inst.key_path(SLOT).read_bytes() == first.leaf.key_pem()
    # the script ran again after the restore: Halon's copy is the previous key again
    assert (pki2 / "mailexampletestecdsap256.key").read_bytes() == first.leaf.key_pem()
