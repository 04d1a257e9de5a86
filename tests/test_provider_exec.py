"""`type: exec` provider: the conformance suite through a small program (tests/providers/
exec_bind.py) that edits the real lab BIND primary; timeouts, exits, bad JSON as ProviderError."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from providers.conformance import R1, ProviderConformance, Target, fresh_owner

from rollover.errors import ProviderError
from rollover.model import RRset
from rollover.providers.base import Change
from rollover.providers.program import ExecOptions, ExecProvider

from lab.dns import DnsLab

SCRIPT = Path(__file__).parent / "providers" / "exec_bind.py"


@pytest.fixture
def exec_env(dns_lab: DnsLab, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ROLLOVER_EXEC_SERVER", dns_lab.primary.address)
    monkeypatch.setenv("ROLLOVER_EXEC_KEY_NAME", dns_lab.tsig_name)
    monkeypatch.setenv("ROLLOVER_EXEC_KEY_FILE", str(dns_lab.tsig_secret_file))
    monkeypatch.delenv("ROLLOVER_EXEC_MODE", raising=False)
    yield


def make(timeout: float = 10.0, cas: bool = True) -> ExecProvider:
    return ExecProvider("inhouse", ExecOptions((sys.executable, str(SCRIPT)), timeout,
                                               compare_and_swap=cas))


def served(lab: DnsLab, owner: str, rtype: str) -> RRset:
    answer = lab.query(lab.primary, owner, rtype)
    return RRset(owner, rtype, answer.ttl, answer.records)


@pytest.mark.lab
@pytest.mark.usefixtures("exec_env")
class TestExecConformance(ProviderConformance):
    @pytest.fixture
    def target(self, dns_lab: DnsLab) -> Target:
        def meddle(owner: str, rtype: str, ttl: int, rdatas: Iterable[str]) -> None:
            dns_lab.update(owner, rtype, ttl, list(rdatas), replace=False)

        return Target(provider=make(), zone=dns_lab.zone, owner=fresh_owner(dns_lab.zone),
                      served=lambda owner, rtype: served(dns_lab, owner, rtype), meddle=meddle)


# -- failures of the program: one ProviderError each, naming the program -------------------------


def change(owner: str = "_25._tcp.mail.example.test.") -> Change:
    return Change("example.test.", owner, "TLSA", 300, add=frozenset({R1}))


@pytest.mark.parametrize(("mode", "match"), [
    ("exit", r"failed \(exit 3\) reading .*: exec_bind: cannot reach the DNS API"),
    ("garbage", "answered something that is not JSON"),
    ("list", "JSON that is not an object"),
    ("refuse", "refused reading .*: zone is locked by the change freeze"),
])
def test_misbehaving_program(monkeypatch: pytest.MonkeyPatch, mode: str, match: str) -> None:
    monkeypatch.setenv("ROLLOVER_EXEC_MODE", mode)
    with pytest.raises(ProviderError, match=match) as err:
        make().apply(change())
    message = str(err.value)
    assert message.startswith("provider inhouse (exec): ") and "\n" not in message


def test_timeout_kills_the_program(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOVER_EXEC_MODE", "sleep")
    with pytest.raises(ProviderError, match=r"did not answer within 0.5s .*killed"):
        make(timeout=0.5).read("example.test.", "_25._tcp.mail.example.test.", "TLSA")


def test_missing_program() -> None:
    provider = ExecProvider("inhouse", ExecOptions(("/nonexistent/dns-program",)))
    with pytest.raises(ProviderError, match="command not found"):
        provider.read("example.test.", "_25._tcp.mail.example.test.", "TLSA")


@pytest.mark.lab
@pytest.mark.usefixtures("exec_env")
def test_apply_without_ok_is_an_error(dns_lab: DnsLab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOVER_EXEC_MODE", "no-ok")
    with pytest.raises(ProviderError, match='no "ok": true'):
        make().apply(change(fresh_owner(dns_lab.zone)))


def test_declared_support_is_checked() -> None:
    provider = ExecProvider("inhouse", ExecOptions(("true",), supports=frozenset({"TLSA"})))
    with pytest.raises(ProviderError, match="does not support TXT"):
        provider.apply(Change("example.test.", "_acme-challenge.mail.example.test.", "TXT", 60,
                              add=frozenset({'"x"'})))


@pytest.mark.parametrize(("opts", "match"), [
    ({}, "command: missing"),
    ({"command": []}, "command: must not be empty"),
    ({"command": "x", "supports": ["TLSA", "MX"]}, r"supports\[1\]: must be TLSA or TXT"),
    ({"command": "x", "timeout": 0}, "timeout: 0 is out of range"),
])
def test_options(opts: dict[str, object], match: str) -> None:
    with pytest.raises(ProviderError, match=match):
        ExecProvider.from_options("inhouse", opts)
