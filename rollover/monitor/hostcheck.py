"""One TLS service judged as a DANE client would: the chains it presents (every address x every
algorithm) against the TLSA RRset of every authoritative nameserver, each server on its own.

Used by `rollover check HOST` and, once per MX host, by `rollover check --domain`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509

from rollover.clock import Clock
from rollover.dane import match as dane
from rollover.dane import tlsa
from rollover.edges.probe import ResolveError, TlsVersion, probe_tls, resolve_addresses
from rollover.errors import ObserveError
from rollover.fanout import parallel
from rollover.model import Algorithm, Endpoint, Observation, TLSARecord

DEFAULT_ALGORITHMS = (Algorithm.ECDSA_P256, Algorithm.RSA2048)


@dataclass(frozen=True)
class ChainSource:
    label: str  # "127.0.0.25:25 ecdsa-p256" or "file /path"
    address: str | None
    algorithm: str | None
    chain: tuple[x509.Certificate, ...] = ()
    error: str | None = None
    protocol: str | None = None
    cipher: str | None = None
    nothing_served: bool = False  # the server is up and has no certificate of this algorithm


@dataclass(frozen=True)
class RecordSource:
    label: str  # "ns1.example.nl. (192.0.2.53)" or "--tlsa"
    records: frozenset[TLSARecord] = frozenset()
    error: str | None = None
    server: str | None = None
    address: str | None = None
    ttl: int | None = None
    serial: int | None = None


@dataclass
class Outcome:
    chain: ChainSource
    verdicts: list[tuple[RecordSource, dane.Verdict | None]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.chain.error is None and bool(self.verdicts)
                and all(v is not None and v.matched for _, v in self.verdicts))


def probe_all(endpoint: Endpoint, addresses: Sequence[str], algorithms: Sequence[Algorithm],
              resolvers: Sequence[str], dns_port: int, timeout: float,
              tls: str = "1.2") -> list[ChainSource]:
    """Every address (resolved through `resolvers` when none is given) x every algorithm."""
    if not addresses:
        try:
            addresses = resolve_addresses(endpoint.host, resolvers, port=dns_port,
                                          timeout=timeout)
        except ResolveError as exc:
            return [ChainSource(endpoint.host, None, None, error=str(exc))]
        if not addresses:
            return [ChainSource(endpoint.host, None, None,
                                error=f"{endpoint.host} has no A or AAAA record")]
    jobs = [(a, alg) for a in addresses for alg in algorithms]
    version: TlsVersion = "1.3" if tls == "1.3" else "1.2"
    probes = parallel(
        lambda job: probe_tls(job[0], endpoint.port, job[1], endpoint.host, timeout, version),
        jobs,
    )
    return [ChainSource(p.label, p.address, p.algorithm.value, p.chain, p.error, p.protocol,
                        p.cipher, p.nothing_served) for p in probes]


def record_sources(obs: Observation) -> list[RecordSource]:
    sources: list[RecordSource] = []
    for answer in obs.answers:
        error = None if answer.ok else (answer.error or answer.rcode)
        try:
            records = frozenset(TLSARecord.from_text(r) for r in answer.records)
        except ValueError as exc:  # a server's answer is untrusted: e.g. a 3 1 1 of 20 bytes
            records, error = frozenset(), f"serves a malformed TLSA record: {exc}"
        sources.append(RecordSource(answer.label, records, error, answer.server, answer.address,
                                    answer.ttl, answer.serial))
    for problem in obs.problems:
        sources.append(RecordSource(f"zone {obs.zone}", error=problem))
    if not sources:
        sources.append(RecordSource("DNS", error=f"no authoritative server for {obs.owner}"))
    return sources


def dns_sources(owner: str, resolvers: Sequence[str], port: int, timeout: float, clock: Clock
                ) -> tuple[list[RecordSource], Observation | None]:
    from rollover.edges.observe import Observer

    try:
        obs = Observer(resolvers, port=port, timeout=timeout,
                       clock=clock).observe(owner)
    except ObserveError as exc:
        return [RecordSource("DNS", error=str(exc))], None
    return record_sources(obs), obs


def judge(chains: Sequence[ChainSource], sources: Sequence[RecordSource], host: str,
          now: datetime) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for ch in chains:
        out = Outcome(ch)
        if ch.error is None:
            for src in sources:
                verdict = None if src.error else dane.match_chain(ch.chain, src.records, host,
                                                                  now)
                out.verdicts.append((src, verdict))
        outcomes.append(out)
    return outcomes


# --------------------------------------------------------------------------- JSON pieces


def leaf_info(chain: Sequence[x509.Certificate]) -> dict[str, Any] | None:
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


def sources_json(sources: Sequence[RecordSource]) -> list[dict[str, Any]]:
    return [{"label": s.label, "server": s.server, "address": s.address,
             "records": sorted(r.to_text() for r in s.records), "error": s.error,
             "ttl": s.ttl, "serial": s.serial}
            for s in sources]


def outcomes_json(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    return [
        {
            "label": o.chain.label,
            "address": o.chain.address,
            "algorithm": o.chain.algorithm,
            "ok": o.ok,
            "error": o.chain.error,
            "protocol": o.chain.protocol,
            "cipher": o.chain.cipher,
            "leaf": leaf_info(o.chain.chain),
            "chain": [tlsa.name_text(c.subject) for c in o.chain.chain],
            "verdicts": [
                {"source": s.label, "ok": bool(v and v.matched), "error": s.error,
                 "verdict": v.to_dict() if v else None}
                for s, v in o.verdicts
            ],
        }
        for o in outcomes
    ]
