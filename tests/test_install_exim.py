"""The Exim installer against the lab's real Exim 4.96 (Debian, GnuTLS): Exim serves a new file
only ~5 s after it changed, so the installer waits (`settle`) before the post-flight probe; the
files are 0640 group Debian-exim; one algorithm's install leaves the other's certificate alone;
rollback brings the old certificate back on the wire. Config checks and the snippet need no lab.
"""

from __future__ import annotations

import grp
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from rollover.clock import SystemClock
from rollover.config.load import load_config
from rollover.dane import tlsa
from rollover.errors import ConfigError
from rollover.hooks.exim import EximInstaller, EximOptions
from rollover.hooks.files import previous_path
from rollover.model import Algorithm, SlotId

import certgen
from lab.exim import EXIM, EXIM_USER, EximLab, write_group_file
from lab.proc import LabError, wait_for
from lab.tlsclient import served_spki

HOST = "mail.example.test"
ECDSA = SlotId(HOST, 25, Algorithm.ECDSA_P256)
RSA = SlotId(HOST, 25, Algorithm.RSA2048)
CLOCK = SystemClock()


def material(kind: str = "p256") -> tuple[bytes, bytes, str]:
    """A fresh key, a leaf + intermediate chain for it, and the key's 3 1 1 data."""
    chain = certgen.make_chain(2, key=certgen.new_key(kind))
    spki = tlsa.spki_sha256_hex(x509.load_pem_x509_certificate(certgen.pem(chain.leaf.cert)))
    return chain.leaf.key_pem(), certgen.pem(*chain.served()), spki


def spki(lab: EximLab, algorithm: str) -> str:
    return served_spki(lab.address, lab.port, algorithm, "smtp")


@pytest.fixture
def exim(exim_lab: EximLab) -> Iterator[EximLab]:
    """The session's Exim; its TLS files are put back afterwards (and served again)."""
    originals = {a: p.read_bytes() for a, p in exim_lab.chain_files.items()}
    try:
        yield exim_lab
    finally:
        for algorithm, data in originals.items():
            path = exim_lab.chain_files[algorithm]
            previous_path(path).unlink(missing_ok=True)
            if path.read_bytes() != data:
                write_group_file(path, data)
        exim_lab.restart()  # serves the restored files at once (no 5 s wait)


def installer(lab: EximLab, **kw: object) -> EximInstaller:
    return EximInstaller(lab.tls_dir, file_name="{algorithm}.pem", **kw)  # type: ignore[arg-type]


@pytest.mark.lab
def test_exim_serves_a_new_file_only_seconds_later_so_the_installer_settles(
        exim: EximLab) -> None:
    """Without settle, a post-flight probe right after the write sees the old key (and would
    roll back a good install); with the default settle it sees the new one."""
    old_rsa = spki(exim, "rsa2048")
    key, chain, new = material("p256")
    t0 = CLOCK.monotonic()
    installer(exim, settle=0).install(ECDSA, key, chain)
    assert spki(exim, "ecdsa-p256") != new  # Exim still serves what it preloaded
    waited = wait_for(lambda: spki(exim, "ecdsa-p256") == new, 15, "Exim to reload",
                      interval=0.2)
    delay = CLOCK.monotonic() - t0
    assert 2.0 < delay < 8.0, delay
    print(f"\nmeasured: Exim served the new file {delay:.1f}s after the write "
          f"(polled {waited:.1f}s)")

    key2, chain2, newer = material("p256")
    t0 = CLOCK.monotonic()
    installer(exim).install(ECDSA, key2, chain2)  # default settle
    took = CLOCK.monotonic() - t0
    assert spki(exim, "ecdsa-p256") == newer  # the very next connection gets it
    assert spki(exim, "rsa2048") == old_rsa  # the other algorithm is untouched
    assert 5.5 < took < 10, took
    path = exim.chain_files["ecdsa-p256"]
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == grp.getgrnam(EXIM_USER).gr_gid
    assert stat.S_IMODE(previous_path(path).stat().st_mode) == 0o600


@pytest.mark.lab
def test_rollback_puts_the_old_certificate_back_on_the_wire(exim: EximLab) -> None:
    path = exim.chain_files["rsa2048"]
    before, old = path.read_bytes(), spki(exim, "rsa2048")
    key, chain, new = material("rsa2048")
    inst = installer(exim)
    inst.install(RSA, key, chain)
    assert spki(exim, "rsa2048") == new
    inst.rollback(RSA)
    assert path.read_bytes() == before  # byte for byte
    assert spki(exim, "rsa2048") == old


@pytest.mark.lab
def test_failing_reload_command_restores_and_exim_keeps_serving_the_old_key(
        exim: EximLab) -> None:
    path = exim.chain_files["ecdsa-p256"]
    before, old = path.read_bytes(), spki(exim, "ecdsa-p256")
    key, chain, _ = material("p256")
    with pytest.raises(Exception, match="`false` failed"):
        installer(exim, reload_command=["false"]).install(ECDSA, key, chain)
    assert path.read_bytes() == before
    CLOCK.sleep(6)  # past Exim's own reload delay: what it serves now is what it will serve
    assert spki(exim, "ecdsa-p256") == old


