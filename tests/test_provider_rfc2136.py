"""RFC 2136 provider: the conformance suite against the lab's BIND primary, plus what is specific to
dynamic updates (TSIG failures, REFUSED, unreachable servers, the prerequisite race, secrets)."""

from __future__ import annotations

import base64
import logging
import os
import secrets
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from providers.conformance import FOREIGN, R1, R2, ProviderConformance, Target, fresh_owner

from rollover.errors import ProviderError
from rollover.model import RRset
from rollover.providers.base import Change
from rollover.providers.rfc2136 import RFC2136Provider

from lab.dns import DnsLab
from lab.proc import lab_net

SECRET = base64.b64encode(b"\x01" * 32).decode()


def make(lab: DnsLab, **kw: Any) -> RFC2136Provider:
    args: dict[str, Any] = {
        "tsig_key_name": lab.tsig_name,
        "tsig_secret": lab.tsig_secret,
        "tsig_algorithm": lab.tsig_algorithm,
        "timeout": 5.0,
    }
    server = kw.pop("server", lab.primary.address)
    port = kw.pop("port", 53)
    args.update(kw)
    return RFC2136Provider("primary", server, port, **args)


def served(lab: DnsLab, owner: str, rtype: str) -> RRset:
    answer = lab.query(lab.primary, owner, rtype)
    assert answer.aa, f"primary not authoritative for {owner}: {answer}"
    return RRset(owner, rtype, answer.ttl, answer.records)


def nothing_anywhere(lab: DnsLab, owner: str, rtype: str = "TLSA") -> bool:
    return all(not lab.query(s, owner, rtype).records for s in lab.servers)


def tlsa_change(lab: DnsLab, owner: str, *add: str, **kw: Any) -> Change:
    return Change(lab.zone, owner, "TLSA", 300, add=frozenset(add), **kw)


# -- the shared suite -----------------------------------------------------------------------------


@pytest.mark.lab
class TestRFC2136Conformance(ProviderConformance):
    @pytest.fixture
    def target(self, dns_lab: DnsLab) -> Target:
        def meddle(owner: str, rtype: str, ttl: int, rdatas: Iterable[str]) -> None:
            dns_lab.update(owner, rtype, ttl, list(rdatas), replace=False)

        return Target(
            provider=make(dns_lab),
            zone=dns_lab.zone,
            owner=fresh_owner(dns_lab.zone),
            served=lambda owner, rtype: served(dns_lab, owner, rtype),
            meddle=meddle,
        )


# -- RFC 2136 specifics against the lab ------------------------------------------------------------


@pytest.fixture
def owner(dns_lab: DnsLab) -> str:
    return fresh_owner(dns_lab.zone)


@pytest.mark.lab
def test_change_reaches_every_server(dns_lab: DnsLab, owner: str) -> None:
    make(dns_lab).apply(tlsa_change(dns_lab, owner, R1, R2))
    dns_lab.wait_all(owner, "TLSA", [R1, R2])


@pytest.mark.lab
def test_reapply_sends_nothing(dns_lab: DnsLab, owner: str) -> None:
    provider = make(dns_lab)
    change = tlsa_change(dns_lab, owner, R1)
    provider.apply(change)
    serial = dns_lab.serial(dns_lab.primary)
    provider.apply(change)
    provider.apply(Change(dns_lab.zone, owner, "TLSA", 300, remove=frozenset({R2})))
    assert dns_lab.serial(dns_lab.primary) == serial


@pytest.mark.lab
def test_change_in_effect_sends_no_update(dns_lab: DnsLab) -> None:
    """The parent zone `test.` refuses every update; a change already in effect there still
    succeeds, because nothing is sent (a real change is refused, so the check is not vacuous)."""
    provider = make(dns_lab, server=dns_lab.parent.address)
    address = dns_lab.parent.address
    provider.apply(Change("test.", "ns.test.", "A", dns_lab.ttl, add=frozenset({address})))
    provider.apply(Change("test.", "ns.test.", "A", dns_lab.ttl, remove=frozenset({"192.0.2.1"})))
    with pytest.raises(ProviderError, match="REFUSED"):
        provider.apply(Change("test.", "ns.test.", "A", dns_lab.ttl + 1,
                              add=frozenset({address})))


