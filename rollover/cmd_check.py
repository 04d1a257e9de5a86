"""`rollover check`: does what a mail server presents match its TLSA records, as a DANE SMTP
client (RFC 7671/7672) would judge it?

Chains: the live server (STARTTLS to every address x every algorithm) or a chain file (--chain).
Records: the ones given with --tlsa, else the TLSA RRset that *every* authoritative nameserver
serves (each server's RRset is judged on its own). One verdict line per chain x RRset.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from rollover import argtypes, dane, tlsa
from rollover.clock import SystemClock
from rollover.display import clip, printable
from rollover.errors import ExitStatus, InputError, ObserveError, UsageError
from rollover.model import Algorithm, Endpoint, TLSARecord

DEFAULT_ALGORITHMS = (Algorithm.ECDSA_P256, Algorithm.RSA2048)
DEFAULT_CONFIG = "/etc/rollover/rollover.yaml"

EPILOG = """\
examples:
  rollover check mail.example.nl --resolver 192.0.2.53
      every address of mail.example.nl, ECDSA P-256 and RSA 2048, against the TLSA RRset
      of every authoritative nameserver of _25._tcp.mail.example.nl
  rollover check mail.example.nl --address 192.0.2.25 --tlsa "3 1 1 29c8...d084"
  rollover check mail.example.nl --chain /etc/postfix/new.pem --resolver 192.0.2.53
      a candidate chain file (leaf first) before installing it

