"""The installer conformance suite: every installer must pass it by subclassing.

    class TestMyInstallerConformance(InstallerConformance):
        @pytest.fixture
        def target(self, tmp_path) -> Target:
            return Target(type_name="mine", directory=tmp_path, options={...},
                          failing={"reload_command": ["false"]}, served=None)

The installer is built the way the config builds it: its registered plugin checks `options`
(plus `directory`) and `from_config` makes it. `failing` are the options that make its command
fail (a reload that exits non-zero). `presents(slot, spki)` (optional) asks the real server, not
the installer, whether it presents that key (3 1 1 hex), waiting a little for a server whose
reload is asynchronous; with it, install, rollback and a failed reload are checked on the wire.
`slots` are the two slots (ECDSA P-256 and RSA 2048) of one endpoint.

What every installer must do (DESIGN "Certificates and installation", issue 10):
- write atomically: a reader never sees a half-written or empty file;
- keep the previous content (FILE.previous, 0600) for rollback;
- rollback restores every file byte for byte (and the server presents the old key again);
- a failing reload restores the previous files byte for byte and says why in one line, without
  key material;
- a key is never world-readable, not even for a moment, whatever the umask;
- file names of two slots never collide: the config that would make them collide is refused.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from rollover.config import registry
from rollover.config.load import load_config
from rollover.dane import tlsa
from rollover.errors import ConfigError, InstallError
from rollover.hooks.files import previous_path
from rollover.model import Algorithm, SlotId

import certgen

HOST = "mail.example.test"


@dataclass
class Target:
    type_name: str
    directory: Path
    options: Mapping[str, Any] = field(default_factory=dict)
    failing: Mapping[str, Any] = field(default_factory=lambda: {"reload_command": ["false"]})
    presents: Callable[[SlotId, str], bool] | None = None
    host: str = HOST
    port: int = 25

    @property
    def slots(self) -> list[SlotId]:
        return [SlotId(self.host, self.port, Algorithm.ECDSA_P256),
                SlotId(self.host, self.port, Algorithm.RSA2048)]


@dataclass(frozen=True)
class Material:
    key: bytes
    chain: bytes
    spki: str


def material(slot: SlotId, host: str = HOST) -> Material:
    kind = "rsa2048" if slot.algorithm.is_rsa else "p256"
    chain = certgen.make_chain(2, key=certgen.new_key(kind), sans=(host,))
    leaf = x509.load_pem_x509_certificate(certgen.pem(chain.leaf.cert))
    return Material(chain.leaf.key_pem(), certgen.pem(*chain.served()),
                    tlsa.spki_sha256_hex(leaf))


def build(target: Target, **overrides: Any) -> Any:
    """The installer as the config would build it (its plugin's schema, then from_config)."""
    plugin = registry.find("installer", target.type_name)
    options = {"directory": str(target.directory), **target.options, **overrides}
    ctx = registry.ParseContext(name=target.type_name, base=target.directory,
                                secret_file=registry.no_secret_files)
    parsed = registry.parse_mapping(plugin, options, ctx, InstallError)
    return plugin.from_config(target.type_name, parsed)


def snapshot(paths: list[Path]) -> dict[Path, bytes | None]:
    return {p: (p.read_bytes() if p.exists() else None) for p in paths}


class InstallerConformance:
    @pytest.fixture
    def target(self) -> Target:
        raise NotImplementedError

    @pytest.fixture
    def installed(self, target: Target) -> Iterator[tuple[Any, dict[SlotId, Material]]]:
        """Both slots installed once (the 'old' certificates of the tests)."""
        inst = build(target)
        first = {s: material(s, target.host) for s in target.slots}
        for slot, m in first.items():
            inst.install(slot, m.key, m.chain)
        yield inst, first

    # -- atomic write ---------------------------------------------------------------------

    def test_a_reader_never_sees_a_partial_file(
            self, target: Target, installed: tuple[Any, dict[SlotId, Material]]) -> None:
        inst, _ = installed
        slot = target.slots[0]
        paths = inst.files_for(slot)
        contents = [set(snapshot(paths).values())]
        news = [material(slot, target.host) for _ in range(4)]
        seen: list[bytes] = []
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                for p in paths:
                    with contextlib.suppress(FileNotFoundError):
                        seen.append(p.read_bytes())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            for m in news:
                before = {p: os.stat(p).st_ino for p in paths}
                inst.install(slot, m.key, m.chain)
                contents.append(set(snapshot(paths).values()))
                # a new inode: the file was renamed into place, not rewritten in place
                assert all(os.stat(p).st_ino != before[p] for p in paths)
        finally:
            stop.set()
            reader.join(10)
        whole = set().union(*contents)
        assert seen and all(data in whole for data in seen), "a reader saw a partial file"
        assert not [p for p in target.directory.iterdir() if ".tmp" in p.name]

    # -- previous kept, rollback ----------------------------------------------------------

    def test_previous_files_are_kept_private(
            self, target: Target, installed: tuple[Any, dict[SlotId, Material]]) -> None:
        inst, _ = installed
        slot = target.slots[1]
        paths = inst.files_for(slot)
        old = snapshot(paths)
        m = material(slot, target.host)
        inst.install(slot, m.key, m.chain)
        for p in paths:
            prev = previous_path(p)
            assert prev.read_bytes() == old[p]
            assert stat.S_IMODE(prev.stat().st_mode) == 0o600

    def test_rollback_restores_byte_for_byte(
            self, target: Target, installed: tuple[Any, dict[SlotId, Material]]) -> None:
        inst, first = installed
        for slot in target.slots:
            paths = inst.files_for(slot)
            old = snapshot(paths)
            modes = {p: stat.S_IMODE(p.stat().st_mode) for p in paths}
            m = material(slot, target.host)
            inst.install(slot, m.key, m.chain)
            assert snapshot(paths) != old
            if target.presents is not None:
                assert target.presents(slot, m.spki)
            inst.rollback(slot)
            assert snapshot(paths) == old
            assert {p: stat.S_IMODE(p.stat().st_mode) for p in paths} == modes
            if target.presents is not None:
                assert target.presents(slot, first[slot].spki)

    def test_failing_reload_restores_byte_for_byte_in_one_line(
            self, target: Target, installed: tuple[Any, dict[SlotId, Material]]) -> None:
        _, first = installed
        slot = target.slots[0]
        failing = build(target, **target.failing)
        paths = failing.files_for(slot)
        old = snapshot(paths)
        m = material(slot, target.host)
        with pytest.raises(InstallError) as info:
            failing.install(slot, m.key, m.chain)
        message = str(info.value)
        assert "\n" not in message and "failed" in message
        assert "PRIVATE KEY" not in message and m.key.decode() not in message
        assert snapshot(paths) == old
        if target.presents is not None:
            assert target.presents(slot, first[slot].spki)

    # -- modes -------------------------------------------------------------------------------

    def test_a_key_is_never_world_readable_whatever_the_umask(self, target: Target) -> None:
        inst = build(target)
        slot = target.slots[0]
        modes: list[int] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                for p in target.directory.iterdir():
                    with contextlib.suppress(FileNotFoundError):
                        modes.append(stat.S_IMODE(os.lstat(p).st_mode))

        old_umask = os.umask(0)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            for _ in range(3):
                m = material(slot, target.host)
                inst.install(slot, m.key, m.chain)
        finally:
            stop.set()
            watcher.join(10)
            os.umask(old_umask)
        files = [p for p in target.directory.iterdir() if p.is_file()]
        assert files and modes
        assert all(stat.S_IMODE(p.stat().st_mode) & 0o007 == 0 for p in files)
        assert all(mode & 0o007 == 0 for mode in modes), sorted(set(modes))

    def test_a_loosened_key_file_is_refused_and_left_alone(
            self, target: Target, installed: tuple[Any, dict[SlotId, Material]]) -> None:
        inst, _ = installed
        slot = target.slots[0]
        path = inst.files_for(slot)[0]
        path.chmod(0o644)
        data = path.read_bytes()
        m = material(slot, target.host)
        with pytest.raises(InstallError, match="looser than"):
            inst.install(slot, m.key, m.chain)
        assert path.read_bytes() == data

    def test_a_world_readable_file_mode_is_refused_at_load(self, target: Target) -> None:
        with pytest.raises(InstallError, match="lets everyone read the private key"):
            build(target, file_mode="0644")

    # -- collisions ----------------------------------------------------------------------------

    def test_colliding_file_names_are_refused_at_load(self, target: Target,
                                                      tmp_path: Path) -> None:
        secret = tmp_path / "tsig.key"
        secret.write_text("c2VjcmV0\n")
        secret.chmod(0o600)
        section = {"type": target.type_name, "directory": str(target.directory),
                   **target.options}
        section.pop("key_name", None)
        section.pop("chain_name", None)
        section["file_name"] = "{host}.pem"  # no {algorithm}: both slots would write it
        doc = {
            "resolver": ["127.0.0.1"],
            "providers": {"p": {"type": "rfc2136", "server": "127.0.0.11"}},
            "installers": {"i": section},
            "endpoints": [{"host": target.host, "port": target.port, "provider": "p",
                           "algorithms": ["ecdsa-p256", "rsa2048"], "installer": "i"}],
        }
        cfg = tmp_path / "rollover.yaml"
        cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
        with pytest.raises(ConfigError) as info:
            load_config(cfg, resolv_conf=cfg)
        line = next(n for n, text in enumerate(cfg.read_text().splitlines(), 1)
                    if "installer: i" in text)
        assert str(info.value).startswith(f"{cfg}:{line}: endpoints[0].installer: i would "
                                          f"write {target.host}.pem for ")
