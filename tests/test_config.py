"""Config loading: the good example loads; every bad file in tests/config_corpus/ fails with
exactly one line per problem, each "FILE:LINE: key.path: problem", all problems at once.

Corpus convention: a comment `# E: fragment` on a line means "an error naming this line and
containing fragment"; `# W: fragment` the same for a warning. `{DIR}` in a fragment stands for the
directory the config file is in. Each file is copied into a temp directory next to fixture files
(tsig.key 0600, tsig-open.key 0640, ca.pem, postfix/) that relative paths in the corpus refer to.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from rollover.config import registry
from rollover.config.check import parse_duration
from rollover.config.load import (
    Config,
    ConfigFileError,
    load_config,
    system_resolvers,
)
from rollover.errors import ConfigError, ExitStatus
from rollover.model import Algorithm, Scheme, SlotId
from rollover.providers.rfc2136 import RFC2136Options

HERE = Path(__file__).parent
CORPUS = HERE / "config_corpus"
EXAMPLE = HERE.parent / "examples" / "rollover.yaml"
SECRET = "c2VjcmV0LWZvci10ZXN0cy1vbmx5LWRvLW5vdC11c2U="
MARK = re.compile(r"#\s*([EW]):\s*(.*?)\s*(?=#\s*[EW]:|$)")


@dataclass(frozen=True)
class Expect:
    kind: str  # "E" or "W"
    line: int
    fragment: str


def expectations(text: str, directory: Path) -> list[Expect]:
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for kind, fragment in MARK.findall(line):
            out.append(Expect(kind, lineno, fragment.replace("{DIR}", str(directory))))
    return out


def make_fixtures(directory: Path) -> None:
    secret = directory / "tsig.key"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    loose = directory / "tsig-open.key"
    loose.write_text(SECRET + "\n")
    loose.chmod(0o640)
    (directory / "ca.pem").write_text("not checked here\n")
    (directory / "postfix").mkdir()


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.yaml"))


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    make_fixtures(tmp_path)
    (tmp_path / "resolv.conf").write_text("# nothing\n")
    return tmp_path


def load(path: Path) -> Config:
    return load_config(path, resolv_conf=path.parent / "resolv.conf")


def check_lines(lines: list[str], wanted: list[Expect], path: Path) -> None:
    """Each wanted (line, fragment) matches exactly one line; no line is left unexplained."""
    assert len(lines) == len(wanted), "\n".join(lines)
    unused = list(lines)
    for w in wanted:
        prefix = f"{path}:{w.line}: "
        hits = [ln for ln in unused if ln.startswith(prefix) and w.fragment in ln]
        assert hits, f"no line {prefix}...{w.fragment!r} in:\n" + "\n".join(lines)
        unused.remove(hits[0])
    assert not unused


def test_corpus_is_big_enough() -> None:
    bad = [p for p in corpus_files() if "# E:" in p.read_text()]
    assert len(bad) >= 30


@pytest.mark.parametrize("case", corpus_files(), ids=lambda p: p.stem)
def test_corpus(case: Path, cfgdir: Path) -> None:
    text = case.read_text()
    path = cfgdir / case.name
    path.write_text(text)
    wanted = expectations(text, cfgdir)
    errors = [w for w in wanted if w.kind == "E"]
    warnings = [w for w in wanted if w.kind == "W"]
    assert wanted, f"{case.name} has no # E: / # W: marks"
    if not errors:
        config = load(path)
        check_lines(list(config.warnings), warnings, path)
        return
    with pytest.raises(ConfigError) as info:
        load(path)
    err = info.value
    assert isinstance(err, ConfigFileError)
    assert err.exit_status == ExitStatus.CONFIG
    lines = str(err).split("\n")
    assert list(err.problems) == lines
    assert all(ln.strip() and ln == ln.strip() for ln in lines)
    check_lines(lines, errors, path)
    assert "SuperSecretValue" not in str(err)
    assert SECRET not in str(err)


# -- the good example ------------------------------------------------------------------------


def installed_example(root: Path) -> Path:
    """The example with its absolute /etc paths moved under `root`, and those files made."""
    text = EXAMPLE.read_text().replace("/etc/", f"{root}/etc/")
    (root / "etc/rollover").mkdir(parents=True)
    (root / "etc/postfix/rollover").mkdir(parents=True)
    secret = root / "etc/rollover/tsig.key"
    secret.write_bytes((EXAMPLE.parent / "tsig.key.example").read_bytes())
    secret.chmod(0o600)
    path = root / "etc/rollover/rollover.yaml"
    path.write_text(text)
    return path


def test_example_loads(tmp_path: Path) -> None:
    path = installed_example(tmp_path)
    config = load_config(path)
    assert config.warnings == ()
    assert config.path == path
    assert config.state_dir == Path("/var/lib/rollover")
    assert config.resolver == ("192.0.2.53", "2001:db8::53")
    assert config.acme is not None and config.acme.directory is not None
    provider = config.providers["primary"].options
    assert isinstance(provider, RFC2136Options)
    assert provider.tsig_algorithm == "hmac-sha256"
    assert provider.read_secret() == (EXAMPLE.parent / "tsig.key.example").read_text().strip()
    assert [e.host for e in config.endpoints] == ["mail.example.nl", "mail2.example.nl"]
    ep = config.endpoints[0]
    assert ep.scheme is Scheme.CURRENT_NEXT
    assert ep.algorithms == (Algorithm.ECDSA_P256, Algorithm.RSA2048)
    assert ep.policy.key_lifetime == 60 * 86400
    assert ep.policy.retire_grace == 3600
    assert config.installer_for(ep) is not None
    assert config.installers["postfix"].options.command == ("postfix", "reload")
    assert config.installers["postfix"].options.file_mode == 0o600
    assert config.endpoint_slots() == [
        SlotId("mail.example.nl", 25, Algorithm.ECDSA_P256),
        SlotId("mail.example.nl", 25, Algorithm.RSA2048),
        SlotId("mail2.example.nl", 25, Algorithm.ECDSA_P256),
        SlotId("mail2.example.nl", 25, Algorithm.RSA2048),
    ]
    # the secret is never in the config object or its repr
    assert provider.read_secret() not in repr(config)


def test_defaults(cfgdir: Path) -> None:
    path = cfgdir / "r.yaml"
    path.write_text(
        "resolver: 127.0.0.1\n"
        "state_dir: state\n"
        "providers: {p: {type: rfc2136, server: '::1'}}\n"
        "endpoints: [{host: Mail.Example.TEST., provider: p}]\n"
    )
    config = load(path)
    assert config.state_dir == cfgdir / "state"  # relative to the config file
    assert config.resolver == ("127.0.0.1",)
    assert config.dns.timeout == 2.0 and config.dns.port == 53
    ep = config.endpoints[0]
    assert (ep.host, ep.port, ep.ttl, ep.zone) == ("mail.example.test", 25, 3600, None)
    assert ep.algorithms == (Algorithm.ECDSA_P256,)
    assert ep.certificate is None and ep.installer is None
    assert ep.where == f"{path}:4"
    p = config.providers["p"].options
    assert isinstance(p, RFC2136Options)
    assert (p.server, p.port, p.tsig_key_name, p.timeout) == ("::1", 53, None, 5.0)
    assert p.read_secret() is None


def test_warnings(cfgdir: Path) -> None:
    path = cfgdir / "r.yaml"
    path.write_text(
        "resolver: [127.0.0.1]\n"
        "providers:\n"
        "  p: {type: rfc2136, server: 127.0.0.11, tsig_key_name: k,\n"
        "      tsig_algorithm: HMAC-SHA1, tsig_secret_file: tsig.key}\n"
        "endpoints:\n"
        "  - host: mx1.example.test\n"
        "    provider: p\n"
        "    ttl: 60\n"
        "    certificate: {source: files, files: {ecdsa-p256: {chain: c.pem, key: k.pem}}}\n"
        "  - host: mx2.example.test\n"
        "    provider: p\n"
        "    certificate: {source: files, files: {ecdsa-p256: {chain: c2.pem, key: k.pem}}}\n"
        "  - host: mx1.example.test\n"
        "    port: 465\n"
        "    provider: p\n"
        "    certificate: {source: files, files: {ecdsa-p256: {chain: c.pem, key: k.pem}}}\n"
    )
    config = load(path)
    check_lines(
        list(config.warnings),
        [
            Expect("W", 4, "providers.p.tsig_algorithm: hmac-sha1 is weak"),
            Expect("W", 8, "endpoints[0].ttl: TLSA TTL 60 is outside 1800-3600"),
            Expect("W", 12, "is also the key of mx1.example.test (line 6)"),
        ],
        path,
    )
    assert config.providers["p"].options.tsig_algorithm == "hmac-sha1"


def test_missing_resolver_uses_resolv_conf(cfgdir: Path) -> None:
    path = cfgdir / "r.yaml"
    path.write_text("providers: {p: {type: rfc2136, server: 127.0.0.11}}\n"
                    "endpoints: [{host: mail.example.test, provider: p}]\n")  # fmt: skip
    with pytest.raises(ConfigError, match=r"r\.yaml:1: resolver: not set, and .*resolv\.conf"):
        load(path)
    (cfgdir / "resolv.conf").write_text("search example\nnameserver 127.0.0.53\nnameserver ::1\n")
    assert load(path).resolver == ("127.0.0.53", "::1")
    assert system_resolvers(cfgdir / "nonexistent") == ()


class SchemaLess:
    """A third-party provider class without a schema of its own."""

    @classmethod
    def from_options(cls, name: str, options: dict[str, object]) -> SchemaLess:
        return cls()


def test_third_party_provider_options_pass_through(
    cfgdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.EXTRA, ("provider", "acmedns"), SchemaLess)
    path = cfgdir / "r.yaml"
    path.write_text(
        "resolver: [127.0.0.1]\n"
        "providers:\n"
        "  x: {type: acmedns, url: 'https://auth.example', anything: [1, 2]}\n"
        "  p: {type: rfc2136, server: 127.0.0.11}\n"
        "endpoints: [{host: mail.example.test, provider: x}]\n"
    )
    config = load(path)
    assert "auth.example" not in repr(config)  # third-party options may hold secrets
    x = config.providers["x"]
    assert x.type == "acmedns"
    assert dict(x.options) == {"url": "https://auth.example", "anything": [1, 2]}
    assert config.providers["p"].type == "rfc2136"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(0, 0), (90, 90), ("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("30d", 2592000),
     ("1w", 604800), ("1h30m", 5400), ("-1", None), (-1, None), ("1.5h", None), ("h", None),
     ("", None), (True, None), (1.5, None), (None, None)],
)  # fmt: skip
def test_durations(value: object, seconds: int | None) -> None:
    assert parse_duration(value) == seconds


def test_not_utf8(cfgdir: Path) -> None:
    path = cfgdir / "r.yaml"
    path.write_bytes(b"resolver: [127.0.0.1]\nstate_dir: /tmp/\xff\n")
    with pytest.raises(ConfigError, match=r"^.*r\.yaml:2: not UTF-8 text \(byte 38\)$"):
        load(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist$"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_no_traceback_in_a_subprocess(cfgdir: Path) -> None:
    """A bad config through a plain `python -c` caller that prints str(err) like the CLI does."""
    case = CORPUS / "many-problems.yaml"
    path = cfgdir / case.name
    path.write_text(case.read_text())
    code = (
        "import sys\n"
        "from rollover.config.load import load_config\n"
        "from rollover.errors import RolloverError\n"
        "try:\n"
        "    load_config(sys.argv[1])\n"
        "except RolloverError as exc:\n"
        "    print(f'rollover: error: {exc}', file=sys.stderr)\n"
        "    sys.exit(int(exc.exit_status))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
        check=False,
    )
    assert proc.returncode == ExitStatus.CONFIG
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.rstrip("\n").split("\n")
    assert len(lines) == len(expectations(case.read_text(), cfgdir))
    assert all(re.match(rf"^(rollover: error: )?{re.escape(str(path))}:\d+: ", ln) for ln in lines)


@pytest.mark.parametrize(
    "name", ["many-problems.yaml", "yaml-syntax-unclosed.yaml", "empty.yaml", "secret-missing.yaml"]
)
def test_through_the_cli(name: str, cfgdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rollover.cli.main import main
    from rollover.environment import Environment

    text = (CORPUS / name).read_text()
    path = cfgdir / name
    path.write_text(text)
    before = sorted(p.name for p in cfgdir.iterdir())
    status = main(["plan", "--config", str(path)], env=Environment(environ={}))
    err = capsys.readouterr().err
    assert status == ExitStatus.CONFIG
    assert "Traceback" not in err
    lines = err.rstrip("\n").split("\n")
    assert len(lines) == len([e for e in expectations(text, cfgdir) if e.kind == "E"])
    assert all(str(path) + ":" in ln for ln in lines)
    assert sorted(p.name for p in cfgdir.iterdir()) == before


def test_anchors_merge_keys_and_x_extension_keys(cfgdir: Path) -> None:
    path = cfgdir / "r.yaml"
    path.write_text(
        "resolver: 127.0.0.1\n"
        "providers: {p: {type: rfc2136, server: 127.0.0.11}}\n"
        "x-defaults: &defaults\n"
        "  provider: p\n"
        "  ttl: 1800\n"
        "  policy: {retire_grace: 2h}\n"
        "endpoints:\n"
        "  - <<: *defaults\n"
        "    host: mx1.example.test\n"
        "  - <<: *defaults\n"
        "    host: mx2.example.test\n"
        "    ttl: 3600\n"
        "    ttl: 2400\n"
    )
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}:13: endpoints[1].ttl: duplicate key (first given on line 12)"
    path.write_text(path.read_text().replace("    ttl: 2400\n", ""))
    config = load(path)
    assert [(e.host, e.ttl, e.policy.retire_grace) for e in config.endpoints] == [
        ("mx1.example.test", 1800, 7200),
        ("mx2.example.test", 3600, 7200),
    ]
