"""PowerDNS provider: the conformance suite against a real pdns_server (HTTP API + DNS), plus
what is specific to it (zone kinds, API key, unreachable API, secrets)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from providers.conformance import R1, R2, ProviderConformance, Target, fresh_owner

from rollover.errors import ProviderError
from rollover.model import RRset
from rollover.providers.base import Change
from rollover.providers.powerdns import PowerDNSOptions, PowerDNSProvider

from lab.pdns import PdnsLab
from lab.proc import lab_net, wait_for

pytestmark = pytest.mark.lab


def make(lab: PdnsLab, **kw: Any) -> PowerDNSProvider:
    key = kw.pop("api_key", lab.api_key)
    opts: dict[str, Any] = {"api_url": lab.api_url, "api_key_file": lab.api_key_file}
    opts.update(kw)
    return PowerDNSProvider("pdns", PowerDNSOptions(**opts), key)


def served(lab: PdnsLab, owner: str, rtype: str) -> RRset:
    answer = lab.query(owner, rtype)
    assert answer.aa, f"pdns not authoritative for {owner}: {answer}"
    return RRset(owner, rtype, answer.ttl, answer.records)


class TestPowerDNSConformance(ProviderConformance):
    @pytest.fixture
    def target(self, pdns_lab: PdnsLab) -> Target:
        return Target(
            provider=make(pdns_lab),
            zone=pdns_lab.zone,
            owner=fresh_owner(pdns_lab.zone),
            served=lambda owner, rtype: served(pdns_lab, owner, rtype),
            meddle=pdns_lab.meddle,
        )


# -- PowerDNS specifics -----------------------------------------------------------------------


def test_patch_replaces_the_whole_rrset_with_upper_case_input(pdns_lab: PdnsLab) -> None:
    owner = fresh_owner(pdns_lab.zone)
    provider = make(pdns_lab)
    provider.apply(Change(pdns_lab.zone, owner, "TLSA", 300, add=frozenset({R1.upper()})))
    ttl, contents = pdns_lab.api_rrset(owner, "TLSA")
    assert ttl == 300 and {c.lower() for c in contents} == {R1}


def test_soa_serial_moves_with_soa_edit_api(pdns_lab: PdnsLab) -> None:
    """The lab zone has soa_edit_api DEFAULT: every PATCH bumps the serial (secondaries
    notice the change)."""
    before = pdns_lab.serial()
    make(pdns_lab).apply(Change(pdns_lab.zone, fresh_owner(pdns_lab.zone), "TLSA", 300,
                                add=frozenset({R1})))
    assert pdns_lab.serial() > before


def test_master_zone_change_reaches_the_secondary_at_once(pdns_lab: PdnsLab) -> None:
    """A Master zone: after the PATCH the provider has pdns_server NOTIFY the secondary, which
    transfers the new serial within a second or so (not at PowerDNS's 60 s xfr cycle)."""
    if pdns_lab._secondary is None:
        pdns_lab.start_secondary()
    zone = pdns_lab.master_zone
    owner = fresh_owner(zone)
    make(pdns_lab).apply(Change(zone, owner, "TLSA", 300, add=frozenset({R1})))
    wait_for(lambda: pdns_lab.query(owner, "TLSA", server=pdns_lab.secondary_address).records
             == {R1}, 10.0, "the BIND secondary to transfer the change")


def test_slave_zone_is_refused(pdns_lab: PdnsLab) -> None:
    owner = fresh_owner(pdns_lab.slave_zone)
    with pytest.raises(ProviderError) as err:
        make(pdns_lab).apply(Change(pdns_lab.slave_zone, owner, "TLSA", 300,
                                    add=frozenset({R1})))
    message = str(err.value)
    assert "Slave zone" in message and "primary" in message
    assert message.startswith("provider pdns (powerdns): ")


def test_zone_not_on_server(pdns_lab: PdnsLab) -> None:
    with pytest.raises(ProviderError, match=r"not found \(404\)"):
        make(pdns_lab).read("other.test.", "_25._tcp.mail.other.test.", "TLSA")


def test_wrong_api_key_is_refused_and_never_shown(pdns_lab: PdnsLab,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + pdns_lab.api_key[:8] + "-key"
    owner = fresh_owner(pdns_lab.zone)
    with pytest.raises(ProviderError) as err:
        make(pdns_lab, api_key=wrong).apply(
            Change(pdns_lab.zone, owner, "TLSA", 300, add=frozenset({R1})))
    message = str(err.value)
    assert "refused the API key" in message and "api_key_file" in message
    for secret in (wrong, pdns_lab.api_key):
        assert secret not in message and secret not in caplog.text
    assert pdns_lab.api_rrset(owner, "TLSA") == (None, set())


def test_unreachable_api() -> None:
    opts = PowerDNSOptions(f"http://{lab_net()}.99:8081", Path("/nonexistent"), timeout=2.0)
    provider = PowerDNSProvider("pdns", opts, "k")
    with pytest.raises(ProviderError) as err:
        provider.read("pdns.test.", "_25._tcp.mail.pdns.test.", "TLSA")
    assert f"cannot reach http://{lab_net()}.99:8081" in str(err.value)


def test_unsupported_record_type_is_refused(pdns_lab: PdnsLab) -> None:
    with pytest.raises(ProviderError, match="does not support A records"):
        make(pdns_lab).apply(Change(pdns_lab.zone, f"x.{pdns_lab.zone}", "A", 60,
                                    add=frozenset({"192.0.2.1"})))


def test_rectify_option_calls_rectify(pdns_lab: PdnsLab) -> None:
    owner = fresh_owner(pdns_lab.zone)
    make(pdns_lab, rectify=True).apply(Change(pdns_lab.zone, owner, "TLSA", 300,
                                              add=frozenset({R1, R2})))
    assert served(pdns_lab, owner, "TLSA").rdatas == {R1, R2}


def test_from_options_reads_the_key_file(pdns_lab: PdnsLab) -> None:
    provider = PowerDNSProvider.from_options("pdns", {
        "type": "powerdns", "api_url": pdns_lab.api_url,
        "api_key_file": str(pdns_lab.api_key_file)})
    owner = fresh_owner(pdns_lab.zone)
    provider.apply(Change(pdns_lab.zone, owner, "TLSA", 300, add=frozenset({R1})))
    assert served(pdns_lab, owner, "TLSA").rdatas == {R1}
    assert pdns_lab.api_key not in repr(provider)


@pytest.mark.parametrize(("opts", "match"), [
    ({"api_url": "ftp://x"}, "api_url: 'ftp://x' is not an http"),
    ({"api_url": "http://h:8081/api/v1"}, "without a path"),
    ({"soa_edit_api": "sometimes"}, "unknown SOA-EDIT-API"),
    ({"api_key": "inline"}, "api_key: unknown key"),
])
def test_options_are_checked(tmp_path: Path, opts: dict[str, Any], match: str) -> None:
    key = tmp_path / "k"
    key.write_text("secret-value\n")
    os.chmod(key, 0o600)
    base: dict[str, Any] = {"api_url": "http://127.0.0.1:8081", "api_key_file": str(key)}
    base.update(opts)
    with pytest.raises(ProviderError, match=match) as err:
        PowerDNSProvider.from_options("pdns", base)
    assert "secret-value" not in str(err.value)


def test_loose_key_file_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("secret-value\n")
    os.chmod(key, 0o644)
    with pytest.raises(ProviderError, match="chmod"):
        PowerDNSProvider.from_options("pdns", {"api_url": "http://127.0.0.1:8081",
                                               "api_key_file": str(key)})
