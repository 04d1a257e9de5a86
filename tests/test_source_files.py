"""`source: files`: certificate, chain and key dropped by another tool, read as one consistent
snapshot, picked up when they change, and never handed on for a key rollover did not publish."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest

from rollover.cli.main import main
from rollover.config.load import load_config
from rollover.dane import tlsa
from rollover.model import Algorithm, SlotId
from rollover.sources import CertSourceError
from rollover.sources.files import CertFiles, FilesOptions, FilesSource

from certgen import make_chain, new_key, pem, private_key_pem, write_key
from lab.configs import write_config
from lab.dns import DnsLab

HOST = "mail.example.test"
SLOT = SlotId(HOST, 25, Algorithm.ECDSA_P256)


def drop(directory: Path, chain: object = None, *, key: object = None, sans: tuple[str, ...] = (
        HOST,), expired: bool = False, key_kind: str = "p256") -> tuple[Path, Path, object]:
    """What another tool does: write fullchain.pem and privkey.pem (0600)."""
    c = chain or make_chain(sans=sans, key=key or new_key(key_kind), expired=expired)
    directory.mkdir(parents=True, exist_ok=True)
    full = directory / "fullchain.pem"
    full.write_bytes(pem(*c.served()))  # type: ignore[attr-defined]
    keyfile = write_key(directory / "privkey.pem", c.leaf.key)  # type: ignore[attr-defined]
    return full, keyfile, c


def source(full: Path, keyfile: Path, certificate: Path | None = None) -> FilesSource:
    return FilesSource({Algorithm.ECDSA_P256: CertFiles(full, keyfile, certificate)})


def test_latest_is_a_checked_snapshot(tmp_path: Path) -> None:
    full, keyfile, c = drop(tmp_path)
    snap = source(full, keyfile).latest(SLOT)
    assert snap.spki_sha256 == tlsa.spki_sha256_hex(c.leaf.cert)  # type: ignore[attr-defined]
    assert snap.chain_pem == full.read_bytes()
    assert snap.key_pem == keyfile.read_bytes()
    assert snap.rdata == f"3 1 1 {snap.spki_sha256}"
    assert snap.key_pem not in repr(snap).encode()


def test_changed_only_when_the_files_change(tmp_path: Path) -> None:
    full, keyfile, c = drop(tmp_path)
    src = source(full, keyfile)
    first = src.changed(SLOT, None)
    assert first is not None
    assert src.changed(SLOT, first.fingerprint) is None  # nothing new
    # a same-key renewal by the other tool: new certificate, same 3 1 1
    drop(tmp_path, key=c.leaf.key)  # type: ignore[attr-defined]
    renewed = src.changed(SLOT, first.fingerprint)
    assert renewed is not None and renewed.spki_sha256 == first.spki_sha256
    # a new key: a different 3 1 1 that must be published before it is installed
    drop(tmp_path)
    rekeyed = src.changed(SLOT, renewed.fingerprint)
    assert rekeyed is not None and rekeyed.spki_sha256 != first.spki_sha256


def test_order_hands_over_only_a_certificate_for_the_published_key(tmp_path: Path) -> None:
    full, keyfile, c = drop(tmp_path)
    src = source(full, keyfile)
    issued = src.order(None, SLOT, private_key_pem(c.leaf.key))  # type: ignore[attr-defined]
    assert issued.chain_pem == full.read_bytes()
    assert issued.not_after == c.leaf.cert.not_valid_after_utc  # type: ignore[attr-defined]
    other = new_key()
    with pytest.raises(CertSourceError) as err:
        src.order(None, SLOT, private_key_pem(other))
    assert "published and omnipresent" in str(err.value)
    assert src.renewal(issued.chain_pem) == (None, None)


def test_separate_certificate_and_chain_files(tmp_path: Path) -> None:
    c = make_chain(sans=(HOST,))
    leaf = tmp_path / "cert.pem"
    leaf.write_bytes(pem(c.leaf.cert))
    inter = tmp_path / "chain.pem"
    inter.write_bytes(pem(*c.served()[1:]))
    keyfile = write_key(tmp_path / "key.pem", c.leaf.key)
    snap = source(inter, keyfile, leaf).latest(SLOT)
    assert snap.chain_pem == pem(*c.served())


def test_key_of_another_certificate_is_in_flux(tmp_path: Path) -> None:
    full, keyfile, _ = drop(tmp_path)
    write_key(keyfile, new_key())  # the tool wrote the new key, not yet the chain
    with pytest.raises(CertSourceError, match="is not the key of the certificate"):
        source(full, keyfile).latest(SLOT)


def test_half_written_chain(tmp_path: Path) -> None:
    full, keyfile, _ = drop(tmp_path)
    full.write_bytes(full.read_bytes()[:100])
    with pytest.raises(CertSourceError, match="holds no PEM certificates"):
        source(full, keyfile).latest(SLOT)


def test_not_written_yet(tmp_path: Path) -> None:
    with pytest.raises(CertSourceError, match="does not exist"):
        source(tmp_path / "fullchain.pem", tmp_path / "privkey.pem").latest(SLOT)


def test_world_readable_key_is_refused(tmp_path: Path) -> None:
    full, keyfile, _ = drop(tmp_path)
    os.chmod(keyfile, 0o644)
    with pytest.raises(CertSourceError, match="everyone may read it"):
        source(full, keyfile).latest(SLOT)
    os.chmod(keyfile, 0o640)  # group-readable (ssl-cert) is how Debian does it: fine
    source(full, keyfile).latest(SLOT)


def test_wrong_algorithm_expired_or_other_host(tmp_path: Path) -> None:
    full, keyfile, _ = drop(tmp_path / "rsa", key_kind="rsa2048")
    with pytest.raises(CertSourceError, match="is rsa2048, not ecdsa-p256"):
        source(full, keyfile).latest(SLOT)
    full, keyfile, _ = drop(tmp_path / "old", expired=True)
    with pytest.raises(CertSourceError, match="expired on"):
        source(full, keyfile).latest(SLOT)
    full, keyfile, _ = drop(tmp_path / "other", sans=("mx.other.test",))
    with pytest.raises(CertSourceError, match=f"does not name {HOST}"):
        source(full, keyfile).latest(SLOT)
    full, keyfile, _ = drop(tmp_path / "wild", sans=("*.example.test",))
    source(full, keyfile).latest(SLOT)


def test_config_section(tmp_path: Path) -> None:
    (tmp_path / "resolv.conf").write_text("")
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps({
        "resolver": ["127.0.0.1"],
        "providers": {"p": {"type": "rfc2136", "server": "127.0.0.11"}},
        "endpoints": [{"host": HOST, "provider": "p", "algorithms": ["ecdsa-p256", "rsa2048"],
                       "certificate": {"source": "files", "files": {
                           "ecdsa-p256": {"chain": "ec/fullchain.pem", "key": "ec/privkey.pem"},
                           "rsa2048": {"certificate": "rsa/cert.pem", "chain": "rsa/chain.pem",
                                       "key": "rsa/privkey.pem"}}}}],
    }))
    cert = load_config(path, resolv_conf=tmp_path / "resolv.conf").endpoints[0].certificate
    assert cert is not None and cert.source == "files"
    assert isinstance(cert.options, FilesOptions)
    assert cert.options.files[Algorithm.RSA2048].certificate == tmp_path / "rsa/cert.pem"
    assert cert.key_paths() == (tmp_path / "ec/privkey.pem", tmp_path / "rsa/privkey.pem")
    assert cert.describe().startswith("from files (")


@pytest.mark.lab
def test_a_key_the_other_tool_made_is_published_before_it_is_installed(
        tmp_path: Path, dns_lab: DnsLab, capsys: pytest.CaptureFixture[str]) -> None:
    """Through the real engine on the lab: the other tool's certificate is for a key nobody
    published. rollover takes that key (it generates none of its own), publishes its 3 1 1 and
    installs only after the record is omnipresent; the tool's files are left as they were."""
    host = f"mx{secrets.token_hex(3)}.example.test"
    full, keyfile, c = drop(tmp_path / "dropped", sans=(host,))
    before = {p: p.read_bytes() for p in (full, keyfile)}
    installed = tmp_path / "installed"
    installed.mkdir(mode=0o700)
    cfg = write_config(
        tmp_path / "cfg", dns_lab, host,
        endpoint={"installer": "cmd", "bootstrap": "no-certificate",
                  "certificate": {"source": "files", "files": {
                      "ecdsa-p256": {"chain": str(full), "key": str(keyfile)}}}},
        top={"installers": {"cmd": {"type": "command", "directory": str(installed),
                                    "command": ["true"]}}})
    assert main(["-v", "run", "--wait", "--max-wait", "30", "--config", str(cfg)]) == 0
    log = capsys.readouterr().err.splitlines()
    state = json.loads((tmp_path / "cfg" / "state" / "state.json").read_text())
    slot = state["slots"][f"{host}:25:ecdsa-p256"]
    theirs = tlsa.spki_sha256_hex(c.leaf.cert)  # type: ignore[attr-defined]
    assert [k["spki_sha256"] for k in slot["keys"]] == [theirs]  # no key of rollover's own
    for server in dns_lab.servers:
        assert dns_lab.query(server, f"_25._tcp.{host}.", "TLSA").records == {
            f"3 1 1 {theirs}"}

    def first(text: str) -> int:
        return next(i for i, line in enumerate(log) if text in line)

    # (the host has no address, so the post-flight then fails and the files are rolled back)
    assert first("took certificate") < first(f"add TLSA 3 1 1 {theirs}") \
        < first("records omnipresent") < first("pre-flight, then install")
    assert {p: p.read_bytes() for p in (full, keyfile)} == before
