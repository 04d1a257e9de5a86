"""Installers: the Postfix installer against the lab's real Postfix (write, reload, STARTTLS shows
the new chain for that algorithm only; a failing reload restores byte for byte; rollback), and
the file rules (modes, .previous, crash re-run, key/chain mismatch) plus the command installer
in a temp directory."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rollover.errors import InstallError
from rollover.hooks.command import CommandInstaller
from rollover.hooks.files import previous_path
from rollover.hooks.postfix import PostfixInstaller, chain_file_bytes
from rollover.model import Algorithm, SlotId

import certgen
from lab.postfix import PostfixLab
from lab.proc import wait_for

HOST = "mail.example.test"
ECDSA = SlotId(HOST, 25, Algorithm.ECDSA_P256)
RSA = SlotId(HOST, 25, Algorithm.RSA2048)


def material(kind: str = "p256") -> tuple[bytes, bytes, certgen.Chain]:
    """A fresh key and a leaf + intermediate chain for it: (key PEM, chain PEM, chain)."""
    chain = certgen.make_chain(2, key=certgen.new_key(kind))
    return chain.leaf.key_pem(), certgen.pem(*chain.served()), chain


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def served(lab: PostfixLab, algorithm: str) -> list[bytes]:
    return lab.served_chain(algorithm)


def wait_served(lab: PostfixLab, algorithm: str, want: list[bytes]) -> None:
    """Postfix's reload is asynchronous: new smtpd processes pick up the file."""
    wait_for(lambda: served(lab, algorithm) == want, 10.0, f"Postfix to serve the {algorithm} "
             "chain")


def file_certs(path: Path) -> list[bytes]:
    return [der(c) for c in x509.load_pem_x509_certificates(path.read_bytes())]


@pytest.fixture
def postfix(postfix_lab: PostfixLab) -> Iterator[PostfixLab]:
    """The session's Postfix; its chain files are put back (and Postfix reloaded) afterwards."""
    originals = {a: p.read_bytes() for a, p in postfix_lab.chain_files.items()}
    try:
        yield postfix_lab
    finally:
        changed = False
        for algorithm, data in originals.items():
            path = postfix_lab.chain_files[algorithm]
            if not path.exists() or path.read_bytes() != data or stat.S_IMODE(
                    path.stat().st_mode) != 0o600:
                postfix_lab.install_chain(algorithm, data)
                changed = True
            previous_path(path).unlink(missing_ok=True)
        if changed:
            postfix_lab.reload()
            for algorithm in originals:
                wait_served(postfix_lab, algorithm, file_certs(postfix_lab.chain_files[algorithm]))


