"""current+issuer: which issuer of a freshly issued chain gets the 2 1 1, and the chain to serve.

The how-to: "An issuer certificate (usage type 2) validates only when the full certificate chain
is offered", so when the root is pinned the root goes into the served chain. ACME servers send
leaf + intermediate(s); the root comes from a CA bundle (the system's by default), found the
way `rollover tlsa --bundle` finds it: self-signed, and its own key verifies the certificate
below it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rollover.dane import tlsa

if TYPE_CHECKING:
    from rollover.config.load import EndpointConfig

MAX_BUNDLE = 16 * 1024 * 1024


class IssuerError(Exception):
    """One line: why no issuer record can be chosen for this chain."""


def _issuer_of(cert: x509.Certificate, pool: list[x509.Certificate]) -> x509.Certificate | None:
    for cand in pool:
        if cand.subject == cert.issuer and tlsa.verify_signed_by(cert, cand.public_key()):
            return cand
    return None


def _bundle(path: Path | None) -> list[x509.Certificate]:
    if path is None:
        return []
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BUNDLE + 1)
    except OSError as exc:
        raise IssuerError(f"cannot read the CA bundle {path}: {exc.strerror}") from None
    if len(data) > MAX_BUNDLE:
        raise IssuerError(f"the CA bundle {path} is larger than {MAX_BUNDLE // 2**20} MiB")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise IssuerError(f"the CA bundle {path} holds no PEM certificates") from None


def issuer_chain(chain_pem: bytes,
                 ep: EndpointConfig) -> tuple[bytes, tuple[str, ...], tuple[str, ...]]:
    """(the chain to serve, the "2 1 1 ..." rdatas of the chosen issuers, a label for each:
    "root|intermediate SUBJECT (depth N)") for `ep`'s choice."""
    chain = x509.load_pem_x509_certificates(chain_pem)
    path = [chain[0]]  # leaf, then each issuer up to a self-signed root (if one can be found)
    pool = chain[1:]
    bundle: list[x509.Certificate] | None = None
    while not tlsa.is_self_signed(path[-1]) and len(path) < 8:
        above = _issuer_of(path[-1], pool)
        if above is None:
            bundle = _bundle(ep.issuer_bundle) if bundle is None else bundle
            above = _issuer_of(path[-1], bundle)
        if above is None or above in path:
            break
        path.append(above)
    issuers = path[1:]
    if not issuers:
        raise IssuerError("the CA returned a chain without any issuer certificate")
    if ep.issuer == "intermediate":
        chosen = [issuers[0]] if not tlsa.is_self_signed(issuers[0]) else []
        if not chosen:
            raise IssuerError("issuer: intermediate, but the leaf is signed by the root itself")
    elif ep.issuer == "root":
        if not tlsa.is_self_signed(issuers[-1]):
            top = tlsa.name_text(issuers[-1].issuer)
            raise IssuerError(f"the root of this chain ({top}) is not in the CA bundle "
                              f"{ep.issuer_bundle}; add it there or pin the intermediate")
        chosen = [issuers[-1]]
    else:  # pins
        chosen = [c for c in issuers if tlsa.tlsa_record(c, 2, 1, 1).to_text() in ep.issuer_pins]
        if not chosen:
            raise IssuerError("none of the pinned issuers (issuer:) is in this chain: a CA "
                              "change? pin the new issuer first")
    # serve every certificate up to and including the deepest chosen issuer
    deepest = max(path.index(c) for c in chosen)
    served = path[: deepest + 1]
    served += [c for c in chain[1:] if c not in served]  # keep what the CA sent too
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in served)
    labels = tuple(f"{'root' if tlsa.is_self_signed(c) else 'intermediate'} "
                   f"{tlsa.name_text(c.subject)} (depth {path.index(c)})" for c in chosen)
    return pem, tuple(tlsa.tlsa_record(c, 2, 1, 1).to_text() for c in chosen), labels