@pytest.fixture
def exim_separate() -> Iterator[EximLab]:
    """A second Exim: separate key/cert files (tls_privatekey list) behind an expansion, so
    every connection reads them itself, as Debian-exim."""
    if not Path(EXIM).exists():
        pytest.skip(f"no {EXIM} (run tests/lab/install.sh)")
    with EximLab(suffix=33, separate=True, per_connection=True) as lab:
        yield lab


@pytest.mark.lab
def test_exim_reading_per_connection_needs_the_group_the_installer_defaults_to(
        exim_separate: EximLab) -> None:
    """An Exim that reads its TLS files per connection does so as Debian-exim: a root-only key
    makes it refuse STARTTLS for every algorithm (an outage); the installer's default (0640,
    group Debian-exim) works, and the next connection gets the new key at once."""
    lab = exim_separate
    old_rsa = spki(lab, "rsa2048")
    for path in (lab.key_files["ecdsa-p256"], lab.chain_files["ecdsa-p256"]):
        os.chown(path, -1, 0)  # what a root-only file mode (0600, no group) would leave
        path.chmod(0o600)
    for alg in ("ecdsa-p256", "rsa2048"):  # not just ECDSA: STARTTLS itself is refused
        with pytest.raises(LabError, match="no certificate"):
            spki(lab, alg)
    key, chain, new = material("p256")
    EximInstaller(lab.tls_dir, settle=0, key_name="{algorithm}.key",
                  chain_name="{algorithm}.crt").install(ECDSA, key, chain)  # the defaults
    assert spki(lab, "ecdsa-p256") == new and spki(lab, "rsa2048") == old_rsa  # at once
    for path in (lab.key_files["ecdsa-p256"], lab.chain_files["ecdsa-p256"]):
        st = path.stat()
        assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == grp.getgrnam(EXIM_USER).gr_gid


# --------------------------------------------------------------------------- no lab needed


def write(tmp_path: Path, installers: str, algorithms: str = "[ecdsa-p256, rsa2048]") -> Path:
    (tmp_path / "tls").mkdir(exist_ok=True)
    (tmp_path / "tsig.key").write_text("c2VjcmV0\n")
    (tmp_path / "tsig.key").chmod(0o600)
    cfg = tmp_path / "rollover.yaml"
    cfg.write_text(f"""\
resolver: [127.0.0.1]
providers:
  p: {{type: rfc2136, server: 127.0.0.11}}
installers:
{installers}
endpoints:
  - host: mail.example.test
    provider: p
    algorithms: {algorithms}
    installer: exim
""")
    return cfg


def test_defaults_are_debian_exim_group_0640_and_a_settle(tmp_path: Path) -> None:
    if not _has_group(EXIM_USER):
        pytest.skip("no Debian-exim group here")
    cfg = write(tmp_path, "  exim:\n    type: exim\n    directory: tls\n")
    options = load_config(cfg, resolv_conf=cfg).installers["exim"].options
    assert isinstance(options, EximOptions)
    assert (options.file_mode, options.group, options.settle) == (0o640, EXIM_USER, 6)
    with_reload = write(tmp_path, "  exim:\n    type: exim\n    directory: tls\n"
                        "    reload_command: [systemctl, reload, exim4]\n")
    assert load_config(with_reload, resolv_conf=cfg).installers["exim"].options.settle == 0
    root_only = write(tmp_path, "  exim:\n    type: exim\n    directory: tls\n"
                      "    file_mode: 0600\n")
    opts = load_config(root_only, resolv_conf=cfg).installers["exim"].options
    assert (opts.file_mode, opts.group) == (0o600, None)


def test_a_missing_group_is_refused_at_load_with_file_and_line(tmp_path: Path) -> None:
    cfg = write(tmp_path, "  exim:\n    type: exim\n    directory: tls\n"
                "    group: no-such-group-here\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg, resolv_conf=cfg)
    assert str(info.value) == (f"{cfg}:8: installers.exim.group: group 'no-such-group-here' "
                               "does not exist")


def test_snippet_lists_one_file_per_algorithm(tmp_path: Path) -> None:
    opts = EximOptions(directory=tmp_path, file_mode=0o600, group=None)
    text = EximInstaller.snippet(opts, [ECDSA, RSA])
    assert (f"tls_certificate = {tmp_path}/{HOST}.ecdsa-p256.pem : "
            f"{tmp_path}/{HOST}.rsa2048.pem") in text
    assert "\ntls_privatekey =" not in text
    separate = EximOptions(directory=tmp_path, file_mode=0o600, group=None,
                           key_name="{algorithm}.key", chain_name="{algorithm}.crt")
    text = EximInstaller.snippet(separate, [ECDSA, RSA])
    assert f"tls_privatekey = {tmp_path}/ecdsa-p256.key : {tmp_path}/rsa2048.key" in text
    assert f"tls_certificate = {tmp_path}/ecdsa-p256.crt : {tmp_path}/rsa2048.crt" in text


def _has_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True