def installer_for(lab: PostfixLab, reload_command: list[str] | None = None,
                  **kw: object) -> PostfixInstaller:
    return PostfixInstaller(lab.tls_dir, reload_command or lab.reload_command,
                            file_name="{algorithm}.pem", **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- real Postfix


@pytest.mark.lab
def test_install_serves_new_chain_for_that_algorithm_only(postfix: PostfixLab) -> None:
    path = postfix.chain_files["ecdsa-p256"]
    old = path.read_bytes()
    rsa_before = served(postfix, "rsa2048")
    rsa_file, rsa_previous = postfix.chain_files["rsa2048"], \
        previous_path(postfix.chain_files["rsa2048"])
    # an earlier lab test may have installed RSA (and left its .previous): compare, not assume
    rsa_files = (rsa_file.read_bytes(),
                 rsa_previous.read_bytes() if rsa_previous.exists() else None)
    key_pem, chain_pem, chain = material("p256")

    installer_for(postfix).install(ECDSA, key_pem, chain_pem)

    assert path.read_bytes() == chain_file_bytes(key_pem, chain_pem)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # key first
    prev = previous_path(path)
    assert prev.read_bytes() == old and stat.S_IMODE(prev.stat().st_mode) == 0o600
    wait_served(postfix, "ecdsa-p256", [der(c) for c in chain.served()])
    assert served(postfix, "rsa2048") == rsa_before
    assert (rsa_file.read_bytes(),
            rsa_previous.read_bytes() if rsa_previous.exists() else None) == rsa_files


@pytest.mark.lab
def test_failing_reload_restores_previous_file_and_old_chain(postfix: PostfixLab) -> None:
    path = postfix.chain_files["rsa2048"]
    old = path.read_bytes()
    old_served = served(postfix, "rsa2048")
    key_pem, chain_pem, _ = material("rsa2048")
    script = "echo starting >&2; echo 'postfix: fatal: the lab says no' >&2; exit 3"

    with pytest.raises(InstallError) as err:
        installer_for(postfix, ["sh", "-c", script]).install(RSA, key_pem, chain_pem)

    message = str(err.value)
    assert "\n" not in message
    assert "exit 3" in message and "postfix: fatal: the lab says no" in message
    assert "restored the previous files" in message
    assert "PRIVATE KEY" not in message and key_pem.decode() not in message
    assert path.read_bytes() == old  # byte for byte
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Postfix was never told to reload the new file: it still serves the old chain
    postfix.reload()
    wait_served(postfix, "rsa2048", old_served)


@pytest.mark.lab
def test_false_as_reload_command(postfix: PostfixLab) -> None:
    path = postfix.chain_files["ecdsa-p256"]
    old = path.read_bytes()
    key_pem, chain_pem, _ = material("p256")
    with pytest.raises(InstallError, match=r"`false` failed \(exit 1\)"):
        installer_for(postfix, ["false"]).install(ECDSA, key_pem, chain_pem)
    assert path.read_bytes() == old
    assert served(postfix, "ecdsa-p256") == file_certs(path)


@pytest.mark.lab
def test_rollback_restores_previous_chain(postfix: PostfixLab) -> None:
    path = postfix.chain_files["ecdsa-p256"]
    old = path.read_bytes()
    installer = installer_for(postfix)
    key_pem, chain_pem, chain = material("p256")
    installer.install(ECDSA, key_pem, chain_pem)
    wait_served(postfix, "ecdsa-p256", [der(c) for c in chain.served()])

    installer.rollback(ECDSA)

    assert path.read_bytes() == old
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    wait_served(postfix, "ecdsa-p256", file_certs(path))


@pytest.mark.lab
def test_crash_rerun_keeps_the_true_previous(postfix: PostfixLab) -> None:
    path = postfix.chain_files["rsa2048"]
    old = path.read_bytes()
    installer = installer_for(postfix)
    key_pem, chain_pem, chain = material("rsa2048")
    installer.install(RSA, key_pem, chain_pem)
    # the engine crashed before saving its state: the next run installs the same files again
    installer.install(RSA, key_pem, chain_pem)
    assert previous_path(path).read_bytes() == old
    wait_served(postfix, "rsa2048", [der(c) for c in chain.served()])
    installer.rollback(RSA)
    assert path.read_bytes() == old
    wait_served(postfix, "rsa2048", file_certs(path))


@pytest.mark.lab
def test_crash_rerun_then_failing_reload_restores_the_true_previous(postfix: PostfixLab) -> None:
    path = postfix.chain_files["ecdsa-p256"]
    old = path.read_bytes()
    key_pem, chain_pem, _ = material("p256")
    installer_for(postfix).install(ECDSA, key_pem, chain_pem)
    with pytest.raises(InstallError):
        installer_for(postfix, ["false"]).install(ECDSA, key_pem, chain_pem)
    assert path.read_bytes() == old


# --------------------------------------------------------------------------- file rules


def fake_run(calls: list[list[str]], returncode: int = 0, stderr: str = "") -> object:
    def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        return subprocess.CompletedProcess(argv, returncode, "", stderr)
    return run


def test_describe(tmp_path: Path) -> None:
    inst = PostfixInstaller(tmp_path)
    assert inst.describe(ECDSA) == (
        f"write {tmp_path}/mail.example.test.ecdsa-p256.pem; run postfix reload")
    custom = PostfixInstaller(tmp_path, ["postfix", "-c", "/etc/pf", "reload"],
                              file_name="{host}-{port}-{algorithm}.pem")
    assert custom.describe(RSA) == (
        f"write {tmp_path}/mail.example.test-25-rsa2048.pem; run postfix -c /etc/pf reload")


def test_first_install_writes_0600_without_previous(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    key_pem, chain_pem, _ = material()
    PostfixInstaller(tmp_path, run=fake_run(calls)).install(ECDSA, key_pem, chain_pem)  # type: ignore[arg-type]
    path = tmp_path / "mail.example.test.ecdsa-p256.pem"
    assert path.read_bytes() == chain_file_bytes(key_pem, chain_pem)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not previous_path(path).exists()
    assert calls == [["postfix", "reload"]]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left


def test_loose_existing_file_is_refused(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    path = tmp_path / "mail.example.test.ecdsa-p256.pem"
    path.write_bytes(b"old content")
    os.chmod(path, 0o644)
    key_pem, chain_pem, _ = material()
    with pytest.raises(InstallError) as err:
        PostfixInstaller(tmp_path, run=fake_run(calls)).install(ECDSA, key_pem, chain_pem)  # type: ignore[arg-type]
    assert str(path) in str(err.value) and "0644" in str(err.value)
    assert path.read_bytes() == b"old content" and not previous_path(path).exists()
    assert calls == []


def test_first_install_with_failing_reload_removes_the_new_file(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    key_pem, chain_pem, _ = material()
    with pytest.raises(InstallError, match="exit 1"):
        PostfixInstaller(tmp_path, run=fake_run(calls, 1)).install(ECDSA, key_pem, chain_pem)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    assert calls == [["postfix", "reload"]] * 2  # reloaded again after restoring


@pytest.mark.parametrize(("command", "timeout", "expect"), [
    (["/nonexistent/postfix", "reload"], 5.0, "command not found"),
    (["sleep", "3"], 0.2, "timed out after 0.2 s"),
    (["sh", "-c", "kill -9 $$"], 5.0, "killed by signal 9"),
])
def test_reload_failures_are_one_line(tmp_path: Path, command: list[str], timeout: float,
                                      expect: str) -> None:
    path = tmp_path / "mail.example.test.rsa2048.pem"
    old = chain_file_bytes(*material("rsa2048")[:2])
    path.write_bytes(old)
    os.chmod(path, 0o600)
    key_pem, chain_pem, _ = material("rsa2048")
    with pytest.raises(InstallError) as err:
        PostfixInstaller(tmp_path, command, timeout=timeout).install(RSA, key_pem, chain_pem)
    assert expect in str(err.value) and "\n" not in str(err.value)
    assert path.read_bytes() == old


def test_key_must_belong_to_the_leaf_and_slot(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    inst = PostfixInstaller(tmp_path, run=fake_run(calls))  # type: ignore[arg-type]
    key_pem, _, _ = material()
    _, other_chain, _ = material()
    with pytest.raises(InstallError, match="does not belong"):
        inst.install(ECDSA, key_pem, other_chain)
    rsa_key, rsa_chain, _ = material("rsa2048")
    with pytest.raises(InstallError, match="rsa2048, not ecdsa-p256"):
        inst.install(ECDSA, rsa_key, rsa_chain)
    assert list(tmp_path.iterdir()) == [] and calls == []


def test_rollback_of_a_first_install_removes_the_new_file(tmp_path: Path) -> None:
    """No .previous means the file did not exist before: going back means no file, not a
    rollback that fails forever."""
    calls: list[list[str]] = []
    inst = PostfixInstaller(tmp_path, run=fake_run(calls))  # type: ignore[arg-type]
    key_pem, chain_pem, _ = material()
    inst.install(ECDSA, key_pem, chain_pem)
    target = tmp_path / "mail.example.test.ecdsa-p256.pem"
    assert target.exists() and not (tmp_path / (target.name + ".previous")).exists()
    inst.rollback(ECDSA)
    assert not target.exists()
    assert len(calls) == 2  # reloaded after the install and after the rollback
    inst.rollback(ECDSA)  # nothing left to undo: still fine


def test_missing_directory(tmp_path: Path) -> None:
    key_pem, chain_pem, _ = material()
    with pytest.raises(InstallError, match="does not exist"):
        PostfixInstaller(tmp_path / "nope", run=fake_run([])).install(  # type: ignore[arg-type]
            ECDSA, key_pem, chain_pem)


def test_group_and_mode(tmp_path: Path) -> None:
    key_pem, chain_pem, _ = material()
    inst = PostfixInstaller(tmp_path, file_mode=0o640, group="postfix",
                            run=fake_run([]))  # type: ignore[arg-type]
    inst.install(ECDSA, key_pem, chain_pem)
    st = (tmp_path / "mail.example.test.ecdsa-p256.pem").stat()
    import grp
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == grp.getgrnam("postfix").gr_gid
    with pytest.raises(InstallError, match="would let anyone read"):
        PostfixInstaller(tmp_path, file_mode=0o644)


def test_command_installer_separate_files_and_environment(tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    files = tmp_path / "tls"
    files.mkdir()
    inst = CommandInstaller(
        files, ["sh", "-c", f'env | grep ^ROLLOVER_ | sort > {out}'],
        key_name="{host}.{algorithm}.key", chain_name="{host}.{algorithm}.crt",
        base_env={"PATH": os.environ["PATH"]},
    )
    key_pem, chain_pem, _ = material()
    inst.install(ECDSA, key_pem, chain_pem)
    key_file = files / "mail.example.test.ecdsa-p256.key"
    chain_file = files / "mail.example.test.ecdsa-p256.crt"
    assert key_file.read_bytes() == key_pem and chain_file.read_bytes() == chain_pem
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert out.read_text().splitlines() == [
        "ROLLOVER_ALGORITHM=ecdsa-p256",
        f"ROLLOVER_CHAIN_FILE={chain_file}",
        f"ROLLOVER_HOST={HOST}",
        f"ROLLOVER_KEY_FILE={key_file}",
        "ROLLOVER_PORT=25",
    ]
    assert inst.describe(ECDSA).startswith(f"write {key_file}, {chain_file}; run sh -c")


def test_command_installer_failure_restores_both_files(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    inst = CommandInstaller(tmp_path, ["sh", "-c", f"echo x >> {marker}; echo broken >&2; exit 9"],
                            key_name="k-{algorithm}.pem", chain_name="c-{algorithm}.pem")
    old_key, old_chain, _ = material()
    (tmp_path / "k-ecdsa-p256.pem").write_bytes(old_key)
    (tmp_path / "c-ecdsa-p256.pem").write_bytes(old_chain)
    for p in tmp_path.glob("*.pem"):
        p.chmod(0o600)
    key_pem, chain_pem, _ = material()
    with pytest.raises(InstallError, match=r"exit 9\): broken; restored the previous files, "
                                           r"but running it again failed too"):
        inst.install(ECDSA, key_pem, chain_pem)
    assert (tmp_path / "k-ecdsa-p256.pem").read_bytes() == old_key
    assert (tmp_path / "c-ecdsa-p256.pem").read_bytes() == old_chain
    assert marker.read_text().count("x") == 2


def test_command_installer_combined_file(tmp_path: Path) -> None:
    out = tmp_path / "seen"
    inst = CommandInstaller(tmp_path, ["sh", "-c", f'cmp "$ROLLOVER_KEY_FILE" '
                                                   f'"$ROLLOVER_CHAIN_FILE" && touch {out}'])
    key_pem, chain_pem, _ = material("rsa2048")
    inst.install(RSA, key_pem, chain_pem)
    assert out.exists()
    assert (tmp_path / "mail.example.test.rsa2048.pem").read_bytes() == chain_file_bytes(
        key_pem, chain_pem)


def test_bad_file_name_pattern(tmp_path: Path) -> None:
    key_pem, chain_pem, _ = material()
    for pattern in ("{hostname}.pem", "../{host}.pem", "{}"):
        with pytest.raises(InstallError, match="pattern"):
            PostfixInstaller(tmp_path, file_name=pattern, run=fake_run([])).install(  # type: ignore[arg-type]
                ECDSA, key_pem, chain_pem)
