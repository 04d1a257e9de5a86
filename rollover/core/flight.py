"""Safety rules 2 and 3 as pure judgements: pre-flight (before install) and post-flight (after).

The engine gathers the inputs (the observation its guard just saw, what every address
presents); these functions only decide, so they are unit-tested without any server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from cryptography import x509

from rollover.dane import tlsa
from rollover.model import Observation, PresentedChain

# RFC 7671 matching of a chain against an RRset: None, or why it does not match
Verifier = Callable[[list[x509.Certificate], frozenset[str], str, datetime], str | None]


def preflight(chain: list[x509.Certificate], obs: Observation, verify: Verifier, host: str,
              now: datetime) -> str | None:
    """Rule 2: the chain must match the RRset each authoritative server serves now."""
    if not obs.answers:
        return "pre-flight: no authoritative server found"
    for answer in obs.answers:
        if not answer.ok:
            return f"pre-flight: {answer.label}: {answer.error or answer.rcode}"
        why = verify(chain, answer.records, host, now)
        if why is not None:
            return f"pre-flight: {answer.label}: {why}"
    return None


def postflight(seen: Sequence[PresentedChain], key_id: str, spki_sha256: str, obs: Observation,
               verify: Verifier, host: str, now: datetime) -> str | None:
    """Rule 3: every address presents the new key, and its chain matches the agreed RRset."""
    records = obs.agreed()
    if records is None:
        return f"post-flight: nameservers disagree: {obs.disagreement()}"
    if not seen:
        return f"post-flight: no address to probe for {host}"
    for presented in seen:
        if presented.error or not presented.chain:
            return f"post-flight: {presented.address}: {presented.error or 'no certificate'}"
        leaf_spki = tlsa.spki_sha256_hex(presented.chain[0])
        if leaf_spki != spki_sha256:
            return (f"post-flight: {presented.address} presents another key "
                    f"(3 1 1 {leaf_spki[:16]}...), not {key_id}")
        why = verify(list(presented.chain), records, host, now)
        if why is not None:
            return f"post-flight: {presented.address}: {why}"
    return None


def split_host(seen: Sequence[PresentedChain], spki_sha256: str,
               own: frozenset[str]) -> str | None:
    """After an install: some address presents the new key while another presents a key this
    slot never had. Those addresses are served by a server this installer does not reach, and
    installing again cannot change that (a server that merely reloads late shows our previous
    key). None when that is not the case."""
    keys = {p.address: tlsa.spki_sha256_hex(p.chain[0]) for p in seen if p.chain}
    ours = sorted(a for a, k in keys.items() if k == spki_sha256)
    foreign = sorted(a for a, k in keys.items() if k not in own)
    if not ours or not foreign:
        return None
    return (f"{', '.join(foreign)} kept a key rollover never installed while "
            f"{', '.join(ours)} took the new one: every address of the host must be served "
            "by a server this endpoint's installer updates (add an endpoint and installer for "
            "it, or drop the address from the host's A/AAAA records)")


def per_address(seen: Sequence[PresentedChain], obs: Observation, verify: Verifier, host: str,
                now: datetime) -> list[tuple[str, bool, str | None]]:
    """(address, matched, why not) for each address probed: its chain against the RRset of
    *every* authoritative server (what `status` reports as chain match per address)."""
    out: list[tuple[str, bool, str | None]] = []
    for presented in seen:
        if presented.error or not presented.chain:
            out.append((presented.address, False, presented.error or "no certificate"))
            continue
        bad = []
        for answer in obs.answers:
            why = verify(list(presented.chain), answer.records, host, now)
            if why is not None:
                bad.append(f"{answer.server}: {why}")
        out.append((presented.address, not bad, "; ".join(bad)[:1000] if bad else None))
    return out
