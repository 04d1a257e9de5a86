"""Amazon Route 53 through boto3 (`type: route53`; `pip install 'rollover[route53]'`).

    providers:
      aws:
        type: route53
        hosted_zone_id: Z0123456789ABCDEFGHIJ   # optional: found by the zone's name otherwise
        private_zone: false      # with several zones of one name: which kind (public/private)
        aws_profile: rollover    # optional; credentials come only from boto3's own chain
        region: us-east-1        # optional
        endpoint_url: null       # optional (tests point this at a local moto server)
        wait_timeout: 300        # seconds to wait for INSYNC

Credentials are never options: boto3's chain (profile, environment, instance role) provides
them, and nothing of them reaches a log, a plan or an error. boto3 is imported only when a
route53 provider is built.

Reads page through ListResourceRecordSets from the owner; a change is one UPSERT of the whole
RRset computed from that fresh read (DELETE of exactly what was read when it ends up empty),
then GetChange until INSYNC; the shared algorithm re-reads afterwards and refuses when someone
else's write shows up (Route 53 has no conditional UPSERT: SUPPORTS.cas is False). Throttling
(Throttling, PriorRequestNotComplete, 5xx) is retried by botocore's adaptive retry mode and,
for changes, once more here with a growing delay.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rollover.clock import SystemClock
from rollover.config.check import Section
from rollover.config.registry import ParseContext
from rollover.errors import ProviderError

from .base import ProviderBase, Submission, Supports, Target

RETRY_CODES = ("Throttling", "ThrottlingException", "PriorRequestNotComplete",
               "RequestLimitExceeded", "ServiceUnavailable")
# Retrying cannot heal these: credentials, permissions, a zone that is not there.
PERMANENT_CODES = ("AccessDenied", "AccessDeniedException", "InvalidClientTokenId",
                   "SignatureDoesNotMatch", "UnrecognizedClientException", "NoSuchHostedZone",
                   "ExpiredToken", "InvalidSignatureException")


@dataclass(frozen=True)
class Route53Options:
    hosted_zone_id: str | None = None
    private_zone: bool | None = None
    aws_profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    wait_timeout: float = 300.0
    max_attempts: int = 8


class Route53Provider(ProviderBase):
    TYPE = "route53"
    SUPPORTS = Supports(rtypes=frozenset({"TLSA", "TXT"}), cas=False, needs_wait=True)
    OPTIONS = ("hosted_zone_id", "private_zone", "aws_profile", "region", "endpoint_url",
               "wait_timeout", "max_attempts")

    @classmethod
    def parse_options(cls, sec: Section, ctx: ParseContext) -> Route53Options | None:
        zone_id = sec.get_str("hosted_zone_id")
        if zone_id is not None:
            zone_id = zone_id.removeprefix("/hostedzone/")
        private = sec.get_bool("private_zone", False) if sec.has("private_zone") else None
        url = sec.get_str("endpoint_url")
        if url is not None and not url.startswith(("http://", "https://")):
            sec.bad("endpoint_url", f"{url!r} is not an http(s) URL")
        return Route53Options(
            hosted_zone_id=zone_id, private_zone=private, aws_profile=sec.get_str("aws_profile"),
            region=sec.get_str("region"), endpoint_url=url,
            wait_timeout=sec.get_float("wait_timeout", 300.0, hi=3600),
            max_attempts=sec.get_int("max_attempts", 8, lo=1, hi=20) or 8,
        )

    @classmethod
    def from_config(cls, name: str, options: Route53Options) -> Route53Provider:
        return cls(name, options)

    def __init__(self, name: str, options: Route53Options, client: Any = None) -> None:
        self.name = name
        self.options = options
        self.wait_timeout = options.wait_timeout
        self._client = client if client is not None else _client(options)
        self._zones: dict[str, str] = {}
        self._clock = SystemClock()

    def __repr__(self) -> str:
        zone_id = self.options.hosted_zone_id
        return f"Route53Provider(name={self.name!r}, hosted_zone_id={zone_id!r})"

    # -- AWS calls -----------------------------------------------------------------------------

    def _call(self, op: str, what: str, **kwargs: Any) -> Any:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        delay = 0.5
        for attempt in range(3):
            try:
                return getattr(self._client, op)(**kwargs)
            except ClientError as exc:
                err = exc.response.get("Error", {})
                code, message = err.get("Code", "?"), " ".join(str(err.get("Message", "")).split())
                if code in RETRY_CODES and attempt < 2:
                    self._clock.sleep(delay)
                    delay *= 4
                    continue
                raise ProviderError(f"Route 53 {op} {what}: {code}: {message[:300]}",
                                    permanent=code in PERMANENT_CODES) from None
            except NoCredentialsError:
                raise ProviderError("no AWS credentials found (aws_profile, the environment or "
                                    "an instance role provide them)", permanent=True) from None
            except EndpointConnectionError:
                raise ProviderError(f"cannot reach the Route 53 endpoint {what}") from None
            except BotoCoreError as exc:
                raise ProviderError(f"Route 53 {op} {what}: {type(exc).__name__}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def zone_id(self, zone: str) -> str:
        """The hosted zone for `zone` (absolute name), by id or found by name."""
        if self.options.hosted_zone_id:
            return self.options.hosted_zone_id
        if zone in self._zones:
            return self._zones[zone]
        found: list[tuple[str, bool]] = []
        marker: dict[str, str] = {"DNSName": zone}
        while True:
            page = self._call("list_hosted_zones_by_name", f"looking up zone {zone}", **marker)
            for hz in page.get("HostedZones", []):
                if hz["Name"].lower() != zone:
                    continue
                private = bool(hz.get("Config", {}).get("PrivateZone", False))
                found.append((hz["Id"].removeprefix("/hostedzone/"), private))
            last = page.get("HostedZones", [])[-1:] or [{"Name": ""}]
            if not page.get("IsTruncated") or last[0]["Name"].lower() != zone:
                break
            marker = {"DNSName": page["NextDNSName"], "HostedZoneId": page["NextHostedZoneId"]}
        wanted = self.options.private_zone
        if wanted is not None:
            found = [z for z in found if z[1] == wanted]
        if not found:
            kind = {None: "", True: "private ", False: "public "}[wanted]
            raise ProviderError(f"no {kind}hosted zone named {zone} in this AWS account",
                                permanent=True)
        if len(found) > 1:
            shown = ", ".join(f"{i} ({'private' if p else 'public'})" for i, p in found)
            raise ProviderError(f"several hosted zones are named {zone}: {shown}; set "
                                "hosted_zone_id (or private_zone) to choose one", permanent=True)
        self._zones[zone] = found[0][0]
        return found[0][0]

    # -- ProviderBase --------------------------------------------------------------------------

    def _read(self, t: Target) -> tuple[int | None, Iterable[str]]:
        zone_id = self.zone_id(t.zone)
        kwargs: dict[str, Any] = {"HostedZoneId": zone_id, "StartRecordName": t.owner,
                                  "StartRecordType": t.rtype}
        ttl: int | None = None
        values: list[str] = []
        while True:
            page = self._call("list_resource_record_sets", f"reading {t.owner} {t.rtype}",
                              **kwargs)
            for rrs in page.get("ResourceRecordSets", []):
                if _name(rrs["Name"]) != t.owner or rrs["Type"] != t.rtype:
                    return ttl, values
                if "SetIdentifier" in rrs or "AliasTarget" in rrs:
                    raise ProviderError(f"{t.owner} {t.rtype} uses a routing policy or an "
                                        "alias in Route 53; rollover manages simple records "
                                        "only", permanent=True)
                ttl = int(rrs["TTL"])
                values.extend(r["Value"] for r in rrs.get("ResourceRecords", []))
            if not page.get("IsTruncated"):
                return ttl, values
            kwargs.update(StartRecordName=page["NextRecordName"],
                          StartRecordType=page["NextRecordType"])

    def _submit(self, sub: Submission) -> str:
        t = sub.target
        if sub.after:
            change = {"Action": "UPSERT", "ResourceRecordSet": {
                "Name": t.owner, "Type": t.rtype, "TTL": sub.ttl,
                "ResourceRecords": [{"Value": v} for v in sorted(sub.after)]}}
        else:
            change = {"Action": "DELETE", "ResourceRecordSet": {
                "Name": t.owner, "Type": t.rtype, "TTL": sub.before.ttl,
                "ResourceRecords": [{"Value": v} for v in sorted(sub.before.rdatas)]}}
        answer = self._call(
            "change_resource_record_sets", f"updating {t.owner} {t.rtype}",
            HostedZoneId=self.zone_id(t.zone),
            ChangeBatch={"Comment": f"rollover {self.name}", "Changes": [change]})
        return str(answer["ChangeInfo"]["Id"])

    def _wait(self, token: object, timeout: float) -> None:
        deadline = self._clock.monotonic() + timeout
        delay = 0.2
        status = "?"
        while True:
            info = self._call("get_change", "waiting for INSYNC", Id=str(token))
            status = info["ChangeInfo"]["Status"]
            if status == "INSYNC":
                return
            if self._clock.monotonic() >= deadline:
                raise ProviderError(f"change {token} is still {status} after {timeout:g}s "
                                    "(Route 53 did not report INSYNC)")
            self._clock.sleep(delay)
            delay = min(5.0, delay * 2)


def _name(text: str) -> str:
    """Route 53 names: absolute, lower case, octal escapes for odd characters (\\052 = *)."""
    name = text.lower()
    return name if name.endswith(".") else name + "."


def _client(options: Route53Options) -> Any:
    try:
        import boto3
        from botocore.config import Config as BotoConfig
        from botocore.exceptions import BotoCoreError
    except ImportError:
        raise ProviderError("route53 needs boto3: pip install 'rollover[route53]'") from None
    try:
        session = boto3.Session(profile_name=options.aws_profile)
        return session.client(
            "route53", region_name=options.region, endpoint_url=options.endpoint_url,
            config=BotoConfig(retries={"max_attempts": options.max_attempts, "mode": "adaptive"},
                              connect_timeout=10, read_timeout=30))
    except BotoCoreError as exc:
        raise ProviderError(f"cannot set up the Route 53 client: {type(exc).__name__}: "
                            f"{exc}") from None
