"""Rollover schemes as policies the machine consults (one module per scheme).

A scheme answers, purely from the slot's state: whether a next key is kept published ahead of
time, which records cover a certificate (the install guard and the order guard ask this), and
which records a certificate needs published for it. The machine's phases stay generic.
"""

from __future__ import annotations

from rollover.core.schemes.base import SchemePolicy
from rollover.core.schemes.current_issuer import CurrentIssuer
from rollover.core.schemes.current_next import CurrentNext

SCHEMES: dict[str, SchemePolicy] = {s.name: s for s in (CurrentNext(), CurrentIssuer())}


def scheme_for(name: str) -> SchemePolicy:
    return SCHEMES[name]


__all__ = ["SCHEMES", "SchemePolicy", "scheme_for"]
