"""route53 provider (boto3): the conformance suite against moto in server mode, a real HTTP
server process started here (the one non-real part: see README, "Providers"). Plus zone lookup
by name (public/private, duplicates), paginated reads, credentials kept out of messages."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from providers.conformance import R1, R2, ProviderConformance, Target, fresh_owner

from rollover.errors import ProviderError
from rollover.model import RRset
from rollover.providers.base import Change, canonical_text
from rollover.providers.route53 import Route53Options, Route53Provider

from lab.dns_fixtures import skip_or_fail
from lab.moto import ENV, MotoLab, moto_server_binary

pytestmark = pytest.mark.lab
ZONE = "r53.test."


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoLab]:
    if moto_server_binary() is None:
        skip_or_fail("moto_server missing (pip install -e '.[test]')")
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)  # boto3's own chain: the environment
    lab = MotoLab()
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def zone_id(moto: MotoLab) -> str:
    hz = moto.client().create_hosted_zone(Name=ZONE, CallerReference=secrets.token_hex(8))
    return str(hz["HostedZone"]["Id"]).removeprefix("/hostedzone/")


def make(moto: MotoLab, **kw: Any) -> Route53Provider:
    opts: dict[str, Any] = {"endpoint_url": moto.url, "region": "us-east-1", "wait_timeout": 30}
    opts.update(kw)
    return Route53Provider("aws", Route53Options(**opts))


def raw_rrset(moto: MotoLab, zone_id: str, owner: str, rtype: str) -> RRset:
    """What Route 53 (moto) holds, read with a plain boto3 client."""
    page = moto.client().list_resource_record_sets(
        HostedZoneId=zone_id, StartRecordName=owner, StartRecordType=rtype, MaxItems="1")
    for rrs in page["ResourceRecordSets"]:
        if rrs["Name"].lower() == owner and rrs["Type"] == rtype:
            values = frozenset(canonical_text(rtype, r["Value"])
                               for r in rrs["ResourceRecords"])
            return RRset(owner, rtype, int(rrs["TTL"]), values)
    return RRset(owner, rtype, None, frozenset())


class TestRoute53Conformance(ProviderConformance):
    @pytest.fixture
    def target(self, moto: MotoLab, zone_id: str) -> Target:
        def meddle(owner: str, rtype: str, ttl: int, rdatas: Iterable[str]) -> None:
            current = raw_rrset(moto, zone_id, owner, rtype).rdatas
            moto.client().change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={
                "Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
                    "Name": owner, "Type": rtype, "TTL": ttl,
                    "ResourceRecords": [{"Value": v} for v in sorted(current | set(rdatas))]}}]})

        return Target(provider=make(moto), zone=ZONE, owner=fresh_owner(ZONE),
                      served=lambda o, t: raw_rrset(moto, zone_id, o, t), meddle=meddle)


def test_zone_found_by_name_and_by_id(moto: MotoLab, zone_id: str) -> None:
    assert make(moto).zone_id(ZONE) == zone_id
    owner = fresh_owner(ZONE)
    make(moto, hosted_zone_id=zone_id).apply(Change(ZONE, owner, "TLSA", 300,
                                                    add=frozenset({R1})))
    assert raw_rrset(moto, zone_id, owner, "TLSA").rdatas == {R1}


def test_several_zones_of_one_name(moto: MotoLab) -> None:
    client = moto.client()
    name = f"dup{secrets.token_hex(3)}.test."
    public = client.create_hosted_zone(Name=name, CallerReference=secrets.token_hex(8))
    private = client.create_hosted_zone(
        Name=name, CallerReference=secrets.token_hex(8),
        VPC={"VPCRegion": "us-east-1", "VPCId": "vpc-12345678"},
        HostedZoneConfig={"PrivateZone": True, "Comment": "inside"})
    pub_id = public["HostedZone"]["Id"].removeprefix("/hostedzone/")
    priv_id = private["HostedZone"]["Id"].removeprefix("/hostedzone/")
    with pytest.raises(ProviderError) as err:
        make(moto).read(name, f"_25._tcp.mail.{name}", "TLSA")
    message = str(err.value)
    assert "several hosted zones are named" in message
    assert f"{pub_id} (public)" in message and f"{priv_id} (private)" in message
    assert make(moto, private_zone=True).zone_id(name) == priv_id
    assert make(moto, private_zone=False).zone_id(name) == pub_id


def test_no_such_zone(moto: MotoLab) -> None:
    with pytest.raises(ProviderError, match=r"no hosted zone named nowhere\.test\."):
        make(moto).read("nowhere.test.", "_25._tcp.mail.nowhere.test.", "TLSA")


def test_reads_page_through_many_rrsets(moto: MotoLab, zone_id: str) -> None:
    """Enough RRsets before and at the owner that ListResourceRecordSets pages."""
    base = f"p{secrets.token_hex(3)}.{ZONE}"
    client = moto.client()
    changes = [{"Action": "UPSERT", "ResourceRecordSet": {
        "Name": f"_{port}._tcp.{base}", "Type": "TLSA", "TTL": 60,
        "ResourceRecords": [{"Value": R1}]}} for port in range(1, 120)]
    client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes})
    provider = make(moto)
    assert provider.read(ZONE, f"_25._tcp.{base}", "TLSA").rdatas == {R1}
    provider.apply(Change(ZONE, f"_25._tcp.{base}", "TLSA", 60, add=frozenset({R2})))
    assert raw_rrset(moto, zone_id, f"_25._tcp.{base}", "TLSA").rdatas == {R1, R2}


def test_credentials_never_in_messages_or_logs(moto: MotoLab, zone_id: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="rollover")
    provider = make(moto)
    texts = [repr(provider)]
    for change in (Change(ZONE, fresh_owner(ZONE), "TLSA", 300, add=frozenset({R1})),
                   Change(ZONE, "_25._tcp.x.other.test.", "TLSA", 300, add=frozenset({R1})),
                   Change("nowhere.test.", "_25._tcp.x.nowhere.test.", "TLSA", 300,
                          add=frozenset({R1}))):
        try:
            provider.apply(change)
        except ProviderError as exc:
            texts.append(str(exc))
    texts.append(caplog.text)
    assert len(texts) >= 3
    for secret in (ENV["AWS_SECRET_ACCESS_KEY"], ENV["AWS_ACCESS_KEY_ID"]):
        assert not any(secret in t for t in texts)


def test_unreachable_endpoint() -> None:
    provider = Route53Provider("aws", Route53Options(endpoint_url="http://127.0.0.1:9",
                                                     region="us-east-1", max_attempts=1))
    with pytest.raises(ProviderError, match="cannot reach the Route 53 endpoint"):
        provider.read(ZONE, f"_25._tcp.mail.{ZONE}", "TLSA")


def test_missing_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for key in ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    provider = Route53Provider("aws", Route53Options(endpoint_url="http://127.0.0.1:9",
                                                     region="us-east-1", max_attempts=1))
    with pytest.raises(ProviderError, match="no AWS credentials found"):
        provider.read(ZONE, f"_25._tcp.mail.{ZONE}", "TLSA")
