"""The bad-input campaign (issue 13): several hundred generated inputs, each broken in one
place, against the real CLI. Every case must give one clear error line (FILE:LINE for config),
a non-zero exit, no traceback, no hang, no secret in the output, and leave every file as it was.

Generated from a fixed seed, so a failure is reproducible by its name. The counts by category
are printed (pytest -s) and at least 400 cases must run.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import badinput as b
import pytest
from cryptography.hazmat.primitives import serialization

from rollover.errors import ExitStatus
from rollover.state import codec

import certgen

SEED = 20260113
GOOD_TLSA = "3 1 1 " + "ab" * 32

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = b.make_setup(tmp_path_factory.mktemp("template") / "base")
    ok = b.run_cli(["status", "--no-observe", "--config", str(root / "rollover.yaml")])
    assert ok.code == 0 and not ok.err, ok.err  # the base works: each case breaks one thing
    return root


class Cases:
    """A fresh copy of the template per case, its tree hashed before and compared after."""

    def __init__(self, template: Path, work: Path) -> None:
        self.template = template
        self.work = work
        self.n = 0
        self.tally = b.Tally()

    @property
    def config_lines(self) -> list[str]:
        return b.BASE_CONFIG.splitlines()

    def fresh(self) -> Path:
        self.n += 1
        root = self.work / f"c{self.n}"
        shutil.copytree(self.template, root, symlinks=True)
        return root

    def run(self, category: str, name: str, root: Path, argv: list[str], **judge: Any) -> None:
        before = b.tree_hash(root)
        try:
            outcome = b.run_cli(argv, cwd=root)
        except b.CaseTimeout as exc:
            self.tally.record(category, name, [f"hang: {exc}"])
            return
        self.tally.judge(category, name, outcome, **judge)
        after = b.tree_hash(root)
        # a lock file may appear (run takes the lock before it reads); nothing else may change
        changed = sorted(k for k in set(before) | set(after)
                         if before.get(k) != after.get(k) and not k.endswith("/lock"))
        if changed:
            self.tally.failures.append(f"{category}/{name}: changed on disk: {changed[:5]}")


@pytest.fixture(scope="module")
def cases(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cases]:
    c = Cases(template, tmp_path_factory.mktemp("cases"))
    yield c
    print("\nbad-input campaign, cases by category:")
    for category, count in sorted(c.tally.counts.items()):
        print(f"  {category:<22} {count}")
    print(f"  {'total':<22} {sum(c.tally.counts.values())}")


def status(root: Path, *extra: str) -> list[str]:
    return ["status", "--no-observe", "--config", str(root / "rollover.yaml"), *extra]


def assert_clean(c: Cases, category: str) -> None:
    failures = [f for f in c.tally.failures if f.startswith(category + "/")]
    assert not failures, f"{len(failures)} of {c.tally.counts.get(category)}:\n" + "\n".join(
        failures[:25])


# --------------------------------------------------------------------------- config YAML

# Values wrong for every scalar setting of the base config.
ANY_BAD = {
    "list": "[1, 2]",
    "mapping": "{a: 1}",
    "tag-int": '!!int "abc"',
    "tag-timestamp": "!!timestamp garbage",
    "tag-float": "!!float x",
    "tag-bool": "!!bool maybe",
    "tag-unknown": "!secret xyz",
    "python-tag": "!!python/object/apply:os.system [id]",
    "cycle": "&a [*a]",
    "bigint": "9" * 5000,
}
STRINGISH_BAD = {  # wrong for names, addresses and enums (not for free-form paths)
    "escape-codes": '"\\e[2J\\nnext"',
    "secret": b.TSIG_SECRET,
    "huge": "h" * 100_000,
    "integer": "12345",
    "boolean": "yes",
    "nul": '"a\\0b"',
}
NUMBER_BAD = {
    "negative": "-1",
    "huge": "100000000000000000000",
    "nan": ".nan",
    "inf": ".inf",
    "string": "ten",
    "arabic-digits": "\u0663\u0660",
    "fullwidth-digits": "\uff13\uff10",
}
DURATION_BAD = {"1e20s": "100000000000000000000", "20y": '"20y"', "minus": '"-5m"',
                "nan": ".nan", "words": '"a while"', "11-years": '"4000d"'}
KINDS: dict[str, dict[str, str]] = {
    "resolver": STRINGISH_BAD, "timeout": NUMBER_BAD, "server": STRINGISH_BAD,
    "tsig_algorithm": STRINGISH_BAD, "tsig_secret_file": {"secret": b.TSIG_SECRET,
                                                          "missing": "no-such.key",
                                                          "directory": "state",
                                                          "nul": '"a\\0b"',
                                                          "too-long": "k" * 5000},
    "host": STRINGISH_BAD, "port": NUMBER_BAD, "zone": STRINGISH_BAD,
    "provider": STRINGISH_BAD, "scheme": STRINGISH_BAD, "ttl": NUMBER_BAD,
    "key_lifetime": DURATION_BAD, "renew_before": DURATION_BAD, "retire_grace": DURATION_BAD,
    "algorithms": {"unknown": "[dsa]", "empty": "[]", "nested": "[[ecdsa-p256]]",
                   "duplicate": "[ecdsa-p256, ecdsa-p256]"},
    "tsig_key_name": {"huge": "n" * 300, "mapping": "{a: 1}", "spaces": '"two words"'},
}


def config_mutations() -> Iterator[tuple[str, int, str]]:
    """(name, line number, new config text) for each key x bad value."""
    lines = b.BASE_CONFIG.splitlines()
    for i, line in enumerate(lines):
        key, sep, value = line.strip().lstrip("- ").partition(": ")
        if not sep or not value or line.lstrip().startswith("#") or key not in KINDS:
            continue
        values = dict(KINDS[key])
        if key not in ("tsig_secret_file", "algorithms", "tsig_key_name"):
            values.update(ANY_BAD)
        for vname, bad in values.items():
            new = [*lines]
            new[i] = line[: line.index(": ") + 2] + bad
            yield f"{key}={vname}", i + 1, "\n".join(new) + "\n"


def structural_configs(rng: random.Random) -> Iterator[tuple[str, bytes, str | None]]:
    """(name, file content, text the error must hold) for whole-file problems."""
    base = b.BASE_CONFIG
    yield "empty", b"", "empty"
    yield "only-comment", b"# nothing\n", "empty"
    yield "top-level-list", b"- a\n- b\n", "top level"
    yield "top-level-scalar", b"hello\n", "top level"
    yield "multi-document", (base + "---\n" + base).encode(), "rollover.yaml"
    yield "unknown-top-key", (base + "colour: blue\n").encode(), "unknown key"
    yield "secret-as-key", (base + f"{b.TSIG_SECRET}: 1\n").encode(), "unknown key"
    yield "duplicate-key", (base + "resolver: 127.0.0.2\n").encode(), "duplicate key"
    yield "tab-indent", base.replace("  server", "\tserver").encode(), "YAML"
    yield "nul-line-7", (base.split("\n", 6)[0:6] and "\n".join(base.split("\n")[:6])
                         + "\n\0\n").encode(), ":7:"
    yield "not-utf8", base.encode() + b"# \xff\xfe\n", "not UTF-8"
    yield "latin1", "# caf\xe9\n".encode("latin-1") + base.encode(), "not UTF-8"
    yield "bom-then-garbage", b"\xef\xbb\xbf" + b"\x00\x01\x02", "not allowed"
    yield "deep-flow", ("x: " + "[" * 100_000 + "]" * 100_000 + "\n").encode(), "levels deep"
    yield "deep-block", "".join("  " * d + f"k{d}:\n" for d in range(300)).encode(), "deep"
    yield "alias-bomb", (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
                  for p, c in zip("abcdefg", "bcdefgh", strict=True))
        + base
    ).encode(), "alias bomb"
    yield "over-1MiB", (base + "# " + "x" * (1 << 20) + "\n").encode(), "larger than 1 MiB"
    yield "huge-host-10MB", None, "larger than"  # written separately (10 MB)
    yield "shadow-like", (
        b"root:$y$j9T$abcdefghijkl$ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd:19700:0:99999:7:::\n"
        b"daemon:*:19700:0:99999:7:::\n"
    ), "rollover.yaml"
    yield "passwd-as-yaml", b"root: x:0:0:root:/root:/bin/bash\nbin: x:1:1::/bin:\n", \
        "rollover.yaml:2:"
    yield "foreign-yaml", b"name: ci\non: [push]\njobs:\n  test: {runs-on: x}\n", \
        "no rollover setting"
    yield "json-object", b'{"name": "package", "version": "1.0"}\n', "no rollover setting"
    for n in range(6):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4000)))
        yield f"random-bytes-{n}", blob, None
    for n in range(4):
        text = "".join(rng.choice(": -[]{}&*!|>'\"%@`#,?\n  ab1") for _ in range(300))
        yield f"random-yaml-chars-{n}", text.encode(), None


def test_config_campaign(cases: Cases) -> None:
    cat = "config YAML"
    for name, line, text in config_mutations():
        root = cases.fresh()
        (root / "rollover.yaml").write_text(text)
        expect = None if name.endswith(("=cycle",)) else f"rollover.yaml:{line}:"
        cases.run(cat, name, root, status(root), max_lines=3, expect=expect)
    rng = random.Random(SEED)
    for name, data, expect in structural_configs(rng):
        root = cases.fresh()
        if data is None:
            data = (b.BASE_CONFIG.replace(f"host: {b.HOST}", "host: " + "a" * 10_000_000)).encode()
        (root / "rollover.yaml").write_bytes(data)
        cases.run(cat, name, root, status(root), max_lines=3, expect=expect)
    # the config file itself is not a regular file, or cannot be named
    for name, make in special_files().items():
        root = cases.fresh()
        target = make(root)
        cases.run(cat, f"file-{name}", root, ["status", "--no-observe", "--config", target],
                  expect="config file")
    assert_clean(cases, cat)


def special_files() -> dict[str, Callable[[Path], str]]:
    """Ways a named input can fail to be a readable regular file. Each returns the name."""

    def fifo(root: Path) -> str:
        os.mkfifo(root / "fifo")
        return str(root / "fifo")

    def link_zero(root: Path) -> str:
        (root / "zero").symlink_to("/dev/zero")
        return str(root / "zero")

    def dangling(root: Path) -> str:
        (root / "dangling").symlink_to(root / "nowhere")
        return str(root / "dangling")

    def unreadable_dir(root: Path) -> str:
        return str(root / "state")

    return {
        "fifo": fifo,
        "dev-zero": lambda _root: "/dev/zero",
        "dev-urandom": lambda _root: "/dev/urandom",
        "symlink-to-dev-zero": link_zero,
        "dangling-symlink": dangling,
        "directory": unreadable_dir,
        "missing": lambda root: str(root / "missing.yaml"),
        "under-a-file": lambda root: str(root / "rollover.yaml" / "x"),
        "name-too-long": lambda root: str(root / ("n" * 5000)),
        "component-too-long": lambda root: str(root / ("n" * 300) / "x.yaml"),
    }


# --------------------------------------------------------------------------- secret files


def secret_cases() -> dict[str, tuple[Callable[[Path], None], str]]:
    """name -> (break root/tsig.key, text the error must hold)."""

    def content(data: bytes, mode: int = 0o600) -> Callable[[Path], None]:
        def make(root: Path) -> None:
            p = root / "tsig.key"
            p.write_bytes(data)
            p.chmod(mode)
        return make

    def replace_with(make_target: Callable[[Path, Path], None]) -> Callable[[Path], None]:
        def make(root: Path) -> None:
            p = root / "tsig.key"
            p.unlink()
            make_target(root, p)
        return make

    def link_to(mode: int) -> Callable[[Path, Path], None]:
        def make(root: Path, p: Path) -> None:
            target = root / "elsewhere.key"
            target.write_text(b.TSIG_SECRET + "\n")
            target.chmod(mode)
            p.symlink_to(target)
        return make

    secret = b.TSIG_SECRET.encode()
    return {
        "missing": (replace_with(lambda _r, _p: None), "does not exist"),
        "empty": (content(b""), "empty"),
        "blank-lines": (content(b"\n\n  \n"), "empty"),
        "two-lines": (content(secret + b"\n" + secret + b"\n"), "one line"),
        "not-utf8": (content(b"\xff\xfe" + secret), "UTF-8"),
        "not-base64": (content(b"this is not*base64!\n"), "base64"),
        "group-readable": (content(secret, 0o640), "chmod go-rwx"),
        "world-readable": (content(secret, 0o604), "chmod go-rwx"),
        "group-writable": (content(secret, 0o620), "chmod go-rwx"),
        "huge": (content(secret * 40_000), "larger than"),
        "nul-bytes": (content(b"\0" * 64), "base64"),
        "symlink-private": (replace_with(link_to(0o600)), "symbolic link"),
        "symlink-loose": (replace_with(link_to(0o644)), "symbolic link"),
        "symlink-dev-zero": (replace_with(lambda _r, p: p.symlink_to("/dev/zero")),
                             "symbolic link"),
        "dangling-symlink": (replace_with(lambda r, p: p.symlink_to(r / "gone")),
                             "symbolic link"),
        "directory": (replace_with(lambda _r, p: p.mkdir(mode=0o700)), "not a regular file"),
        "fifo": (replace_with(lambda _r, p: os.mkfifo(p, 0o600)), "not a regular file"),
    }


def eab_config(key_file: str) -> str:
    return b.BASE_CONFIG + (
        "acme:\n  directory: https://127.0.0.1:14000/dir\n  eab:\n    kid: kid-1\n"
        f"    hmac_key_file: {key_file}\n"
    )


def test_secret_file_campaign(cases: Cases) -> None:
    cat = "secret files"
    for name, (make, expect) in secret_cases().items():
        for command in ("status", "run"):
            root = cases.fresh()
            make(root)
            argv = status(root) if command == "status" else [
                "run", "--config", str(root / "rollover.yaml")]
            cases.run(cat, f"tsig-{name}-{command}", root, argv, max_lines=3, expect=expect)
    # the EAB HMAC key file: checked at config load, like the TSIG secret file
    eab_bad: dict[str, tuple[Callable[[Path], str], str]] = {
        "missing": (lambda r: "no-such-eab.key", "does not exist"),
        "loose": (lambda r: _write(r / "eab.key", b.EAB_SECRET, 0o644), "chmod go-rwx"),
        "symlink": (lambda r: _link(r / "eab.key", r / "tsig.key"), "symbolic link"),
        "directory": (lambda r: "state", "not a regular file"),
        "fifo": (lambda r: _fifo(r / "eab.fifo"), "not a regular file"),
        "secret-pasted-as-name": (lambda r: b.EAB_SECRET, "does not exist"),
    }
    for name, (make_eab, expect) in eab_bad.items():
        root = cases.fresh()
        (root / "rollover.yaml").write_text(eab_config(make_eab(root)))
        cases.run(cat, f"eab-{name}", root, status(root), max_lines=3, expect=expect)
    # a secret pasted where a file name or another value belongs is never echoed
    for key in ("tsig_secret_file", "tsig_algorithm", "server", "zone", "host"):
        root = cases.fresh()
        text = "\n".join(
            ln[: ln.index(": ") + 2] + b.TSIG_SECRET if ln.strip().lstrip("- ").startswith(
                key + ":") else ln for ln in b.BASE_CONFIG.splitlines())
        (root / "rollover.yaml").write_text(text + "\n")
        cases.run(cat, f"secret-pasted-into-{key}", root, status(root), max_lines=3,
                  expect="looks like a secret")
    assert_clean(cases, cat)


def _write(p: Path, text: str, mode: int) -> str:
    p.write_text(text + "\n")
    p.chmod(mode)
    return str(p)


def _link(p: Path, target: Path) -> str:
    p.symlink_to(target)
    return str(p)


def _fifo(p: Path) -> str:
    os.mkfifo(p, 0o600)
    return str(p)


# --------------------------------------------------------------------------- certificates


def certificate_inputs(root: Path, rng: random.Random) -> dict[str, str]:
    """name -> path of a file that is not a usable certificate/chain."""
    chain = certgen.make_chain(1)
    pem = chain.leaf.cert_pem()
    der = certgen.cert_der(chain.leaf.cert)
    d = root / "inputs"
    d.mkdir()
    files: dict[str, bytes] = {"empty": b"", "blank": b" \n\t\n", "text": b"hello\n"}
    for n in range(8):
        head = [b"", b"\x30", b"\x30\x82", b"-----BEGIN CERTIFICATE-----\n"][n % 4]
        files[f"random-{n}"] = head + bytes(rng.randrange(256) for _ in range(rng.randrange(1,
                                                                                         3000)))
    for frac in (0.1, 0.3, 0.5, 0.7, 0.9, 0.99):
        files[f"pem-cut-{frac}"] = pem[: int(len(pem) * frac)]
        files[f"der-cut-{frac}"] = der[: int(len(der) * frac)]
    body = pem.split(b"\n", 1)[1]
    files["wrong-label"] = b"-----BEGIN FOO-----\n" + body.replace(b"CERTIFICATE", b"FOO")
    files["mismatched-end"] = pem.replace(b"END CERTIFICATE", b"END PRIVATE KEY")
    files["bad-base64"] = pem.replace(pem[40:48], b"!!!!****")
    files["der-trailing-garbage"] = der + b"garbage!"
    files["csr-pem"] = certgen.make_csr()
    files["csr-der"] = certgen_csr_der()
    files["crl-pem"] = b"-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n"
    files["pkcs7-pem"] = b"-----BEGIN PKCS7-----\nMAA=\n-----END PKCS7-----\n"
    files["encrypted-key"] = certgen.private_key_pem(chain.leaf.key, b"pw")
    files["encrypted-key-traditional"] = certgen.private_key_pem(
        certgen.key("rsa2048"), b"pw", traditional=True)
    files["unknown-curve"] = _patched(der, "2a8648ce3d030107", "2a8648ce3d030109")
    files["unknown-key-type"] = _patched(der, "2a8648ce3d0201", "2a8648ce3d0209")
    files["too-big"] = pem * 2000  # over 1 MiB
    out = {}
    for name, data in files.items():
        (d / name).write_bytes(data)
        out[name] = str(d / name)
    os.mkfifo(d / "fifo")
    out["fifo"] = str(d / "fifo")
    (d / "zero-link").symlink_to("/dev/zero")
    out["symlink-dev-zero"] = str(d / "zero-link")
    out["dev-zero"] = "/dev/zero"
    out["dev-urandom"] = "/dev/urandom"
    out["directory"] = str(d)
    out["missing"] = str(d / "missing.pem")
    out["name-too-long"] = str(d / ("c" * 5000))
    return out


def certgen_csr_der() -> bytes:
    from cryptography import x509

    return x509.load_pem_x509_csr(certgen.make_csr()).public_bytes(serialization.Encoding.DER)


def _patched(der: bytes, old_hex: str, new_hex: str) -> bytes:
    old, new = bytes.fromhex(old_hex), bytes.fromhex(new_hex)
    assert old in der and len(old) == len(new)
    return der.replace(old, new, 1)


def test_certificate_campaign(cases: Cases) -> None:
    cat = "certificate inputs"
    root = cases.fresh()
    rng = random.Random(SEED + 1)
    key_only = root / "key-only.pem"
    key_only.write_bytes(certgen.public_key_pem(certgen.key("p256", 3)))
    inputs = certificate_inputs(root, rng)
    for name, path in inputs.items():
        for command, argv in (
            ("tlsa", ["tlsa", path]),
            ("tlsa-bundle", ["tlsa", "--bundle", path]),
            ("check-chain", ["check", b.HOST, "--chain", path, "--tlsa", GOOD_TLSA]),
        ):
            cases.run(cat, f"{name}-{command}", root, argv)
    for command, argv in (
        ("bundle-of-a-key", ["tlsa", "--bundle", str(key_only)]),
        ("chain-of-a-key", ["check", b.HOST, "--chain", str(key_only), "--tlsa", GOOD_TLSA]),
    ):
        cases.run(cat, command, root, argv, expect="key-only.pem")
    assert_clean(cases, cat)


# --------------------------------------------------------------------------- TLSA strings


def tlsa_strings() -> dict[str, str]:
    hexdata = "ab" * 32
    out: dict[str, str] = {}
    field_bad = {"underscore": "0_3", "arabic": "\u0663", "fullwidth": "\uff13", "plus": "+3",
                 "minus": "-1", "too-big": "256", "exponent": "1e1", "hex": "0x3",
                 "float": "3.0", "letters": "DANE", "huge": "9" * 400}
    for i, field in enumerate(("usage", "selector", "mtype")):
        for vname, bad in field_bad.items():
            parts = ["3", "1", "1", hexdata]
            parts[i] = bad
            out[f"{field}-{vname}"] = " ".join(parts)
    data_bad = {"odd-length": hexdata[:-1], "non-hex": "zz" * 32, "fullwidth-hex": "\uff41" * 64,
                "short-sha256": "ab" * 20, "long-sha256": "ab" * 33, "escape": "\x1b[2J" + hexdata,
                "newline": hexdata[:10] + "\n" + hexdata[10:-1], "nul": "\0" + hexdata,
                "huge": "a" * 100_001, "empty-data": ""}
    for vname, bad in data_bad.items():
        out[f"data-{vname}"] = f"3 1 1 {bad}"
    out["sha512-short"] = "3 1 2 " + hexdata
    out["too-few-fields"] = "3 1 1"
    out["empty"] = ""
    out["spaces"] = "    "
    out["words"] = "three one one abcd"
    out["zone-file-line"] = f"_25._tcp.{b.HOST}. IN TLSA 3 1 1 {hexdata}"
    return out


def test_tlsa_string_campaign(cases: Cases) -> None:
    cat = "TLSA strings"
    root = cases.fresh()
    chain = certgen.make_chain(1)
    good = certgen.write_pem(root / "chain.pem", chain.leaf)
    for name, text in tlsa_strings().items():
        cases.run(cat, name, root, ["check", b.HOST, "--chain", str(good), "--tlsa", text],
                  expect="--tlsa")
    assert_clean(cases, cat)


# --------------------------------------------------------------------------- CLI arguments


def cli_cases(root: Path) -> dict[str, list[str]]:
    cfg = str(root / "rollover.yaml")
    chain = str(root / "chain.pem")
    check = ["check", b.HOST, "--chain", chain, "--tlsa", GOOD_TLSA]
    out: dict[str, list[str]] = {}
    numbers = {"underscore": "0_3", "arabic": "\u0663", "fullwidth": "\uff13", "negative": "-1",
               "empty": "", "words": "ten", "hex": "0x19", "exponent": "1e3", "nan": "nan",
               "inf": "inf", "huge": "9" * 400}
    for vname, bad in numbers.items():
        out[f"check-port-{vname}"] = [*check, "--port", bad]
        out[f"tlsa-ttl-{vname}"] = ["tlsa", chain, "--host", b.HOST, "--ttl", bad]
        out[f"check-timeout-{vname}"] = [*check, "--timeout", bad]
        out[f"run-max-wait-{vname}"] = ["run", "--config", cfg, "--wait", "--max-wait", bad]
    for vname, bad in {"zero": "0", "too-big": "70000", "huge": "99999999999999"}.items():
        out[f"check-port-{vname}"] = [*check, "--port", bad]
        out[f"tlsa-port-{vname}"] = ["tlsa", chain, "--host", b.HOST, "--port", bad]
    out["check-timeout-zero"] = [*check, "--timeout", "0"]
    out["check-timeout-1e400"] = [*check, "--timeout", "1e400"]
    out["check-timeout-year"] = [*check, "--timeout", "31536000"]
    out["tlsa-ttl-2^31"] = ["tlsa", chain, "--host", b.HOST, "--ttl", str(2**31)]
    out["tlsa-usage-4"] = ["tlsa", chain, "--usage", "4"]
    out["tlsa-selector-2"] = ["tlsa", chain, "--selector", "2"]
    out["tlsa-mtype-3"] = ["tlsa", chain, "--mtype", "3"]
    out["tlsa-usage-arabic"] = ["tlsa", chain, "--usage", "\u0663"]
    out["tlsa-host-escape"] = ["tlsa", chain, "--host", "\x1b[2Jmail"]
    out["tlsa-host-huge"] = ["tlsa", chain, "--host", "a" * 100_000]
    out["tlsa-bundle-usage-3"] = ["tlsa", chain, "--bundle", "--usage", "3"]
    out["tlsa-rdata-and-host"] = ["tlsa", chain, "--rdata", "--host", b.HOST]
    out["tlsa-empty-file-name"] = ["tlsa", ""]
    out["tlsa-nul-in-name"] = ["tlsa", "a\0b"]
    out["tlsa-no-files"] = ["tlsa"]
    for command in ("status", "plan", "run"):
        out[f"{command}-state-dir-empty"] = [command, "--config", cfg, "--state-dir", ""]
        out[f"{command}-config-empty"] = [command, "--config", ""]
        out[f"{command}-config-nul"] = [command, "--config", "a\0b"]
        out[f"{command}-state-dir-too-long"] = [command, "--config", cfg, "--state-dir",
                                                "s" * 5000]
        out[f"{command}-state-dir-a-file"] = [command, "--config", cfg, "--state-dir", cfg]
        out[f"{command}-unknown-option"] = [command, "--frobnicate"]
    out["check-host-escape"] = ["check", "\x1b[2J\nmail", "--tlsa", GOOD_TLSA, "--address",
                                "127.0.0.1"]
    out["check-host-huge"] = ["check", "m" * 100_000, "--tlsa", GOOD_TLSA]
    out["check-address-name"] = ["check", b.HOST, "--tlsa", GOOD_TLSA, "--address", "mail"]
    out["check-resolver-escape"] = ["check", b.HOST, "--resolver", "\x1b]0;pwned\x07"]
    out["check-algorithm-dsa"] = ["check", b.HOST, "--algorithm", "dsa"]
    out["check-chain-and-address"] = [*check, "--address", "127.0.0.1"]
    out["check-no-host"] = ["check"]
    out["unknown-command"] = ["frobnicate"]
    out["unknown-command-escape"] = ["\x1b[2J"]
    out["no-command"] = []
    out["verbose-only"] = ["-v"]
    return out


def test_cli_argument_campaign(cases: Cases) -> None:
    cat = "CLI arguments"
    root = cases.fresh()
    certgen.write_pem(root / "chain.pem", certgen.make_chain(1).leaf)
    for name, argv in cli_cases(root).items():
        cases.run(cat, name, root, argv)
    assert_clean(cases, cat)


# --------------------------------------------------------------------------- state files


def _paths(value: Any, where: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) of the document below its slots, depth first."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*where, k), v
            yield from _paths(v, (*where, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*where, i), v
            yield from _paths(v, (*where, i))


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = copy.deepcopy(doc)
    target = doc
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return doc


def _delete(doc: Any, path: tuple[Any, ...]) -> Any:
    doc = copy.deepcopy(doc)
    target = doc
    for p in path[:-1]:
        target = target[p]
    del target[path[-1]]
    return doc


NAN = float("nan")
WRONG_FOR: dict[type, list[Any]] = {
    int: ["12", 1.5, NAN, float("inf"), -1, True, [], {}],
    float: ["12", NAN, float("inf"), -1.0, True, [], {}],
    str: [3, True, [], {}, "", "\x1b[2J"],
    bool: ["no", 0, 1, [], {}],
    list: [{}, "x", 3],
    dict: [[], "x", 3, {}],
}
# free text (escaped when shown) and ids whose only rule is their syntax: any string fits
FREE_TEXT = {"last_error", "dnssec", "error", "problems", "target_key", "stopped", "label",
             "issuer_names"}


def field_of(path: tuple[Any, ...]) -> codec.F:
    """The schema entry (rollover.state.codec) for a path below a slot."""
    table: codec.Table | codec.ListOf = codec.SLOT
    f = codec.F(codec.SLOT, required=True)
    for part in path:
        if isinstance(part, int):
            assert isinstance(f.kind, codec.ListOf)
            item = f.kind.item
            f = codec.F(item, required=True)
            continue
        assert isinstance(f.kind, codec.Table), path
        table = f.kind
        f = table.fields[part]
    return f


def state_mutations(rng: random.Random) -> Iterator[tuple[str, Any]]:
    """(name, document or raw bytes) of state files that are wrong in one place."""
    good = b.good_state_doc()
    slot = ("slots", b.SLOT.key)
    for path, value in _paths(good["slots"][b.SLOT.key], slot):
        name = ".".join(str(p) for p in path[2:])
        field = field_of(path[2:])
        kind = next((t for t in (bool, int, float, str, list, dict) if isinstance(value, t)),
                    None)
        wrongs = list(WRONG_FOR[kind]) if kind else [3, "x", [], True]
        if set(path[2:]) & FREE_TEXT:
            wrongs = [w for w in wrongs if not isinstance(w, str)]
        if path[-1] == "mono":  # seconds: a number is right, whatever the good value holds
            wrongs = ["x", [], True, -1, NAN, float("inf")]
        if path[-1] == "rcode":
            wrongs.remove("")  # an address that never answered has no rcode yet
        if not field.null:
            wrongs.append(None)
        for w in rng.sample(wrongs, min(4, len(wrongs))):
            yield f"{name}={_label(w)}", _set(good, path, w)
        if field.required and not isinstance(path[-1], int):
            yield f"{name}-missing", _delete(good, path)
    for where in ((), ("keys", 0), ("records", 0), ("installed",), ("observation",),
                  ("observation", "answers", 0)):
        target: Any = good["slots"][b.SLOT.key]
        for w in where:
            target = target[w]
        yield f"unknown-field-in-{'.'.join(map(str, where)) or 'slot'}", _set(
            good, (*slot, *where, "colour"), "blue")
    yield "unknown-top-level-field", {**good, "colour": "blue"}
    for label, slots in (("list", []), ("null", None), ("string", "x"), ("number", 3)):
        yield f"slots-a-{label}", {**good, "slots": slots}
    yield "slot-a-number", {**good, "slots": {b.SLOT.key: 3}}
    yield "slot-empty-object", {**good, "slots": {b.SLOT.key: {}}}
    yield "slot-name-garbage", {**good, "slots": {"\x1b[2J": good["slots"][b.SLOT.key]}}
    yield "slot-name-mismatch", {**good, "slots": {
        "other.example.test:25:ecdsa-p256": good["slots"][b.SLOT.key]}}
    yield "keys-an-object", _set(good, (*slot, "keys"), {})
    yield "records-an-object", _set(good, (*slot, "records"), {})
    yield "observation-empty", _set(good, (*slot, "observation"), {})
    yield "key-serial-1e400", json.dumps(good).replace('"key_serial": 2', '"key_serial": 1e400')
    yield "ttl-seen-NaN", json.dumps(good).replace('"ttl_seen": 60', '"ttl_seen": NaN')
    yield "ttl-seen-Infinity", json.dumps(good).replace('"ttl_seen": 60', '"ttl_seen": Infinity')
    yield "key-serial-5000-digits", json.dumps(good).replace('"key_serial": 2',
                                                             '"key_serial": ' + "9" * 5000)
    yield "schema-string", {**good, "schema": "1"}
    yield "schema-2", {**good, "schema": 2}
    yield "schema-0", {**good, "schema": 0}
    yield "schema-missing", {"slots": good["slots"]}
    yield "schema-huge", json.dumps(good).replace('"schema": 1', '"schema": ' + "9" * 30)
    raw = json.dumps(good, indent=2)
    yield "deep-array", "[" * 100_000 + "]" * 100_000
    yield "deep-object-in-slot", raw.replace('"last_error": null',
                                             '"last_error": ' + "[" * 50_000 + "]" * 50_000)
    yield "truncated", raw[: len(raw) // 2]
    yield "empty", ""
    yield "not-utf8", raw.encode() + b"\xff"
    yield "top-level-list", "[1, 2]"
    yield "foreign-json", '{"name": "package", "version": "1.0", "dependencies": {}}'
    yield "foreign-with-schema", '{"schema": 1, "name": "package"}'
    for n in range(4):
        yield f"random-bytes-{n}", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000)))


def _label(value: Any) -> str:
    if isinstance(value, float) and value != value:
        return "NaN"
    text = json.dumps(value, allow_nan=True) if not isinstance(value, str) else repr(value)
    return text[:20]


def test_state_file_campaign(cases: Cases) -> None:
    cat = "state files"
    rng = random.Random(SEED + 2)
    for name, doc in state_mutations(rng):
        root = cases.fresh()
        if isinstance(doc, bytes):
            data = doc
        elif isinstance(doc, str):
            data = doc.encode()
        else:
            data = json.dumps(doc, indent=2, allow_nan=True).encode()
        b.write_private(root / "state" / "state.json", data)
        for command in (["status", "--no-observe"],) + ((["run"],) if rng.random() < 0.15
                                                         else ()):
            argv = [*command, "--config", str(root / "rollover.yaml")]
            cases.run(cat, f"{name}-{command[0]}", root, argv, expect="state.json")
    # the file itself
    def fifo(p: Path) -> None:
        p.unlink()
        os.mkfifo(p, 0o600)

    def link(target: str | None) -> Callable[[Path], None]:
        def make(p: Path) -> None:
            copy_ = p.with_name("copy.json")
            shutil.copy(p, copy_)
            p.unlink()
            p.symlink_to(target or copy_)
        return make

    def directory(p: Path) -> None:
        p.unlink()
        p.mkdir(mode=0o700)

    sd_files: dict[str, Callable[[Path], None]] = {
        "fifo": fifo,
        "symlink-dev-zero": link("/dev/zero"),
        "symlink-to-copy": link(None),
        "directory": directory,
        "mode-0644": lambda p: p.chmod(0o644),
        "mode-0640": lambda p: p.chmod(0o640),
        "over-16MiB": lambda p: b.write_private(p, p.read_bytes() + b" " * (16 << 20)),
    }
    for name, make in sd_files.items():
        root = cases.fresh()
        make(root / "state" / "state.json")
        cases.run(cat, f"file-{name}", root, status(root), expect="state")
    assert_clean(cases, cat)


def test_missing_or_loose_key_files_are_a_problem_of_the_slot(cases: Cases) -> None:
    """plan/status report a current or next key the state names but cannot use."""
    cat = "state key files"
    def symlink_to_loose(p: Path) -> None:
        real = p.with_name("real.key")
        real.write_bytes(p.read_bytes())
        real.chmod(0o644)
        p.unlink()
        p.symlink_to(real)

    def fifo(p: Path) -> None:
        p.unlink()
        os.mkfifo(p, 0o600)

    breaks: dict[str, Callable[[Path], None]] = {
        "missing": lambda p: p.unlink(),
        "empty": lambda p: b.write_private(p, b""),
        "loose": lambda p: p.chmod(0o644),
        "symlink-to-loose": symlink_to_loose,
        "fifo": fifo,
    }
    for key_id in ("k-1", "k-2"):
        for name, make in breaks.items():
            root = cases.fresh()
            make(root / "state" / "keys" / f"{key_id}.pem")
            before = b.tree_hash(root)
            try:
                o = b.run_cli(status(root), cwd=root)
            except b.CaseTimeout as exc:
                cases.tally.record(cat, f"{key_id}-{name}", [f"hang: {exc}"])
                continue
            problems = []
            if o.code == 0:
                problems.append("exit 0")
            if key_id not in o.err + o.out:
                problems.append(f"{key_id} not named")
            if "Traceback" in o.err or "PRIVATE KEY" in o.err + o.out:
                problems.append("traceback or key material in the output")
            if b.tree_hash(root) != before:
                problems.append("changed on disk")
            cases.tally.record(cat, f"{key_id}-{name}", problems)
    assert_clean(cases, cat)


# --------------------------------------------------------------------------- totals


def test_campaign_size(cases: Cases) -> None:
    """Runs last in this module: the campaign above must have been at least 400 cases."""
    total = sum(cases.tally.counts.values())
    if len(cases.tally.counts) < 7:
        pytest.skip("only part of the campaign ran (-k)")
    assert total >= 400, cases.tally.counts


# --------------------------------------------------------------------------- a few for real


@pytest.mark.parametrize("case", ["config-fifo", "state-deep", "cert-dev-zero", "state-fifo",
                                  "secret-in-server", "cn-escape"])
def test_subprocess_cases(template: Path, tmp_path: Path, case: str) -> None:
    """A handful through a real process: no hang, no traceback, exit status as documented."""
    root = tmp_path / "c"
    shutil.copytree(template, root, symlinks=True)
    cfg = str(root / "rollover.yaml")
    argv: list[str]
    want = ExitStatus.CONFIG
    if case == "config-fifo":
        os.mkfifo(root / "fifo")
        argv = ["status", "--no-observe", "--config", str(root / "fifo")]
    elif case == "state-deep":
        b.write_private(root / "state" / "state.json", b"[" * 100_000 + b"]" * 100_000)
        argv, want = ["status", "--no-observe", "--config", cfg], ExitStatus.ERROR
    elif case == "state-fifo":
        (root / "state" / "state.json").unlink()
        os.mkfifo(root / "state" / "state.json", 0o600)
        argv, want = ["status", "--no-observe", "--config", cfg], ExitStatus.ERROR
    elif case == "cert-dev-zero":
        argv, want = ["tlsa", "/dev/zero"], ExitStatus.DATA
    elif case == "secret-in-server":
        (root / "rollover.yaml").write_text(
            b.BASE_CONFIG.replace("server: 127.0.30.11", f"server: {b.TSIG_SECRET}"))
        argv = ["status", "--no-observe", "--config", cfg]
    else:  # not bad input: a hostile subject, which must not break the zone-file comments
        ca = certgen.make_root(cn="\x1b[2J\nIN TLSA 3 1 1 00")
        certgen.write_pem(root / "evil.pem", ca)
        argv, want = ["tlsa", "--bundle", str(root / "evil.pem")], ExitStatus.OK
    before = b.tree_hash(root)
    proc = subprocess.run([sys.executable, "-m", "rollover", *argv], capture_output=True,
                          text=True, timeout=30, cwd=root, stdin=subprocess.DEVNULL)
    assert proc.returncode == want, proc.stderr
    assert "Traceback" not in proc.stderr and "\x1b" not in proc.stderr + proc.stdout
    assert b.TSIG_SECRET not in proc.stderr + proc.stdout
    if want == ExitStatus.OK:
        assert not proc.stderr
        lines = proc.stdout.splitlines()
        assert lines and all(ln.startswith(";") or ln.startswith("2 1 1 ") for ln in lines)
    else:
        errors = [ln for ln in proc.stderr.splitlines() if "warning" not in ln]
        assert len(errors) == 1 and errors[0].startswith("rollover: error: "), proc.stderr
    assert b.tree_hash(root) == before
