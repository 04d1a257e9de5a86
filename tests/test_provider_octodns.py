"""octoDNS bridge: the conformance suite on two real backends, PowerDNS (through
octodns-powerdns, against the lab's pdns_server) and BIND (through octodns-bind's RFC 2136
provider, against the lab's BIND primary). Scoped plans: unrelated records are never touched."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import pytest
from providers.conformance import R1, R2, ProviderConformance, Target, fresh_owner

from rollover.config.load import load_config
from rollover.errors import ConfigError, ProviderError
from rollover.model import RRset
from rollover.providers.base import Change
from rollover.providers.octodns_bridge import OctoDNSProvider

from lab.dns import DnsLab
from lab.pdns import PdnsLab

pytest.importorskip("octodns")
pytestmark = pytest.mark.lab


def via_pdns(lab: PdnsLab) -> OctoDNSProvider:
    return OctoDNSProvider.from_options("octo", {
        "class": "octodns_powerdns.PowerDnsProvider",
        "options": {"host": lab.address, "port": lab.api_port},
        "secret_files": {"api_key": str(lab.api_key_file)},
    })


def via_bind(lab: DnsLab) -> OctoDNSProvider:
    return OctoDNSProvider.from_options("octo", {
        "class": "octodns_bind.Rfc2136Provider",
        "options": {"host": lab.primary.address, "key_name": lab.tsig_name,
                    "key_algorithm": "hmac-sha256"},
        "secret_files": {"key_secret": str(lab.tsig_secret_file)},
    })


class TestOctoDNSPowerDNSConformance(ProviderConformance):
    @pytest.fixture
    def target(self, pdns_lab: PdnsLab) -> Target:
        def served(owner: str, rtype: str) -> RRset:
            answer = pdns_lab.query(owner, rtype)
            return RRset(owner, rtype, answer.ttl, answer.records)

        return Target(provider=via_pdns(pdns_lab), zone=pdns_lab.zone,
                      owner=fresh_owner(pdns_lab.zone), served=served, meddle=pdns_lab.meddle)


class TestOctoDNSBindConformance(ProviderConformance):
    @pytest.fixture
    def target(self, dns_lab: DnsLab) -> Target:
        def served(owner: str, rtype: str) -> RRset:
            answer = dns_lab.query(dns_lab.primary, owner, rtype)
            return RRset(owner, rtype, answer.ttl, answer.records)

        def meddle(owner: str, rtype: str, ttl: int, rdatas: Iterable[str]) -> None:
            dns_lab.update(owner, rtype, ttl, list(rdatas), replace=False)

        return Target(provider=via_bind(dns_lab), zone=dns_lab.zone,
                      owner=fresh_owner(dns_lab.zone), served=served, meddle=meddle)


def test_plan_touches_only_the_managed_owner(pdns_lab: PdnsLab) -> None:
    """The zone holds unrelated records (which the desired zone of a whole-zone octoDNS plan
    would lack, and so delete): a rollover change leaves every one of them as it was."""
    owner = fresh_owner(pdns_lab.zone)
    neighbour = owner.replace("_25._tcp.", "_465._tcp.")
    pdns_lab.set_rrset(neighbour, "TLSA", 600, [R2])
    pdns_lab.set_rrset(f"www.{owner.split('._tcp.', 1)[1]}", "A", 60, ["192.0.2.80"])
    pdns_lab.set_rrset(f"_acme-challenge.{owner.split('._tcp.', 1)[1]}", "TXT", 60,
                       ['"someone else\'s token"'])

    def others() -> set[tuple[str, str, int, frozenset[str]]]:
        doc = pdns_lab.api("GET", f"/api/v1/servers/localhost/zones/{pdns_lab.zone}")
        return {(r["name"], r["type"], r["ttl"], frozenset(x["content"] for x in r["records"]))
                for r in doc["rrsets"] if r["name"] != owner and r["type"] != "SOA"}

    before = others()
    assert len(before) >= 3
    provider = via_pdns(pdns_lab)
    provider.apply(Change(pdns_lab.zone, owner, "TLSA", 300, add=frozenset({R1, R2})))
    provider.apply(Change(pdns_lab.zone, owner, "TLSA", 300, remove=frozenset({R2})))
    assert others() == before
    assert pdns_lab.query(owner, "TLSA").records == {R1}


def test_secret_never_in_messages_or_logs(pdns_lab: PdnsLab, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = tmp_path / "wrong.key"
    wrong.write_text("wrong-key-value-123\n")
    os.chmod(wrong, 0o600)
    provider = OctoDNSProvider.from_options("octo", {
        "class": "octodns_powerdns.PowerDnsProvider",
        "options": {"host": pdns_lab.address, "port": pdns_lab.api_port},
        "secret_files": {"api_key": str(wrong)}})
    with pytest.raises(ProviderError) as err:
        provider.apply(Change(pdns_lab.zone, fresh_owner(pdns_lab.zone), "TLSA", 300,
                              add=frozenset({R1})))
    message = str(err.value)
    assert message.startswith("provider octo (octodns): octodns_powerdns.PowerDnsProvider failed")
    assert "wrong-key-value-123" not in message and "wrong-key-value-123" not in caplog.text


def test_provider_without_tlsa_is_refused_at_config_load(tmp_path: Path) -> None:
    (tmp_path / "resolv.conf").write_text("")
    cfg = tmp_path / "r.yaml"
    cfg.write_text(
        "resolver: [127.0.0.1]\n"
        "providers:\n"
        "  r53:\n"
        "    type: octodns\n"
        "    class: providers.octo_fake.NoTlsaProvider\n"
        "  gone:\n"
        "    type: octodns\n"
        "    class: octodns_nowhere.Provider\n"
        "endpoints: [{host: mail.example.test, provider: r53}]\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, resolv_conf=tmp_path / "resolv.conf")
    lines = str(err.value).splitlines()
    assert any(f"{cfg}:5: providers.r53.class: providers.octo_fake.NoTlsaProvider does not "
               "declare TLSA" in ln for ln in lines), lines
    assert any(f"{cfg}:8: providers.gone.class: cannot import octodns_nowhere" in ln
               for ln in lines), lines
