"""Apply latency per DNS provider: median and p90 of `provider.apply(change)` for a change that
really changes something (add one TLSA rdata to a fresh owner), N times each, against the same
servers the tests use (BIND/Knot lab, pdns_server, moto_server, the exec script, zone files).

    PYTHONPATH=tests python3 benchmarks/bench_providers.py [N]

One `apply` is the whole shared algorithm: read, checks, submit, wait (if the provider needs
it), re-read and confirm.
"""

from __future__ import annotations

import os
import secrets
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("ROLLOVER_LAB_NET", "127.0.9")

from rollover.clock import SystemClock
from rollover.providers.base import Change, Provider
from rollover.providers.octodns_bridge import OctoDNSProvider
from rollover.providers.powerdns import PowerDNSOptions, PowerDNSProvider
from rollover.providers.program import ExecOptions, ExecProvider
from rollover.providers.rfc2136 import RFC2136Provider
from rollover.providers.route53 import Route53Options, Route53Provider
from rollover.providers.zonefile import ZoneFileOptions, ZoneFileProvider

from lab.dns import DnsLab
from lab.moto import ENV, MotoLab
from lab.pdns import PdnsLab
from lab.zonefile import ZoneFileLab

CLOCK = SystemClock()
RDATA = "3 1 1 " + "ab" * 32
EXEC_SCRIPT = Path(__file__).resolve().parent.parent / "tests" / "providers" / "exec_bind.py"


def measure(provider: Provider, zone: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        owner = f"_25._tcp.b{secrets.token_hex(4)}.{zone}"
        change = Change(zone, owner, "TLSA", 300, add=frozenset({RDATA}))
        start = CLOCK.monotonic()
        provider.apply(change)
        times.append(CLOCK.monotonic() - start)
    return times


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    os.environ.update(ENV)
    labs: list[Callable[[], None]] = []
    rows: list[tuple[str, list[float]]] = []
    try:
        dns = DnsLab()
        dns.start()
        labs.append(dns.stop)
        pdns = PdnsLab()
        pdns.start()
        labs.append(pdns.stop)
        zf = ZoneFileLab()
        zf.start()
        labs.append(zf.stop)
        moto = MotoLab()
        moto.start()
        labs.append(moto.stop)
        moto.client().create_hosted_zone(Name="r53.test.", CallerReference=secrets.token_hex(6))
        os.environ.update(ROLLOVER_EXEC_SERVER=dns.primary.address,
                          ROLLOVER_EXEC_KEY_NAME=dns.tsig_name,
                          ROLLOVER_EXEC_KEY_FILE=str(dns.tsig_secret_file))
        cases: list[tuple[str, Provider, str]] = [
            ("rfc2136 (BIND)", RFC2136Provider("b", dns.primary.address,
                                               tsig_key_name=dns.tsig_name,
                                               tsig_secret=dns.tsig_secret), dns.zone),
            ("powerdns", PowerDNSProvider("p", PowerDNSOptions(pdns.api_url, pdns.api_key_file),
                                          pdns.api_key), pdns.zone),
            ("exec (script -> BIND)", ExecProvider("e", ExecOptions(
                (sys.executable, str(EXEC_SCRIPT)), compare_and_swap=True)), dns.zone),
        ]
        for kind, server in zf.servers.items():
            cases.append((f"zonefile ({kind}, waits for the server)", ZoneFileProvider(
                "z", ZoneFileOptions(str(server.include_file), tuple(server.reload_command),
                                     "increment", str(server.zone_file), server.address)),
                zf.zone))
        cases.append(("route53 (moto server)", Route53Provider("r", Route53Options(
            endpoint_url=moto.url, region="us-east-1")), "r53.test."))
        cases.append(("octodns -> powerdns", OctoDNSProvider.from_options("o", {
            "class": "octodns_powerdns.PowerDnsProvider",
            "options": {"host": pdns.address, "port": pdns.api_port},
            "secret_files": {"api_key": str(pdns.api_key_file)}}), pdns.zone))
        cases.append(("octodns -> bind (rfc2136)", OctoDNSProvider.from_options("o", {
            "class": "octodns_bind.Rfc2136Provider",
            "options": {"host": dns.primary.address, "key_name": dns.tsig_name,
                        "key_algorithm": "hmac-sha256"},
            "secret_files": {"key_secret": str(dns.tsig_secret_file)}}), dns.zone))
        for name, provider, zone in cases:
            rows.append((name, measure(provider, zone, n)))
    finally:
        for stop in reversed(labs):
            stop()
    print(f"apply latency, {n} changes each (add one TLSA rdata to a fresh owner)")
    print(f"{'provider':42} {'median ms':>10} {'p90 ms':>8}")
    for name, times in rows:
        ordered = sorted(times)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        print(f"{name:42} {statistics.median(times) * 1000:10.1f} {p90 * 1000:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
