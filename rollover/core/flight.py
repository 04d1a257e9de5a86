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
