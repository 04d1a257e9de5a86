"""The provider interface: read an RRset, apply a whole-RRset change idempotently.

Propagation checking is never a provider's job (rollover.observe does it). Every SDK or wire
failure must surface as rollover.errors.ProviderError with a message an operator can act on and
no secret in it. Third-party providers register under the entry-point group `rollover.providers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol

from rollover.errors import ProviderError
from rollover.model import RRset

ENTRY_POINT_GROUP = "rollover.providers"


@dataclass(frozen=True)
class Change:
    """Make `add` present and `remove` absent in (zone, owner, rtype), nothing else.

    `expect` is compare-and-swap: the RRset the caller last read (None = don't check). If the
    provider's RRset differs, the change is refused with ProviderError (a concurrent edit),
    never overwritten. A change that would leave the RRset empty is refused unless
    `allow_empty` (only ACME TXT cleanup sets it).
    """

    zone: str
    owner: str
    rtype: str
    ttl: int
    add: frozenset[str] = field(default_factory=frozenset)
    remove: frozenset[str] = field(default_factory=frozenset)
    expect: frozenset[str] | None = None
    allow_empty: bool = False

    def result(self, current: frozenset[str]) -> frozenset[str]:
        return (current - self.remove) | self.add

    def describe(self) -> str:
        parts = [f"+{r}" for r in sorted(self.add)] + [f"-{r}" for r in sorted(self.remove)]
        return f"{self.owner} {self.rtype} ttl {self.ttl}: {' '.join(parts) or 'no change'}"


class Provider(Protocol):
    """What every backend implements. `name` is the config key (e.g. "primary")."""

    name: str

    def read(self, zone: str, owner: str, rtype: str) -> RRset:
        """The RRset as the provider sees it (empty rdatas and ttl None if absent)."""
        ...

    def apply(self, change: Change) -> None:
        """Apply idempotently; raise ProviderError on refusal, conflict or failure."""
        ...

    def wait_applied(self, timeout: float) -> None:
        """Block until the provider reports the last change applied (Route53 INSYNC); may no-op."""
        ...


def check_change(change: Change, current: RRset) -> frozenset[str]:
    """Shared safety checks for every backend; returns the RRset after the change."""
    if change.expect is not None and current.rdatas != change.expect:
        raise ProviderError(
            f"{change.owner} {change.rtype} changed under us (expected "
            f"{len(change.expect)} records, provider has {len(current.rdatas)}); "
            "someone else edited it: re-run to re-read"
        )
    after = change.result(current.rdatas)
    if not after and not change.allow_empty and (current.rdatas or change.remove):
        raise ProviderError(
            f"refusing to leave {change.owner} {change.rtype} empty: a published TLSA RRset "
            "must never disappear during a rollover"
        )
    return after


def provider_classes() -> Mapping[str, Any]:
    """Provider type name -> class, built-ins plus entry points."""
    found: dict[str, Any] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def load_provider_class(type_name: str) -> Any:
    eps = provider_classes()
    if type_name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise ProviderError(f"unknown provider type {type_name!r} (known: {known})")
    try:
        return eps[type_name].load()
    except ImportError as exc:
        raise ProviderError(f"provider type {type_name!r} cannot be loaded: {exc}") from None
