"""The provider interface, and the base class holding the one apply algorithm every provider shares.

A provider (a DNS backend) is registered under the entry-point group `rollover.providers` and
is, by subclassing `ProviderBase`, only three things:

- `_read(target)`: the RRset as the backend has it, (ttl or None, rdata texts in any
  presentation the backend returns: mixed-case hex, split hex, quoted TXT...);
- `_submit(submission)`: make the backend's RRset `submission.after` with `submission.ttl`
  (empty: delete it); a `SUPPORTS.cas` provider makes that conditional on the RRset still being
  `submission.before` (RFC 2136 prerequisites); returns a token for `_wait`;
- `SUPPORTS`: what it can do (record types, compare-and-swap, whether a submission must be
  waited for), and `OPTIONS` + `parse_options` + `from_config` for its config section.

`ProviderBase.apply` then does, for every provider alike: canonicalise the rdata (TLSA as
"U S M lowerhex"), read, run the ownership (compare-and-swap) and never-empty checks, skip a
change already in effect, submit, wait until the backend says it is applied (Route53 INSYNC),
re-read and confirm that exactly the computed RRset is served. Every failure leaves as one
`ProviderError` whose message names the provider and what failed, and never a secret.

Propagation checking is never a provider's job (rollover.edges.observe does it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.tlsabase

from rollover.config import registry
from rollover.dns import rdata as rdata_form
from rollover.dns.rdata import canonical
from rollover.errors import ConfigError, ProviderError
from rollover.model import RRset

log = logging.getLogger("rollover.providers")

ENTRY_POINT_GROUP = registry.GROUPS["provider"]
MAX_TTL = 2**31 - 1


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
    """What the engine calls. `name` is the config key (e.g. "primary")."""

    name: str

    def read(self, zone: str, owner: str, rtype: str) -> RRset:
        """The RRset as the provider sees it (empty rdatas and ttl None if absent)."""
        ...

    def apply(self, change: Change) -> None:
        """Apply idempotently; raise ProviderError on refusal, conflict or failure."""
        ...

    def wait_applied(self, timeout: float) -> None:
        """Block until the provider reports the last change applied; may no-op."""
        ...


class BatchProvider(Provider, Protocol):
    """A provider that reads and applies many RRsets at once (every `ProviderBase` does)."""

    def read_many(self, wanted: Sequence[tuple[str, str, str]]) -> list[RRset | ProviderError]:
        ...

    def apply_many(self, changes: Sequence[Change]) -> list[ProviderError | None]: ...


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


# -- what a provider declares -------------------------------------------------------------------


ANY_TYPE = "*"


@dataclass(frozen=True)
class Supports:
    """What a provider can do, declared once on its class as `SUPPORTS`."""

    rtypes: frozenset[str] = frozenset({"TLSA", "TXT"})  # "*": any record type
    cas: bool = False  # the submission itself is conditional on the RRset read (atomic)
    needs_wait: bool = False  # a submission is applied later: wait until the backend says so

    def allows(self, rtype: str) -> bool:
        return ANY_TYPE in self.rtypes or rtype.upper() in self.rtypes

    @property
    def tlsa(self) -> bool:
        return self.allows("TLSA")

    @property
    def txt(self) -> bool:
        return self.allows("TXT")

    def describe(self) -> str:
        types = "any type" if ANY_TYPE in self.rtypes else "/".join(sorted(self.rtypes))
        cas = "compare-and-swap" if self.cas else "no compare-and-swap (read, then replace)"
        wait = "waits until applied" if self.needs_wait else "applied on answer"
        return f"{types}; {cas}; {wait}"


@dataclass(frozen=True)
class Target:
    """One RRset, names absolute (trailing dot), rtype upper case."""

    zone: str
    owner: str
    rtype: str

    @property
    def relative(self) -> str:
        """The owner relative to the zone ("@" for the apex), as zone files and some APIs
        want it."""
        if self.owner == self.zone:
            return "@"
        return self.owner[: -len(self.zone) - 1]


@dataclass(frozen=True)
class Submission:
    """What `_submit` must make true: the RRset `after` with `ttl` (empty `after`: no RRset)."""

    target: Target
    ttl: int
    before: RRset  # what the provider had at our read (canonical)
    after: frozenset[str]  # canonical rdata texts

    @property
    def add(self) -> frozenset[str]:
        return self.after - self.before.rdatas

    @property
    def remove(self) -> frozenset[str]:
        return self.before.rdatas - self.after

    @property
    def ttl_changes(self) -> bool:
        return bool(self.after) and self.before.ttl is not None and self.before.ttl != self.ttl


def target(zone: str, owner: str, rtype: str) -> Target:
    """Validated, absolute names; ProviderError when the owner is outside the zone."""
    try:
        z = dns.name.from_text(zone)
        o = dns.name.from_text(owner, origin=z)
    except dns.exception.DNSException as exc:
        raise ProviderError(f"bad DNS name {owner!r} in zone {zone!r}: {exc}",
                            permanent=True) from None
    if not o.is_subdomain(z):
        raise ProviderError(f"{owner} is not inside zone {zone}: check the endpoint's zone",
                            permanent=True)
    try:
        t = dns.rdatatype.from_text(rtype)
    except dns.exception.DNSException:
        raise ProviderError(f"unknown record type {rtype!r}") from None
    return Target(z.to_text().lower(), o.to_text().lower(), dns.rdatatype.to_text(t))


def parse_rdata(rtype: str, text: str, origin: str | None = None) -> dns.rdata.Rdata:
    try:
        return rdata_form.parse(rtype, text, origin)
    except ValueError as exc:
        raise ProviderError(str(exc)) from None


def canonical_text(rtype: str, text: str, origin: str | None = None) -> str:
    """`text` in canonical form (rollover.dns.rdata); ProviderError if unparsable."""
    return canonical(parse_rdata(rtype, text, origin))


class ProviderBase:
    """Subclass, implement `_read` and `_submit` (and `_wait` when `SUPPORTS.needs_wait`)."""

    TYPE: ClassVar[str] = "provider"
    SUPPORTS: ClassVar[Supports] = Supports()
    OPTIONS: ClassVar[tuple[str, ...]] = ()

    name: str
    wait_timeout: float = 120.0  # seconds to wait for a needs_wait submission

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def supports_for(cls, options: Any) -> Supports:
        """What a provider built from `options` supports (checked when the config loads)."""
        return cls.SUPPORTS

    @classmethod
    def parse_options(cls, sec: Any, ctx: registry.ParseContext) -> Any:
        """Check this provider's config section (a confcheck.Section); return its options."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, name: str, options: Any) -> ProviderBase:
        """Build from the options `parse_options` returned (reads secrets now)."""
        raise NotImplementedError

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> Any:
        """Build from a plain mapping, checked by the same schema as a config file."""
        ctx = registry.ParseContext(f"provider {name!r}", Path.cwd(), registry.no_secret_files)
        parsed = registry.parse_mapping(cls, options, ctx, ProviderError)
        try:
            return cls.from_config(name, parsed)
        except (ProviderError, ConfigError) as exc:
            raise ProviderError(f"provider {name!r}: {exc}") from None

    # -- what a provider implements ------------------------------------------------------------

    def _read(self, t: Target) -> tuple[int | None, Iterable[str]]:
        raise NotImplementedError

    def _submit(self, sub: Submission) -> object:
        raise NotImplementedError

    def _wait(self, token: object, timeout: float) -> None:
        """Block until the submission `token` is applied (only called when needs_wait)."""

    def _secrets(self) -> Iterable[str]:
        """Strings that must never appear in a message (scrubbed as a last line of defence)."""
        return ()

    # -- the shared algorithm ------------------------------------------------------------------

    def read(self, zone: str, owner: str, rtype: str) -> RRset:
        try:
            return self._read_canonical(self._target(zone, owner, rtype), owner)
        except ProviderError as exc:
            raise self._named(exc) from None

    def apply(self, change: Change) -> None:
        try:
            self._apply(change)
        except ProviderError as exc:
            raise self._named(exc) from None

    def wait_applied(self, timeout: float) -> None:
        """`apply` returns only once the change is applied and confirmed: nothing left."""

    def read_many(self, wanted: Sequence[tuple[str, str, str]]) -> list[RRset | ProviderError]:
        """`read` for many (zone, owner, rtype) at once; a failure is returned in its place."""
        out: list[RRset | ProviderError] = []
        targets: list[Target | ProviderError] = []
        for zone, owner, rtype in wanted:
            try:
                targets.append(self._target(zone, owner, rtype))
            except ProviderError as exc:
                targets.append(self._named(exc))
        readable = [t for t in targets if isinstance(t, Target)]
        got = iter(self._read_canonical_many(readable, [w[1] for w, t in zip(
            wanted, targets, strict=True) if isinstance(t, Target)]))
        for t in targets:
            out.append(t if isinstance(t, ProviderError) else next(got))
        return out

    def apply_many(self, changes: Sequence[Change]) -> list[ProviderError | None]:
        """`apply` for many changes: read all, check each, submit the changed ones together
        (`_submit_many`: one RFC 2136 message carries many owners), re-read all, confirm each.
        One result per change (None: applied or already in effect). Two changes of one RRset
        go in successive batches, so each is checked against what the one before left."""
        results: list[ProviderError | None] = [None] * len(changes)
        layers: list[list[int]] = []
        seen: dict[tuple[str, str, str], int] = {}
        for i, c in enumerate(changes):
            k = (c.zone.lower(), c.owner.lower(), c.rtype.upper())
            depth = seen.get(k, 0)
            seen[k] = depth + 1
            if depth == len(layers):
                layers.append([])
            layers[depth].append(i)
        for layer in layers:
            for i, err in zip(layer, self._apply_batch([changes[i] for i in layer]),
                              strict=True):
                results[i] = err
        return results


    @property
    def supports(self) -> Supports:
        """This instance's declaration (the class's SUPPORTS unless options change it)."""
        return self.SUPPORTS

    def _target(self, zone: str, owner: str, rtype: str) -> Target:
        t = target(zone, owner, rtype)
        if not self.supports.allows(t.rtype):
            raise ProviderError(f"{self.TYPE} does not support {t.rtype} records "
                                f"(it supports {self.supports.describe()})", permanent=True)
        return t

    def _read_canonical(self, t: Target, label: str) -> RRset:
        ttl, texts = self._read(t)
        rdatas = frozenset(self._canonical_from_backend(t, text) for text in texts)
        if not rdatas:
            return RRset(label, t.rtype, None, frozenset())
        return RRset(label, t.rtype, ttl, rdatas)

    def _canonical_from_backend(self, t: Target, text: str) -> str:
        try:
            return canonical_text(t.rtype, text, t.zone)
        except ProviderError:
            raise ProviderError(f"the backend returned unparsable {t.rtype} data for "
                                f"{t.owner}") from None

    def _canonical_change(self, change: Change, t: Target) -> Change:
        def canon(texts: frozenset[str]) -> frozenset[str]:
            return frozenset(canonical_text(t.rtype, text, t.zone) for text in texts)

        if isinstance(change.ttl, bool) or not 0 <= change.ttl <= MAX_TTL:
            raise ProviderError(f"bad TTL {change.ttl} for {change.owner} {t.rtype}")
        return replace(
            change, rtype=t.rtype, add=canon(change.add), remove=canon(change.remove),
            expect=None if change.expect is None else canon(change.expect),
        )

    def _apply(self, change: Change) -> None:
        t = self._target(change.zone, change.owner, change.rtype)
        change = self._canonical_change(change, t)
        current = self._read_canonical(t, change.owner)
        after = check_change(change, current)
        sub = Submission(t, change.ttl, current, after)
        if after == current.rdatas and not sub.ttl_changes:
            log.debug("%s: %s already in effect, nothing sent", self.name, change.describe())
            return
        log.info("%s: updating %s", self.name, change.describe())
        token = self._submit(sub)
        if self.supports.needs_wait:
            self._wait(token, self.wait_timeout)
        now = self._read_canonical(t, change.owner)
        if now.rdatas != after or (after and now.ttl != change.ttl):
            raise ProviderError(
                f"accepted the change of {change.owner} {t.rtype} but serves "
                f"{len(now.rdatas)} record(s) ttl {now.ttl} instead of {len(after)} ttl "
                f"{change.ttl}: someone changed it again just now, or the backend ignored part "
                "of the change (see its log)"
            )

    def _apply_batch(self, changes: Sequence[Change]) -> list[ProviderError | None]:
        """`_apply` for changes of distinct RRsets."""
        results: list[ProviderError | None] = [None] * len(changes)
        todo: list[tuple[int, Target, Change]] = []
        for i, change in enumerate(changes):
            try:
                t = self._target(change.zone, change.owner, change.rtype)
                todo.append((i, t, self._canonical_change(change, t)))
            except ProviderError as exc:
                results[i] = self._named(exc)
        currents = self._read_canonical_many([t for _i, t, _c in todo],
                                             [c.owner for _i, _t, c in todo])
        subs: list[tuple[int, Target, Change, Submission]] = []
        for (i, t, change), current in zip(todo, currents, strict=True):
            if isinstance(current, ProviderError):
                results[i] = current
                continue
            try:
                after = check_change(change, current)
            except ProviderError as exc:
                results[i] = self._named(exc)
                continue
            sub = Submission(t, change.ttl, current, after)
            if after == current.rdatas and not sub.ttl_changes:
                log.debug("%s: %s already in effect, nothing sent", self.name, change.describe())
                continue
            log.info("%s: updating %s", self.name, change.describe())
            subs.append((i, t, change, sub))
        if not subs:
            return results
        submitted: list[tuple[int, Target, Change, Submission]] = []
        for item, outcome in zip(subs, self._submit_many([s for *_x, s in subs]), strict=True):
            if isinstance(outcome, ProviderError):
                results[item[0]] = self._named(outcome)
                continue
            if self.supports.needs_wait:
                try:
                    self._wait(outcome, self.wait_timeout)
                except ProviderError as exc:
                    results[item[0]] = self._named(exc)
                    continue
            submitted.append(item)
        nows = self._read_canonical_many([t for _i, t, _c, _s in submitted],
                                         [c.owner for _i, _t, c, _s in submitted])
        for (i, t, change, sub), now in zip(submitted, nows, strict=True):
            if isinstance(now, ProviderError):
                results[i] = now
            elif now.rdatas != sub.after or (sub.after and now.ttl != change.ttl):
                results[i] = self._named(ProviderError(
                    f"accepted the change of {change.owner} {t.rtype} but serves "
                    f"{len(now.rdatas)} record(s) ttl {now.ttl} instead of {len(sub.after)} ttl "
                    f"{change.ttl}: someone changed it again just now, or the backend ignored "
                    "part of the change (see its log)"))
        return results

    def _read_canonical_many(self, targets: Sequence[Target], labels: Sequence[str]
                             ) -> list[RRset | ProviderError]:
        """`_read_canonical` of each target; a backend that can read many at once overrides
        `_read_many`."""
        out: list[RRset | ProviderError] = []
        for t, label, raw in zip(targets, labels, self._read_many(targets), strict=True):
            if isinstance(raw, ProviderError):
                out.append(self._named(raw))
                continue
            ttl, texts = raw
            try:
                rdatas = frozenset(self._canonical_from_backend(t, text) for text in texts)
            except ProviderError as exc:
                out.append(self._named(exc))
                continue
            out.append(RRset(label, t.rtype, ttl if rdatas else None, rdatas))
        return out

    def _read_many(self, targets: Sequence[Target]
                   ) -> list[tuple[int | None, Iterable[str]] | ProviderError]:
        """`_read` of each target, one after the other (override to read many at once)."""
        out: list[tuple[int | None, Iterable[str]] | ProviderError] = []
        for t in targets:
            try:
                out.append(self._read(t))
            except ProviderError as exc:
                out.append(exc)
        return out

    def _submit_many(self, subs: Sequence[Submission]) -> list[object]:
        """`_submit` of each submission (override to send many in one request); a failure is
        returned as its ProviderError, success as `_submit`'s token."""
        out: list[object] = []
        for sub in subs:
            try:
                out.append(self._submit(sub))
            except ProviderError as exc:
                out.append(exc)
        return out

    def _named(self, exc: ProviderError) -> ProviderError:
        message = " ".join(str(exc).split())
        for secret in self._secrets():
            if secret:
                message = message.replace(secret, "<secret>")
        prefix = f"provider {self.name} ({self.TYPE}): "
        if not message.startswith(prefix):
            message = prefix + message
        return ProviderError(message, permanent=exc.permanent)


def load_provider_class(type_name: str) -> Any:
    """The class registered as provider `type_name`; ProviderError if unknown or unusable."""
    try:
        return registry.find("provider", type_name)
    except registry.PluginError as exc:
        raise ProviderError(str(exc)) from None
