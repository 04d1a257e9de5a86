"""One test per class of finding of issues 15 (input hardening) and 16 (output hygiene), each
through the real CLI and real files. The generated campaign (test_bad_input_campaign.py)
covers the same classes at volume; these say what each class means."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import badinput as b
import pytest

from rollover.dane import tlsa
from rollover.errors import ExitStatus

import certgen

HEX = "ab" * 32


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return b.make_setup(tmp_path / "r")


def status(root: Path) -> list[str]:
    return ["status", "--no-observe", "--config", str(root / "rollover.yaml")]


def one_error(o: b.Outcome, *, code: int | None = None, expect: str = "") -> str:
    problems = b.problems_of(o, max_lines=3, expect=expect or None)
    assert not problems, (problems, o.err)
    if code is not None:
        assert o.code == code, o.err
    return o.err


def set_config(root: Path, old: str, new: str) -> None:
    text = b.BASE_CONFIG.replace(old, new)
    assert text != b.BASE_CONFIG
    (root / "rollover.yaml").write_text(text)


# --------------------------------------------------------------------------- 15: secrets echoed


@pytest.mark.parametrize("old", ["tsig_secret_file: tsig.key", "tsig_algorithm: hmac-sha256",
                                 "server: 127.0.30.11", "zone: example.test"])
def test_secret_pasted_into_the_wrong_key_is_never_echoed(root: Path, old: str) -> None:
    set_config(root, old, old.split(": ")[0] + ": " + b.TSIG_SECRET)
    err = one_error(b.run_cli(status(root)), code=ExitStatus.CONFIG, expect="looks like a secret")
    assert old.split(": ")[0] in err


def test_eab_key_pasted_as_its_file_name_is_not_echoed(root: Path) -> None:
    (root / "rollover.yaml").write_text(
        b.BASE_CONFIG + "acme:\n  directory: https://127.0.0.1:14000/dir\n  eab:\n"
        f"    kid: k\n    hmac_key_file: {b.EAB_SECRET}\n")
    one_error(b.run_cli(status(root)), code=ExitStatus.CONFIG, expect="hmac_key_file")


def test_yaml_whose_keys_are_secrets(root: Path) -> None:
    (root / "rollover.yaml").write_text(b.BASE_CONFIG + f"{b.TSIG_SECRET}: x\n")
    one_error(b.run_cli(status(root)), code=ExitStatus.CONFIG, expect="unknown key")


def test_a_file_that_is_not_a_config_is_not_echoed(root: Path) -> None:
    shadow = root / "shadow"
    shadow.write_text("name: ci\non: push\nroot_hash: $6$saltsalt$Zm9vYmFyYmF6cXV4\n")
    err = one_error(b.run_cli(["status", "--config", str(shadow)]), code=ExitStatus.CONFIG,
                    expect="no rollover setting")
    assert "saltsalt" not in err and "ci" not in err.split("expected")[0]


def test_a_huge_value_is_clipped(root: Path) -> None:
    set_config(root, f"host: {b.HOST}", "host: " + "-" * 500_000)
    err = one_error(b.run_cli(status(root)), code=ExitStatus.CONFIG)
    assert len(err) < 1000 and "more characters" in err


# --------------------------------------------------------------------------- 15: hangs, sizes


def test_fifo_inputs_never_block(root: Path) -> None:
    fifo = root / "fifo"
    os.mkfifo(fifo)
    for argv, code in (
        (["status", "--config", str(fifo)], ExitStatus.CONFIG),
        (["tlsa", str(fifo)], ExitStatus.DATA),
        (["check", b.HOST, "--chain", str(fifo), "--tlsa", f"3 1 1 {HEX}"], ExitStatus.DATA),
    ):
        one_error(b.run_cli(argv), code=code, expect="FIFO")
    state = root / "state" / "state.json"
    state.unlink()
    os.mkfifo(state, 0o600)
    one_error(b.run_cli(status(root)), code=ExitStatus.ERROR, expect="not a regular file")


@pytest.mark.parametrize("argv", [["status", "--config", "/dev/zero"], ["tlsa", "/dev/zero"],
                                  ["tlsa", "/dev/urandom"]])
def test_devices_are_refused_before_reading(argv: list[str]) -> None:
    one_error(b.run_cli(argv), expect="is a device, not a regular file")


def test_sizes_are_capped_and_said(root: Path) -> None:
    big = root / "big.yaml"
    big.write_bytes(b"# " + b"x" * (2 << 20))
    one_error(b.run_cli(["status", "--config", str(big)]), expect="larger than 1 MiB")
    one_error(b.run_cli(["tlsa", str(big)]), code=ExitStatus.DATA, expect="larger than 1 MiB")
    state = root / "state" / "state.json"
    b.write_private(state, state.read_bytes() + b" " * (17 << 20))
    one_error(b.run_cli(status(root)), expect="larger than 16 MiB")


# --------------------------------------------------------------------------- 15: tracebacks


def test_deep_yaml_and_json(root: Path) -> None:
    (root / "rollover.yaml").write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    one_error(b.run_cli(status(root)), code=ExitStatus.CONFIG, expect="levels deep")
    root2 = b.make_setup(root.parent / "r2")
    b.write_private(root2 / "state" / "state.json", b"{" + b'"a":[' * 100_000)
    one_error(b.run_cli(status(root2)), code=ExitStatus.ERROR, expect="state.json")


@pytest.mark.parametrize(("value", "expect"), [('!!int "abc"', "not a valid !!int"),
                                               ("!!timestamp garbage", "not a valid !!timestamp"),
                                               ("!!timestamp 2026-13-45", "month must be"),
                                               ("!!bool maybe", "not a valid !!bool")])
def test_yaml_tags_that_cannot_be_built(root: Path, value: str, expect: str) -> None:
    set_config(root, "ttl: 1800", f"ttl: {value}")
    one_error(b.run_cli(status(root)), code=ExitStatus.CONFIG, expect=expect)


def test_alias_bomb(root: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdef", "bcdefg",
                                                                    strict=True))
    (root / "rollover.yaml").write_text(bomb + b.BASE_CONFIG)
    one_error(b.run_cli(status(root)), code=ExitStatus.CONFIG, expect="alias bomb")


@pytest.mark.parametrize(("old_hex", "new_hex", "what"), [
    ("2a8648ce3d030107", "2a8648ce3d030109", "1.2.840.10045.2.1"),  # an unknown EC curve
    ("2a8648ce3d0201", "2a8648ce3d0209", "1.2.840.10045.2.9"),  # an unknown key algorithm
])
def test_certificate_with_a_key_nobody_can_read(root: Path, old_hex: str, new_hex: str,
                                                what: str) -> None:
    der = certgen.cert_der(certgen.make_chain(1).leaf.cert)
    bad = root / "odd.der"
    bad.write_bytes(der.replace(bytes.fromhex(old_hex), bytes.fromhex(new_hex), 1))
    for argv in (["tlsa", str(bad)], ["tlsa", "--bundle", str(bad)],
                 ["check", b.HOST, "--chain", str(bad), "--tlsa", f"3 1 1 {HEX}"]):
        one_error(b.run_cli(argv), code=ExitStatus.DATA,
                  expect=f"cannot read (algorithm OID {what}")


def test_names_over_the_os_limit(root: Path) -> None:
    one_error(b.run_cli([*status(root), "--state-dir", "s" * 5000]), expect="File name too long")
    set_config(root, "tsig_secret_file: tsig.key", "tsig_secret_file: " + "k" * 5000)
    one_error(b.run_cli(status(root)), code=ExitStatus.CONFIG, expect="longer than the system")
    one_error(b.run_cli(["tlsa", "c" * 5000]), expect="longer than the system allows")


@pytest.mark.parametrize(("change", "field"), [
    ({"slots": []}, "slots"),
    ({"slots": None}, "slots"),
    ({"slots": "x"}, "slots"),
    ({"slots": {b.SLOT.key: 3}}, b.SLOT.key),
])
def test_state_of_the_wrong_shape(root: Path, change: dict[str, object], field: str) -> None:
    b.write_private(root / "state" / "state.json", json.dumps({**b.good_state_doc(),
                                                             **change}).encode())
    err = one_error(b.run_cli(status(root)), code=ExitStatus.ERROR, expect=field)
    assert "KeyError" not in err and "left as it is" in err


# --------------------------------------------------------------------------- 15: accepted


@pytest.mark.parametrize("field", ["0_3", "\u0663", "\uff13", "+3"])
def test_tlsa_fields_are_plain_digits(root: Path, field: str) -> None:
    chain = certgen.write_pem(root / "c.pem", certgen.make_chain(1).leaf)
    o = b.run_cli(["check", b.HOST, "--chain", str(chain), "--tlsa", f"{field} 1 1 {HEX}"])
    one_error(o, code=ExitStatus.USAGE, expect="usage must be a number 0-255")


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "1e400"])
def test_check_timeout_must_be_a_real_positive_number(root: Path, value: str) -> None:
    chain = certgen.write_pem(root / "c.pem", certgen.make_chain(1).leaf)
    o = b.run_cli(["check", b.HOST, "--chain", str(chain), "--tlsa", f"3 1 1 {HEX}",
                   "--timeout", value])
    one_error(o, code=ExitStatus.USAGE, expect="--timeout")


@pytest.mark.parametrize(("path", "value", "field"), [
    (("key_serial",), "2", "key_serial"),
    (("ttl_seen",), "60", "ttl_seen"),
    (("failures",), "3", "failures"),
    (("live_checked",), "no", "live_checked"),
    (("records",), {}, "records"),
    (("keys",), {}, "keys"),
    (("observation",), {}, "observation.owner"),
    (("negative_ttl",), None, "negative_ttl"),
    (("records", 0, "rdata"), 3, "records[0].rdata"),
    (("keys", 0, "spki_sha256"), 3, "keys[0].spki_sha256"),
])
def test_state_with_wrong_types_is_refused_naming_the_field(
        root: Path, path: tuple[object, ...], value: object, field: str) -> None:
    doc = b.good_state_doc()
    target: object = doc["slots"][b.SLOT.key]  # type: ignore[index]
    for p in path[:-1]:
        target = target[p]  # type: ignore[index]
    target[path[-1]] = value  # type: ignore[index]
    state = root / "state" / "state.json"
    b.write_private(state, json.dumps(doc).encode())
    before = state.read_bytes()
    for command in (status(root), ["run", "--config", str(root / "rollover.yaml")]):
        err = one_error(b.run_cli(command), code=ExitStatus.ERROR, expect=field)
        assert str(state) in err
    assert state.read_bytes() == before


@pytest.mark.parametrize("raw", ['"key_serial": 1e400', '"ttl_seen": NaN'])
def test_state_numbers_that_are_not_numbers(root: Path, raw: str) -> None:
    text = json.dumps(b.good_state_doc())
    name = raw.split(":")[0]
    text = text.replace(name + ": 2", raw).replace(name + ": 60", raw)
    assert raw in text
    b.write_private(root / "state" / "state.json", text.encode())
    one_error(b.run_cli(status(root)), code=ExitStatus.ERROR, expect="state.json")


def test_unknown_field_in_a_slot_is_refused(root: Path) -> None:
    doc = b.good_state_doc()
    doc["slots"][b.SLOT.key]["kind_of_thing"] = 1  # type: ignore[index]
    b.write_private(root / "state" / "state.json", json.dumps(doc).encode())
    one_error(b.run_cli(status(root)), expect="kind_of_thing: unknown field of a slot")


# --------------------------------------------------------------------------- 16: hygiene


EVIL_CN = "\x1b[2J\nmail.example.test. IN TLSA 3 1 1 00"


def test_certificate_subjects_cannot_drive_the_terminal_or_break_zone_lines(root: Path) -> None:
    ca = certgen.make_root(cn=EVIL_CN)
    bundle = certgen.write_pem(root / "bundle.pem", ca)
    o = b.run_cli(["tlsa", "--bundle", str(bundle), "--host", b.HOST])
    assert o.code == 0 and "\x1b" not in o.out
    lines = o.out.splitlines()
    assert all(ln.startswith(";") or " IN TLSA 2 1 1 " in ln for ln in lines), o.out
    assert sum(" IN TLSA " in ln for ln in lines if not ln.startswith(";")) == 1
    assert "\\x1b[2J\\x0a" in o.out  # shown, escaped
    leaf = certgen.make_leaf(ca, cn=EVIL_CN)
    chain = certgen.write_pem(root / "chain.pem", leaf, ca)
    o = b.run_cli(["check", b.HOST, "--chain", str(chain), "--tlsa",
                   tlsa.tlsa_record(ca.cert, 2, 1, 1).to_text()])
    assert "\x1b" not in o.out and all(ln.startswith(("OK", "FAIL", "_25.")) for ln in
                                        o.out.splitlines()), o.out


def test_status_escapes_what_servers_said(root: Path) -> None:
    doc = b.good_state_doc()
    slot = doc["slots"][b.SLOT.key]  # type: ignore[index]
    slot["last_error"] = "server said \x1b]0;owned\x07 and \x1b[2J"
    slot["observation"]["answers"][0]["error"] = "banner \x1b[31mred"
    b.write_private(root / "state" / "state.json", json.dumps(doc).encode())
    o = b.run_cli(status(root))
    assert o.code == 0 and "\x1b" not in o.out and "\x07" not in o.out
    assert "\\x1b]0;owned\\x07" in o.out


def test_symlinked_secret_is_refused_without_chmod_advice(root: Path) -> None:
    target = root / "elsewhere"
    target.write_text(b.TSIG_SECRET)
    target.chmod(0o644)
    (root / "tsig.key").unlink()
    (root / "tsig.key").symlink_to(target)
    err = one_error(b.run_cli(status(root)), code=ExitStatus.CONFIG, expect="symbolic link")
    assert "chmod" not in err
    assert target.stat().st_mode & 0o777 == 0o644


def test_permissions_checked_on_the_real_files(root: Path) -> None:
    state = root / "state" / "state.json"
    state.chmod(0o644)
    one_error(b.run_cli(status(root)), expect="state.json is accessible by group/other")
    state.chmod(0o600)
    key = root / "state" / "keys" / "k-1.pem"
    real = root / "loose.pem"
    shutil.copy(key, real)
    real.chmod(0o644)
    key.unlink()
    key.symlink_to(real)
    one_error(b.run_cli(status(root)), expect="k-1.pem is a symbolic link")


@pytest.mark.parametrize("how", ["missing", "empty"])
def test_a_missing_key_is_a_problem_of_the_slot(root: Path, how: str) -> None:
    key = root / "state" / "keys" / "k-2.pem"
    if how == "missing":
        key.unlink()
    else:
        b.write_private(key, b"")
    o = b.run_cli(status(root))
    assert o.code == ExitStatus.ERROR
    assert f"error: next key: key k-2 {'is missing' if how == 'missing' else ''}" in o.out \
        or ("next key: key k-2" in o.out and how in o.out), o.out


def test_python_internals_stay_out_of_messages(root: Path) -> None:
    doc = b.good_state_doc()
    del doc["slots"][b.SLOT.key]["phase"]  # type: ignore[attr-defined, index]
    b.write_private(root / "state" / "state.json", json.dumps(doc).encode())
    err = one_error(b.run_cli(status(root)), expect="phase: missing")
    assert "KeyError" not in err
    chain = certgen.write_pem(root / "c.pem", certgen.make_chain(1).leaf)
    err = one_error(b.run_cli(["check", b.HOST, "--chain", str(chain), "--tlsa", "3 1 1 abc"]),
                    expect="odd number of hex digits")
    assert "fromhex" not in err
    (root / "rollover.yaml").write_text(b.BASE_CONFIG.replace("  ttl: 1800", "  ttl: 1800\0"))
    line = next(i for i, ln in enumerate(b.BASE_CONFIG.splitlines(), 1) if "ttl: 1800" in ln)
    one_error(b.run_cli(status(root)), expect=f"rollover.yaml:{line}: a NUL byte")


def test_non_positive_serial_is_said_once_in_words(root: Path) -> None:
    der = certgen.cert_der(certgen.make_chain(1).leaf.cert)
    serial_at = 4 + 4 + 5  # certificate and TBS headers (30 82 len len), version [0] 02 01 02
    assert der[serial_at] == 0x02  # the serial INTEGER
    # a first content byte of 0x80 makes it negative, same length, still minimal DER
    patched = der[:serial_at + 2] + b"\x80" + der[serial_at + 3:]
    path = root / "zero-serial.der"
    path.write_bytes(patched)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a stray CryptographyDeprecationWarning would raise
        o = b.run_cli(["tlsa", str(path)])
    assert o.code == 0, o.err
    assert o.err.count("non-positive serial number") == 1 and "site-packages" not in o.err


@pytest.mark.parametrize("value", ["100000000000000000000", '"4000d"'])
def test_durations_are_capped(root: Path, value: str) -> None:
    set_config(root, "key_lifetime: 60d", f"key_lifetime: {value}")
    one_error(b.run_cli(status(root)), code=ExitStatus.CONFIG, expect="longer than 10 years")


@pytest.mark.parametrize("command", ["status", "plan", "run"])
def test_empty_state_dir_is_refused(root: Path, command: str) -> None:
    o = b.run_cli([command, "--config", str(root / "rollover.yaml"), "--state-dir", ""])
    one_error(o, code=ExitStatus.USAGE, expect="--state-dir: an empty path")