@pytest.mark.lab
def test_race_between_read_and_update_fails_the_prerequisite(
    dns_lab: DnsLab, owner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone edits the RRset after the provider's own read and before its update: the
    value-dependent prerequisite makes the server refuse the whole update (NXRRSET)."""
    provider = make(dns_lab)
    provider.apply(tlsa_change(dns_lab, owner, R1))
    client = provider._client
    real_read = client.read
    calls: list[object] = []

    def read_then_meddle(*args: Any) -> RRset:
        result = real_read(*args)
        if not calls:
            dns_lab.update(owner, "TLSA", 300, [FOREIGN], replace=False)
        calls.append(args)
        return result

    monkeypatch.setattr(client, "read", read_then_meddle)
    with pytest.raises(ProviderError) as err:
        provider.apply(Change(dns_lab.zone, owner, "TLSA", 300, add=frozenset({R2}),
                              remove=frozenset({R1})))
    message = str(err.value)
    assert "between our read and our update" in message and "NXRRSET" in message
    assert served(dns_lab, owner, "TLSA").rdatas == {R1, FOREIGN}


@pytest.mark.lab
def test_race_on_absent_rrset_fails_the_prerequisite(
    dns_lab: DnsLab, owner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = make(dns_lab)
    real_read = provider._client.read
    calls: list[object] = []

    def read_then_meddle(*args: Any) -> RRset:
        result = real_read(*args)
        if not calls:
            dns_lab.update(owner, "TLSA", 300, [FOREIGN], replace=False)
        calls.append(args)
        return result

    monkeypatch.setattr(provider._client, "read", read_then_meddle)
    with pytest.raises(ProviderError, match="YXRRSET"):
        provider.apply(tlsa_change(dns_lab, owner, R1))
    assert served(dns_lab, owner, "TLSA").rdatas == {FOREIGN}


@pytest.mark.lab
def test_wrong_secret(dns_lab: DnsLab, owner: str) -> None:
    serial = dns_lab.serial(dns_lab.primary)
    provider = make(dns_lab, tsig_secret=SECRET)
    with pytest.raises(ProviderError) as err:
        provider.apply(tlsa_change(dns_lab, owner, R1))
    message = str(err.value)
    assert dns_lab.tsig_name.rstrip(".") in message
    assert "BADSIG" in message and "tsig_secret_file" in message
    assert SECRET not in message and dns_lab.tsig_secret not in message
    assert nothing_anywhere(dns_lab, owner)
    assert dns_lab.serial(dns_lab.primary) == serial


@pytest.mark.lab
def test_wrong_key_name(dns_lab: DnsLab, owner: str) -> None:
    provider = make(dns_lab, tsig_key_name="no-such-key.")
    with pytest.raises(ProviderError) as err:
        provider.apply(tlsa_change(dns_lab, owner, R1))
    message = str(err.value)
    assert "no-such-key" in message and "BADKEY" in message and "tsig_key_name" in message
    assert dns_lab.tsig_secret not in message
    assert nothing_anywhere(dns_lab, owner)


@pytest.mark.lab
def test_wrong_algorithm(dns_lab: DnsLab, owner: str) -> None:
    provider = make(dns_lab, tsig_algorithm="hmac-sha512")
    with pytest.raises(ProviderError, match="tsig_algorithm"):
        provider.apply(tlsa_change(dns_lab, owner, R1))
    assert nothing_anywhere(dns_lab, owner)


@pytest.mark.lab
def test_update_not_allowed_is_refused(dns_lab: DnsLab) -> None:
    """The lab's parent zone `test.` is served (same key known) but has no allow-update."""
    provider = make(dns_lab, server=dns_lab.parent.address)
    owner = f"c{secrets.token_hex(4)}.test."
    with pytest.raises(ProviderError) as err:
        provider.apply(Change("test.", owner, "TXT", 60, add=frozenset({'"x"'})))
    message = str(err.value)
    assert "REFUSED" in message and "allow-update" in message
    assert dns_lab.tsig_name.rstrip(".") in message


@pytest.mark.lab
def test_zone_not_served_is_refused(dns_lab: DnsLab) -> None:
    provider = make(dns_lab)
    with pytest.raises(ProviderError) as err:
        provider.apply(Change("other.test.", "_25._tcp.mail.other.test.", "TLSA", 300,
                              add=frozenset({R1})))
    assert "REFUSED" in str(err.value) and "other.test" in str(err.value)


@pytest.mark.lab
def test_secondary_is_not_the_primary(dns_lab: DnsLab, owner: str) -> None:
    """Pointing the provider at a secondary: reads work, the update is not applied there."""
    provider = make(dns_lab, server=dns_lab.bind_secondary.address)
    with pytest.raises(ProviderError):
        provider.apply(tlsa_change(dns_lab, owner, R1))
    assert nothing_anywhere(dns_lab, owner)


@pytest.mark.lab
def test_referral_is_not_authoritative(dns_lab: DnsLab, owner: str) -> None:
    """The parent server answers names under example.test. with a referral (AA=0): not usable."""
    provider = make(dns_lab, server=dns_lab.parent.address)
    with pytest.raises(ProviderError, match=r"not authoritative .*no AA"):
        provider.read(dns_lab.zone, owner, "TLSA")
    with pytest.raises(ProviderError, match="not authoritative"):
        provider.apply(tlsa_change(dns_lab, owner, R1))
    assert nothing_anywhere(dns_lab, owner)


@pytest.mark.lab
def test_from_options_reads_the_lab_secret_file(dns_lab: DnsLab, owner: str) -> None:
    provider = RFC2136Provider.from_options("primary", {
        "type": "rfc2136",
        "server": dns_lab.primary.address,
        "tsig_key_name": dns_lab.tsig_name,
        "tsig_algorithm": "HMAC-SHA256",
        "tsig_secret_file": str(dns_lab.tsig_secret_file),
    })
    provider.apply(tlsa_change(dns_lab, owner, R1))
    assert served(dns_lab, owner, "TLSA").rdatas == {R1}


# -- unreachable servers (real sockets on the lab's loopback net, no DNS lab needed) -------------


def unused_address() -> str:
    return f"{lab_net()}.99"


def test_connection_refused() -> None:
    provider = RFC2136Provider("p", unused_address(), 53, tsig_key_name="k.",
                               tsig_secret=SECRET, timeout=2.0)
    with pytest.raises(ProviderError) as err:
        provider.read("example.test.", "_25._tcp.mail.example.test.", "TLSA")
    message = str(err.value)
    assert f"{unused_address()}:53" in message and "refused" in message
    assert SECRET not in message


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A TCP listener that accepts connections (kernel backlog) and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((f"{lab_net()}.98", 0))
    sock.listen(8)
    try:
        yield sock.getsockname()
    finally:
        sock.close()


def test_timeout_names_server_and_limit(silent_server: tuple[str, int]) -> None:
    host, port = silent_server
    provider = RFC2136Provider("p", host, port, tsig_key_name="k.", tsig_secret=SECRET,
                               timeout=0.3)
    with pytest.raises(ProviderError) as err:
        provider.apply(Change("example.test.", "_25._tcp.mail.example.test.", "TLSA", 300,
                              add=frozenset({R1})))
    assert str(err.value).startswith(
        f"provider p (rfc2136): server {host}:{port} did not answer within 0.3s")


# -- construction and options (pure) ---------------------------------------------------------------


def test_repr_and_str_hide_the_secret() -> None:
    provider = RFC2136Provider("primary", "127.0.0.1", tsig_key_name="k.", tsig_secret=SECRET)
    for text in (repr(provider), str(provider), repr(provider._client), repr(vars(provider))):
        assert SECRET not in text
        assert base64.b64decode(SECRET).hex() not in text
    assert "tsig_key_name='k.'" in repr(provider)


@pytest.mark.parametrize("secret", ["not base64!", "QUJD=x", "", "   "])
def test_bad_secret_base64(secret: str) -> None:
    with pytest.raises(ProviderError, match="TSIG secret") as err:
        RFC2136Provider("p", "127.0.0.1", tsig_key_name="k.", tsig_secret=secret)
    if secret.strip():
        assert secret not in str(err.value)


@pytest.mark.parametrize("alg", ["hmac-sha256", "HMAC-SHA256", "hmac-sha256.", "hmac-sha512"])
def test_algorithm_names(alg: str) -> None:
    provider = RFC2136Provider("p", "127.0.0.1", tsig_key_name="k.", tsig_secret=SECRET,
                               tsig_algorithm=alg)
    assert provider.tsig_algorithm == alg.lower().rstrip(".")


def test_unknown_algorithm() -> None:
    known = r"unknown TSIG algorithm 'hmac-foo' \(known: hmac-sha1"
    with pytest.raises(ProviderError, match=known):
        RFC2136Provider("p", "127.0.0.1", tsig_key_name="k.", tsig_secret=SECRET,
                        tsig_algorithm="hmac-foo")


def test_wait_applied_returns() -> None:
    RFC2136Provider("p", "127.0.0.1", tsig_key_name="k.", tsig_secret=SECRET).wait_applied(0)


def secret_file(tmp_path: Path, mode: int, text: str = SECRET + "\n") -> Path:
    path = tmp_path / "tsig.secret"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def options(path: Path | str, **kw: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {"server": "127.0.0.1", "tsig_key_name": "k.",
                            "tsig_secret_file": str(path)}
    opts.update(kw)
    return opts


def test_from_options_defaults(tmp_path: Path) -> None:
    provider = RFC2136Provider.from_options("primary", options(secret_file(tmp_path, 0o600)))
    assert (provider.name, provider.port, provider.tsig_algorithm, provider.timeout) == (
        "primary", 53, "hmac-sha256", 5.0)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_from_options_refuses_loose_secret_file(tmp_path: Path, mode: int) -> None:
    path = secret_file(tmp_path, mode)
    with pytest.raises(ProviderError) as err:
        RFC2136Provider.from_options("primary", options(path))
    message = str(err.value)
    assert "provider 'primary'" in message and str(path) in message and "chmod" in message
    assert SECRET not in message


@pytest.mark.parametrize("opts,match", [
    ({"tsig_secret_file": "/nonexistent/tsig.secret"}, "does not exist"),
    ({"server": None}, "server: missing"),
    ({"server": "ns1.example.test"}, "server: must be an IP address"),
    ({"tsig_key_name": ""}, "tsig_key_name: must be a non-empty string"),
    ({"tsig_key_name": None}, "tsig_secret_file: needs tsig_key_name"),
    ({"port": "53"}, "port: must be an integer"),
    ({"port": 0}, r"port: 0 is out of range"),
    ({"port": True}, "port: must be an integer"),
    ({"timeout": -1}, "timeout: -1 is out of range"),
    ({"tsig_algorithm": "md5"}, "unknown TSIG algorithm"),
    ({"tsig_algorithm": 5}, "tsig_algorithm: must be a non-empty string"),
    ({"tsig_secret": "inline"}, "tsig_secret: unknown key"),
])
def test_from_options_errors(tmp_path: Path, opts: dict[str, Any], match: str) -> None:
    path = secret_file(tmp_path, 0o600)
    with pytest.raises(ProviderError, match=match) as err:
        RFC2136Provider.from_options("primary", options(path, **opts))
    assert str(err.value).startswith("provider 'primary': ")
    assert SECRET not in str(err.value)


def test_from_options_bad_base64_in_file(tmp_path: Path) -> None:
    path = secret_file(tmp_path, 0o600, "this is not base64\n")
    with pytest.raises(ProviderError, match="not valid base64") as err:
        RFC2136Provider.from_options("primary", options(path))
    assert "this is not" not in str(err.value)


# -- the secret never leaks ----------------------------------------------------------------------


@pytest.mark.lab
def test_secret_never_in_any_message_or_log(
    dns_lab: DnsLab, owner: str, caplog: pytest.LogCaptureFixture,
    silent_server: tuple[str, int],
) -> None:
    caplog.set_level(logging.DEBUG)
    good, wrong = dns_lab.tsig_secret, SECRET
    texts: list[str] = []

    def attempt(provider: RFC2136Provider, change: Change) -> None:
        texts.extend((repr(provider), str(provider)))
        try:
            provider.apply(change)
        except ProviderError as exc:
            texts.append(str(exc))

    attempt(make(dns_lab), tlsa_change(dns_lab, owner, R1))
    attempt(make(dns_lab), tlsa_change(dns_lab, owner, R2, expect=frozenset()))
    attempt(make(dns_lab), Change(dns_lab.zone, owner, "TLSA", 300, remove=frozenset({R1, R2})))
    attempt(make(dns_lab, tsig_secret=wrong), tlsa_change(dns_lab, owner, FOREIGN))
    attempt(make(dns_lab, tsig_key_name="other."), tlsa_change(dns_lab, owner, FOREIGN))
    attempt(make(dns_lab, tsig_algorithm="hmac-sha1"), tlsa_change(dns_lab, owner, FOREIGN))
    attempt(make(dns_lab, server=dns_lab.parent.address),
            Change("test.", "x.test.", "TXT", 60, add=frozenset({'"x"'})))
    attempt(make(dns_lab, server=unused_address()), tlsa_change(dns_lab, owner, R1))
    host, port = silent_server
    attempt(make(dns_lab, server=host, port=port, timeout=0.2), tlsa_change(dns_lab, owner, R1))
    attempt(make(dns_lab), tlsa_change(dns_lab, owner, "3 1 1 zz"))
    assert len([t for t in texts if "RFC2136Provider(" not in t]) >= 8
    texts.append(caplog.text)
    for secret in (good, wrong):
        raw = base64.b64decode(secret)
        for form in (secret, raw.hex(), base64.b64encode(raw).decode().rstrip("=")):
            assert not any(form in t for t in texts)