Exit status: 0 when every chain matches every RRset, 2 when one does not (or a probe or a
nameserver failed), 64 bad arguments, 65/66 unreadable input, 78 bad configuration.
Addresses and resolvers are IP addresses: the system resolver is never used.
"""

_HOST = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)"
                   r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("host", help="mail server host name (the MX target)")
    parser.add_argument("--port", type=argtypes.integer(1, 65535), default=25,
                        help="TCP port (default 25)")
    parser.add_argument("--address", action="append", default=[], metavar="IP",
                        help="probe this address (repeatable; default: all A and AAAA of HOST)")
    parser.add_argument("--algorithm", action="append", default=[], metavar="ALG",
                        choices=[a.value for a in Algorithm],
                        help="key algorithm to ask for (repeatable; default ecdsa-p256 and "
                             "rsa2048)")
    parser.add_argument("--chain", metavar="FILE", type=argtypes.path,
                        help="check this chain file (PEM, leaf first) instead of the live server")
    parser.add_argument("--tlsa", action="append", default=[], metavar='"U S M HEX"',
                        help="check against this record instead of DNS (repeatable)")
    parser.add_argument("--resolver", action="append", default=[], metavar="IP",
                        help="resolver for discovery (repeatable; default: the config's)")
    parser.add_argument("--config", metavar="PATH", type=argtypes.path,
                        help=f"configuration file for `resolver` (default {DEFAULT_CONFIG})")
    parser.add_argument("--timeout", type=argtypes.seconds(3600), default=10.0,
                        help="seconds per network step (default 10, at most 3600)")
    parser.add_argument("--tls", choices=("1.2", "1.3"), default="1.2",
                        help="TLS version used to force each algorithm (default 1.2)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ChainSource:
    label: str  # "127.0.0.25:25 ecdsa-p256" or "file /path"
    address: str | None
    algorithm: str | None
    chain: tuple[x509.Certificate, ...] = ()
    error: str | None = None
    protocol: str | None = None
    cipher: str | None = None


@dataclass(frozen=True)
class RecordSource:
    label: str  # "ns1.example.nl. (192.0.2.53)" or "--tlsa"
    records: frozenset[TLSARecord] = frozenset()
    error: str | None = None
    server: str | None = None
    address: str | None = None


@dataclass
class Outcome:
    chain: ChainSource
    verdicts: list[tuple[RecordSource, dane.Verdict | None]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.chain.error is None and bool(self.verdicts)
                and all(v is not None and v.matched for _, v in self.verdicts))


# --------------------------------------------------------------------------- run


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    host = _check_host(args.host)
    endpoint = Endpoint(host, _check_port(args.port))
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g} must be positive")
    given = _parse_tlsa(args.tlsa)
    addresses = [_check_ip(a, "--address") for a in args.address]
    algorithms = [Algorithm(a) for a in dict.fromkeys(args.algorithm)] or list(DEFAULT_ALGORITHMS)
    if args.chain is not None and (args.address or args.algorithm):
        raise UsageError("--chain checks a file: leave out --address and --algorithm")
    chain_file = _load_chain(args.chain) if args.chain is not None else None

    needs_dns = not given or (chain_file is None and not addresses)
    resolvers: list[str] = []
    dns_port, dns_timeout = 53, 2.0
    if needs_dns:
        resolvers, dns_port, dns_timeout = _resolvers(args)

    if chain_file is not None:
        chains = [chain_file]
    else:
        chains = _probe_all(endpoint, addresses, algorithms, resolvers, dns_port, args)
    if given:
        sources = [RecordSource("--tlsa", frozenset(given))]
    else:
        sources = _dns_sources(endpoint, resolvers, dns_port, dns_timeout)

    now = SystemClock().now()
    outcomes: list[Outcome] = []
    for ch in chains:
        out = Outcome(ch)
        if ch.error is None:
            for src in sources:
                verdict = None if src.error else dane.match_chain(ch.chain, src.records, host, now)
                out.verdicts.append((src, verdict))
        outcomes.append(out)

    ok = bool(outcomes) and all(o.ok for o in outcomes)
    if args.json:
        json.dump(_json(endpoint, outcomes, sources, ok), sys.stdout, indent=2)
        print()
    else:
        _print(endpoint, outcomes)
    return int(ExitStatus.OK if ok else ExitStatus.ERROR)


# --------------------------------------------------------------------------- arguments


def _check_host(text: str) -> str:
    if not _HOST.match(text):
        raise UsageError(f"host '{clip(text, 60)}' is not a valid host name")
    return text.rstrip(".").lower()


def _check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is out of range (1-65535)")
    return port


def _check_ip(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip().strip("[]")))
    except ValueError:
        raise UsageError(f"{what} '{clip(text, 60)}' is not an IP address") from None


def _parse_tlsa(texts: Sequence[str]) -> list[TLSARecord]:
    out: list[TLSARecord] = []
    for text in texts:
        try:
            rec = TLSARecord.from_text(text)
        except ValueError as exc:
            raise UsageError(f"--tlsa: {exc}") from None
        if rec not in out:
            out.append(rec)
    return out


def _load_chain(path: str) -> ChainSource:
    material = tlsa.load_material(path)  # MissingInputError / InputError, one line
    if not material.certificates:
        raise InputError(
            f"{material.source}: holds no certificate (a chain file starts with the leaf)"
        )
    for note in material.notes:
        print(f"rollover: warning: {note}", file=sys.stderr)
    return ChainSource(f"file {material.source}", None, None, material.certificates)


def _resolvers(args: argparse.Namespace) -> tuple[list[str], int, float]:
    if args.resolver:
        return [_check_ip(r, "--resolver") for r in args.resolver], 53, 2.0
    from rollover.config import load_config

    path = args.config or DEFAULT_CONFIG
    if args.config is None and not Path(path).exists():
        raise UsageError(
            "give --resolver IP (or --config with a `resolver` setting), or --tlsa and "
            "--address: the system resolver is never used"
        )
    config = load_config(path)
    return list(config.resolver), config.dns.port, config.dns.timeout


# --------------------------------------------------------------------------- chains and records


def _probe_all(endpoint: Endpoint, addresses: list[str], algorithms: list[Algorithm],
               resolvers: list[str], dns_port: int,
               args: argparse.Namespace) -> list[ChainSource]:
    from rollover.probe import ResolveError, parallel, probe_tls, resolve_addresses

    if not addresses:
        try:
            addresses = resolve_addresses(endpoint.host, resolvers, port=dns_port,
                                          timeout=args.timeout)
        except ResolveError as exc:
            return [ChainSource(endpoint.host, None, None, error=str(exc))]
        if not addresses:
            return [ChainSource(endpoint.host, None, None,
                                error=f"{endpoint.host} has no A or AAAA record")]
    jobs = [(a, alg) for a in addresses for alg in algorithms]
    probes = parallel(
        lambda job: probe_tls(job[0], endpoint.port, job[1], endpoint.host, args.timeout,
                              args.tls),
        jobs,
    )
    return [ChainSource(p.label, p.address, p.algorithm.value, p.chain, p.error, p.protocol,
                        p.cipher) for p in probes]


def _dns_sources(endpoint: Endpoint, resolvers: list[str], port: int,
                 timeout: float) -> list[RecordSource]:
    from rollover.observe import Observer

    try:
        obs = Observer(resolvers, port=port, timeout=timeout,
                       clock=SystemClock()).observe(endpoint.owner)
    except ObserveError as exc:
        return [RecordSource("DNS", error=str(exc))]
    sources: list[RecordSource] = []
    for answer in obs.answers:
        error = None if answer.ok else (answer.error or answer.rcode)
        try:
            records = frozenset(TLSARecord.from_text(r) for r in answer.records)
        except ValueError as exc:  # a server's answer is untrusted: e.g. a 3 1 1 of 20 bytes
            records, error = frozenset(), f"serves a malformed TLSA record: {exc}"
        sources.append(RecordSource(answer.label, records, error, answer.server, answer.address))
    for problem in obs.problems:
        sources.append(RecordSource(f"zone {obs.zone}", error=problem))
    if not sources:
        sources.append(RecordSource("DNS", error=f"no authoritative server for {endpoint.owner}"))
    return sources


# --------------------------------------------------------------------------- output


def _print(endpoint: Endpoint, outcomes: list[Outcome]) -> None:
    def say(line: str) -> None:
        # labels, errors and reasons carry what servers and certificates said: escape them
        print(printable(line), file=sys.stdout)

    for o in outcomes:
        if o.chain.error is not None:
            say(f"FAIL  {o.chain.label}: {o.chain.error}")
            continue
        for src, verdict in o.verdicts:
            if verdict is None:
                say(f"FAIL  {o.chain.label} vs {src.label}: {src.error}")
                continue
            word = "OK  " if verdict.matched else "FAIL"
            say(f"{word}  {o.chain.label} vs {src.label}: {verdict.reason}")
    bad = sum(1 for o in outcomes if not o.ok)
    total = len(outcomes)
    summary = (f"all {total} chain(s) match" if not bad else f"{bad} of {total} chain(s) do not "
               "match")
    say(f"{endpoint.owner} {summary}")


def _leaf_info(chain: Sequence[x509.Certificate]) -> dict[str, Any] | None:
    if not chain:
        return None
    leaf = chain[0]
    alg = tlsa.algorithm_of(leaf)
    return {
        "subject": tlsa.name_text(leaf.subject),
        "algorithm": alg.value if alg else None,
        "not_after": leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tlsa_311": tlsa.tlsa_record(leaf, 3, 1, 1).to_text(),
    }


def _json(endpoint: Endpoint, outcomes: list[Outcome], sources: list[RecordSource],
          ok: bool) -> dict[str, Any]:
    return {
        "host": endpoint.host,
        "port": endpoint.port,
        "owner": endpoint.owner,
        "ok": ok,
        "record_sources": [
            {"label": s.label, "server": s.server, "address": s.address,
             "records": sorted(r.to_text() for r in s.records), "error": s.error}
            for s in sources
        ],
        "chains": [
            {
                "label": o.chain.label,
                "address": o.chain.address,
                "algorithm": o.chain.algorithm,
                "ok": o.ok,
                "error": o.chain.error,
                "protocol": o.chain.protocol,
                "cipher": o.chain.cipher,
                "leaf": _leaf_info(o.chain.chain),
                "chain": [tlsa.name_text(c.subject) for c in o.chain.chain],
                "verdicts": [
                    {"source": s.label, "ok": bool(v and v.matched), "error": s.error,
                     "verdict": v.to_dict() if v else None}
                    for s, v in o.verdicts
                ],
            }
            for o in outcomes
        ],
    }
