"""`rollover tlsa` through cli.main: output formats, bundles, warnings, and bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rollover.cli.main import main
from rollover.dane import tlsa
from rollover.errors import ExitStatus

import certgen

Capture = pytest.CaptureFixture[str]


@pytest.fixture(scope="module")
def chain() -> certgen.Chain:
    return certgen.make_chain(2, key="p256")


@pytest.fixture
def files(chain: certgen.Chain, tmp_path: Path) -> dict[str, Path]:
    return {
        "leaf": certgen.write_pem(tmp_path / "leaf.pem", chain.leaf),
        "key": certgen.write_key(tmp_path / "leaf.key", chain.leaf.key),
        "full": certgen.write_pem(tmp_path / "fullchain.pem", *chain.served()),
        "bundle": certgen.write_pem(tmp_path / "bundle.pem", *chain.cas),
    }


def run(capsys: Capture, *argv: str) -> tuple[int, list[str], str]:
    code = main(["tlsa", *argv])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    return code, cap.out.splitlines(), cap.err


def test_default_is_bare_311(capsys: Capture, files: dict[str, Path],
                             chain: certgen.Chain) -> None:
    code, out, err = run(capsys, str(files["leaf"]))
    assert code == 0 and err == ""
    assert out == [f"3 1 1 {tlsa.spki_sha256_hex(chain.leaf.cert)}"]


def test_zone_lines(capsys: Capture, files: dict[str, Path], chain: certgen.Chain) -> None:
    hexdata = tlsa.spki_sha256_hex(chain.leaf.cert)
    code, out, _ = run(capsys, str(files["leaf"]), "--host", "Mail.Example.test.")
    assert code == 0
    assert out == [f"_25._tcp.mail.example.test. IN TLSA 3 1 1 {hexdata}"]
    code, out, _ = run(capsys, str(files["leaf"]), str(files["key"]), "--host", "mx.example.test",
                       "--port", "465", "--ttl", "300", "--mtype", "2")
    # cert and its key give the same record: printed once
    rec = tlsa.tlsa_record(chain.leaf.cert, 3, 1, 2)
    assert out == [f"_465._tcp.mx.example.test. 300 IN TLSA {rec.to_text()}"]


def test_chain_file_uses_leaf_with_note(capsys: Capture, files: dict[str, Path],
                                        chain: certgen.Chain) -> None:
    code, out, err = run(capsys, str(files["full"]), "--selector", "0", "--mtype", "0")
    assert code == 0
    assert out == [tlsa.tlsa_record(chain.leaf.cert, 3, 0, 0).to_text()]
    assert "using the first" in err and str(files["full"]) in err


def test_bundle_table_and_records(capsys: Capture, files: dict[str, Path],
                                  chain: certgen.Chain) -> None:
    root_rec = tlsa.tlsa_record(chain.root.cert, 2).to_text()
    inter_rec = tlsa.tlsa_record(chain.intermediates[0].cert, 2).to_text()
    code, out, _ = run(capsys, str(files["bundle"]), "--bundle")
    assert code == 0
    comments = [ln for ln in out if ln.startswith(";")]
    records = [ln for ln in out if not ln.startswith(";")]
    assert records == [root_rec]
    table = "\n".join(comments)
    assert "1 intermediate  subject: O = Rollover Test, CN = Rollover Test Intermediate 1" in table
    assert "2 root          subject: O = Rollover Test, CN = Rollover Test Root" in table
    assert "issuer:  O = Rollover Test, CN = Rollover Test Root" in table

    code, out, _ = run(capsys, str(files["bundle"]), "--issuer", "intermediate", "--rdata")
    assert code == 0 and out == [inter_rec]
    code, out, _ = run(capsys, str(files["full"]), str(files["bundle"]), "--issuer", "all",
                       "--host", "mail.example.test")
    records = [ln for ln in out if not ln.startswith(";")]
    assert records == [f"_25._tcp.mail.example.test. IN TLSA {inter_rec}",
                       f"_25._tcp.mail.example.test. IN TLSA {root_rec}"]
    assert any("1 leaf" in ln for ln in out)


def test_bundle_without_root(capsys: Capture, files: dict[str, Path]) -> None:
    code, out, err = run(capsys, str(files["full"]), "--issuer", "root")
    assert code == ExitStatus.DATA and out == []
    assert err.count("\n") == 1 and "no root" in err and str(files["full"]) in err


def test_pkix_usages_warn(capsys: Capture, files: dict[str, Path]) -> None:
    for usage in ("0", "1"):
        code, out, err = run(capsys, str(files["leaf"]), "--usage", usage)
        assert code == 0 and out[0].startswith(f"{usage} 1 1 ")
        assert "warning" in err and "RFC 7672" in err


@pytest.mark.parametrize(("argv", "expected"), [
    (["--ttl", "60"], "--host"),
    (["--port", "587"], "--host"),
    (["--rdata", "--host", "mail.example.test"], "--rdata"),
    (["--host", "bad host"], "not a valid host"),
    (["--host", "mail.example.test", "--port", "70000"], "out of range"),
    (["--bundle", "--usage", "3"], "--usage must be 2"),
    (["--usage", "5"], "invalid choice"),
])
def test_usage_errors(capsys: Capture, files: dict[str, Path], argv: list[str],
                      expected: str) -> None:
    code, out, err = run(capsys, str(files["leaf"]), *argv)
    assert code == ExitStatus.USAGE and out == []
    assert expected in err


def test_selector0_on_key_is_one_line_error(capsys: Capture, files: dict[str, Path]) -> None:
    code, out, err = run(capsys, str(files["key"]), "--selector", "0")
    assert code == ExitStatus.DATA and out == []
    assert err.count("\n") == 1 and str(files["key"]) in err and "needs a certificate" in err


def _bad_inputs(tmp_path: Path, chain: certgen.Chain) -> dict[str, tuple[Path, int]]:
    pem = chain.leaf.cert_pem()
    der = certgen.cert_der(chain.leaf.cert)
    made = {
        "not-pem-or-der.txt": b"this is not a certificate\n",
        "truncated.pem": pem[: len(pem) // 2],
        "truncated.der": der[: len(der) - 10],
        "empty.pem": b"",
        "request.csr": certgen.make_csr(),
        "encrypted.key": certgen.private_key_pem(chain.leaf.key, b"pw"),
    }
    out: dict[str, tuple[Path, int]] = {}
    for name, data in made.items():
        path = tmp_path / name
        path.write_bytes(data)
        out[name] = (path, ExitStatus.DATA)
    out["missing.pem"] = (tmp_path / "missing.pem", ExitStatus.NO_INPUT)
    (tmp_path / "adir").mkdir()
    out["adir"] = (tmp_path / "adir", ExitStatus.NO_INPUT)
    return out


def test_bad_inputs_one_line_each(capsys: Capture, tmp_path: Path, chain: certgen.Chain,
                                  files: dict[str, Path]) -> None:
    for name, (path, status) in _bad_inputs(tmp_path, chain).items():
        # also when a good file comes first: nothing is printed for it
        code, out, err = run(capsys, str(files["leaf"]), str(path))
        assert code == status, name
        assert out == [], name
        lines = err.splitlines()
        assert len(lines) == 1, (name, err)
        assert lines[0].startswith("rollover: error: ") and str(path) in lines[0], name


def test_bad_input_in_a_real_process(tmp_path: Path) -> None:
    """The installed entry point: one line, no traceback, non-zero exit."""
    path = tmp_path / "empty.pem"
    path.write_bytes(b"")
    res = subprocess.run([sys.executable, "-m", "rollover", "tlsa", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == ExitStatus.DATA
    assert res.stdout == ""
    assert res.stderr == f"rollover: error: {path}: file is empty\n"


def test_private_key_never_printed(capsys: Capture, files: dict[str, Path],
                                   chain: certgen.Chain) -> None:
    code, out, err = run(capsys, str(files["key"]), "--selector", "1", "--mtype", "0")
    assert code == 0
    secret = certgen.private_key_der(chain.leaf.key).hex()
    assert out == [f"3 1 0 {tlsa.spki_der(chain.leaf.key).hex()}"]
    assert secret not in "".join(out) + err
