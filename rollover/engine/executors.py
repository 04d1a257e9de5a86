"""One executor per action kind: the table `run` uses, and the one `plan` uses.

`plan` runs the very same loop as `run` (rollover.engine.loop) with DRY executors: those whose
outcome can be known without acting (reading DNS, looking at the live server) run for real;
those that would change something record what they would do and either give the outcome
they can know (a publish is accepted: the machine then waits for the servers) or stop the plan
with `Unknowable`, saying what decides the rest. No value is ever made up: a key not generated
yet shows as "<... known once generated>", never as a digest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rollover.config.load import EndpointConfig
from rollover.core import flight
from rollover.core import machine as m
from rollover.dane import tlsa
from rollover.edges.issuers import IssuerError, issuer_chain
from rollover.edges.protocols import ExecContext
from rollover.errors import AcmeError, InstallError, ObserveError, ProviderError, StateError
from rollover.model import PROBED_ALGORITHMS, Observation, Scheme, SlotId, own_rdata
from rollover.providers.base import Change, Provider
from rollover.sources import CertSourceError, ExternalCert, NoCertYet

log = logging.getLogger("rollover.engine")

Executor = Callable[[ExecContext, EndpointConfig, m.SlotState, Any], m.Event]
# One kind of action for many slots at once: an event, or the error (ProviderError, StateError,
# ObserveError, Unknowable) for each, in order.
BatchItem = tuple[EndpointConfig, m.SlotState, Any]
BatchExecutor = Callable[[ExecContext, Sequence[BatchItem]], list[m.Event | Exception]]


class Unknowable(Exception):
    """Plan stops here: what follows depends on the outcome of acting. str() says what."""


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _latest(ctx: ExecContext, ep: EndpointConfig, st: m.SlotState) -> Observation:
    """The observation the machine just decided on (taken this iteration, milliseconds ago), so
    an action is judged on exactly what its guard saw; a fresh one otherwise."""
    return st.observation if st.observation is not None else ctx.observe(ep)


def _load_chain(ctx: ExecContext, rel: str) -> list[x509.Certificate]:
    data = ctx.edges.store.read_file(rel)
    if data is None:
        raise StateError(f"certificate file {rel} is missing from the state directory")
    return x509.load_pem_x509_certificates(data)


# --- real executors ---------------------------------------------------------------------------


def stage_key(ctx: ExecContext, ep: EndpointConfig, st: m.SlotState,
              action: m.StageKey) -> m.Event:
    store = ctx.edges.store
    if store.has_key(action.key_id):  # a crashed earlier attempt: same id, same key
        pem = store.read_key(action.key_id)
    else:
        key = tlsa.generate_private_key(action.slot.algorithm)
        pem = tlsa.private_key_pem(key)
        store.write_key(action.key_id, pem)
    private = serialization.load_pem_private_key(pem, password=None)
    return m.KeyStaged(ctx.clock.now(), action.key_id, action.role, tlsa.spki_sha256_hex(private))


def _change(ctx: ExecContext, ep: EndpointConfig, action: m.Publish) -> Change:
    zone = ctx.zone_of(ep)
    current = ctx.edges.providers[ep.provider].read(zone, action.owner, "TLSA")
    return Change(zone, action.owner, "TLSA", action.ttl, add=action.add, remove=action.remove,
                  expect=current.rdatas)


def publish(ctx: ExecContext, ep: EndpointConfig, st: m.SlotState,
            action: m.Publish) -> m.Event:
    provider = ctx.edges.providers[ep.provider]
    provider.apply(_change(ctx, ep, action))
    provider.wait_applied(60.0)
    return m.Published(ctx.clock.now())


def order(ctx: ExecContext, ep: EndpointConfig, st: m.SlotState, action: m.OrderCert) -> m.Event:
    source = ctx.edges.certs.get(str(ep.endpoint))
    now = ctx.clock.now
    if source is None:
        return m.Failed(now(), "no certificate source configured")
    key_pem = ctx.edges.store.read_key(action.key_id)
    try:
        issued = source.order(ep, st.slot, key_pem)
    except (AcmeError, ProviderError, CertSourceError) as exc:
        why = f"order for key {action.key_id}: {exc}"
        # the ACME client says which errors a later attempt cannot fix (an account that needs
        # EAB, an unknown profile, a refused key type): those stop the slot
        if getattr(exc, "retryable", True) is False or getattr(exc, "permanent", False):
            return m.Stopped(now(), why)
        if getattr(exc, "challenge", False) and ctx.config.acme is not None:
            # a rejected challenge may be propagation (retry), but a CA limits failed
            # validations: after `challenge_attempts` failed orders in a row, stop
            limit = ctx.config.acme.challenge_attempts
            attempt = st.failures + 1
            if attempt >= limit:
                return m.Stopped(now(), f"{why}; {attempt} attempts in a row failed "
                                        f"(acme.challenge_attempts: {limit})")
            why = f"{why} (attempt {attempt} of {limit}, acme.challenge_attempts)"
        return m.Failed(now(), why, not_before=getattr(exc, "retry_after", None))
    leaf = x509.load_pem_x509_certificate(issued.chain_pem)
    key = st.key_by_id(action.key_id)
    assert key is not None
    if tlsa.spki_sha256_hex(leaf) != key.spki_sha256:
        return m.Failed(now(), "the CA returned a certificate for another key")
    chain_pem, issuers, labels = issued.chain_pem, tuple[str, ...](), tuple[str, ...]()
    if ep.scheme == Scheme.CURRENT_ISSUER:
        try:
            chain_pem, issuers, labels = issuer_chain(issued.chain_pem, ep)
        except IssuerError as exc:
            return m.Failed(now(), f"order for key {action.key_id}: {exc}")
    rel = f"certs/{st.slot.key.replace(':', '_')}-{issued.serial}.pem"
    ctx.edges.store.write_file(rel, chain_pem, 0o644)
    at = now()
    return m.CertIssued(at, m.CertInfo(action.key_id, issued.serial, issued.not_after, at, rel,
                                       issued.renew_at, issued.ari_retry_after, issuers,
                                       labels))


def install(ctx: ExecContext, ep: EndpointConfig, st: m.SlotState,
            action: m.InstallCert) -> m.Event:
    installer = ctx.edges.installers.get(str(ep.endpoint))
    if installer is None:
        return m.Failed(ctx.clock.now(), "no installer configured for this endpoint")
    chain = _load_chain(ctx, action.chain_file)
    refusal = flight.preflight(chain, _latest(ctx, ep, st), ctx.edges.verify, ep.host,
                               ctx.clock.now())
    if refusal is not None:
        return m.Failed(ctx.clock.now(), refusal)
    data = ctx.edges.store.read_file(action.chain_file)
    assert data is not None
    try:
        installer.install(st.slot, ctx.edges.store.read_key(action.key_id), data)
    except InstallError as exc:
        return m.Failed(ctx.clock.now(), f"install: {exc}")
    return m.Installed(ctx.clock.now())


def probe(ctx: ExecContext, ep: EndpointConfig, st: m.SlotState, action: m.ProbeLive) -> m.Event:
    if ctx.edges.prober is None:
        return m.ProbeOk(ctx.clock.now())  # nothing to probe with: installer-only setups
    key = st.key_by_id(action.key_id)
    assert key is not None
    obs = _latest(ctx, ep, st)
    seen = ctx.edges.prober.probe(ep, st.slot) if obs.agreed() is not None else []
    now = ctx.clock.now()
    why = flight.postflight(seen, action.key_id, key.spki_sha256, obs, ctx.edges.verify,
                            ep.host, now)
    probes = tuple(m.ProbeResult(a, ok, now, err) for a, ok, err in
                   flight.per_address(seen, obs, ctx.edges.verify, ep.host, now))
    if why is None:
        return m.ProbeOk(now, probes)
    split = flight.split_host(seen, key.spki_sha256, frozenset(k.spki_sha256 for k in st.keys))
    if split is not None:
        return m.Failed(now, f"{why}; {split}", probes, stop=True)
    return m.Failed(now, why, probes)


def refresh_ari(ctx: ExecContext, ep: EndpointConfig, st: m.SlotState,
                action: m.RefreshAri) -> m.Event:
    source = ctx.edges.certs.get(str(ep.endpoint))
    now = ctx.clock.now()
    data = ctx.edges.store.read_file(st.installed.chain_file) if st.installed else None
    if source is None or data is None:
        return m.AriChecked(now, None, None)
    try:
        renew_at, retry_after = source.renewal(data)
    except AcmeError as exc:
        log.info("%s: ARI: %s; asking again in 6 h", st.slot, exc)
        return m.AriChecked(now, None, now + timedelta(hours=6))
    return m.AriChecked(now, renew_at, retry_after)


def inspect_live(ctx: ExecContext, ep: EndpointConfig, st: m.SlotState,
                 action: m.InspectLive) -> m.Event:
    """Bootstrap: the keys the server presents now, so their 3 1 1 go out with ours and the
    certificate in service keeps matching until ours replaces it. A look that fails for a
    reason other than "nothing of this algorithm is served there" blocks publishing."""
    now = ctx.clock.now()
    if ep.bootstrap == "no-certificate":
        return m.LiveSeen(now)  # the operator says nothing is in service
    if ctx.edges.prober is None:
        return m.LiveUnseen(now, "no prober to look at the server with")
    seen: set[str] = set()
    blind: list[str] = []
    for presented in ctx.edges.prober.probe(ep, st.slot):
        if presented.chain:
            seen.add(own_rdata(tlsa.spki_sha256_hex(presented.chain[0])))
        elif presented.nothing_served:
            log.info("%s: %s:%d presents nothing for %s: %s", st.slot, presented.address,
                     ep.port, st.slot.algorithm.value, presented.error)
        else:
            blind.append(f"{_hostport(presented.address, ep.port)}: "
                         f"{presented.error or 'no certificate'}")
    blind += _foreign_keys(ctx, ep)
    if blind:
        return m.LiveUnseen(ctx.clock.now(), "; ".join(blind))
    return m.LiveSeen(ctx.clock.now(), frozenset(seen))


def _foreign_keys(ctx: ExecContext, ep: EndpointConfig) -> list[str]:
    """Keys of a family none of the endpoint's slots covers, that the server presents now (a
    stock Postfix's RSA snakeoil next to `algorithms: [ecdsa-p256]`): the records we publish
    would match nothing a client of that family gets, so publishing waits for the operator."""
    assert ctx.edges.prober is not None
    covered = {a.family for a in ep.algorithms}
    configured = ", ".join(a.value for a in ep.algorithms)
    out: list[str] = []
    for alg in PROBED_ALGORITHMS:
        family = alg.family
        if family in covered:
            continue
        for presented in ctx.edges.prober.probe(ep, SlotId(ep.host, ep.port, alg)):
            if not presented.chain:
                continue  # nothing of that family there (or not seen: the slot's look says)
            spki = tlsa.spki_sha256_hex(presented.chain[0])
            out.append(f"{_hostport(presented.address, ep.port)}: presents an {family.upper()} "
                       f"key (3 1 1 {spki[:12]}...) but this endpoint's algorithms are "
                       f"{configured}: records for those alone would match nothing "
                       f"{family.upper()} clients get; add an {family} algorithm (its key is "
                       "then kept published until rollover's own is in service) or stop "
                       "the server offering it")
    return out


def rollback(ctx: ExecContext, ep: EndpointConfig, st: m.SlotState,
             action: m.Rollback) -> m.Event:
    installer = ctx.edges.installers.get(str(ep.endpoint))
    if installer is not None:
        try:
            installer.rollback(st.slot)
        except InstallError as exc:
            return m.Failed(ctx.clock.now(), f"rollback: {exc}")
    return m.RolledBack(ctx.clock.now())


def drop_key(ctx: ExecContext, ep: EndpointConfig, st: m.SlotState,
             action: m.DropKey) -> m.Event:
    store = ctx.edges.store
    if ep.policy.archive_keys and store.has_key(action.key_id):
        where = store.archive_key(action.key_id)
        log.info("%s: archived retired key %s as %s", st.slot, action.key_id, where)
    else:
        store.delete_key(action.key_id)
    return m.KeyDropped(ctx.clock.now(), action.key_id)


def _snapshot(ctx: ExecContext, ep: EndpointConfig, st: m.SlotState
              ) -> ExternalCert | m.CertAwaited:
    """The external source's newest snapshot, or why there is nothing to take."""
    now = ctx.clock.now()
    source = ctx.edges.certs.get(str(ep.endpoint))
    latest = getattr(source, "latest", None)
    if source is None or not callable(latest):
        return m.CertAwaited(now, "the certificate source is not an external one")
    try:
        snap: ExternalCert = latest(st.slot)
    except NoCertYet as exc:
        log.info("%s: %s", st.slot, exc)
        return m.CertAwaited(now)
    except CertSourceError as exc:
        return m.CertAwaited(now, str(exc))
    if snap.serial in {c.serial for c in (st.installed, st.pending) if c is not None}:
        return m.CertAwaited(now)
    return snap


def take_cert(ctx: ExecContext, ep: EndpointConfig, st: m.SlotState,
              action: m.TakeCert) -> m.Event:
    """An external source's newest certificate, if rollover has not seen it: its key is copied
    into the state dir (the installer reads it there; the source's files are never written),
    the chain stored like an ordered one."""
    snap = _snapshot(ctx, ep, st)
    if isinstance(snap, m.CertAwaited):
        return snap
    now = ctx.clock.now()
    known = next((k for k in st.keys if k.spki_sha256 == snap.spki_sha256), None)
    key_id = known.key_id if known else action.key_id
    store = ctx.edges.store
    if not store.has_key(key_id):
        store.write_key(key_id, snap.key_pem)
    elif known is None and store.read_key(key_id) != snap.key_pem:
        # a take that crashed wrote this id for a key the source has replaced since
        store.delete_key(key_id)
        store.write_key(key_id, snap.key_pem)
    chain_pem, issuers, labels = snap.chain_pem, tuple[str, ...](), tuple[str, ...]()
    if ep.scheme == Scheme.CURRENT_ISSUER:
        try:
            chain_pem, issuers, labels = issuer_chain(snap.chain_pem, ep)
        except IssuerError as exc:
            return m.CertAwaited(now, f"{st.slot}: {exc}")
    rel = f"certs/{st.slot.key.replace(':', '_')}-{snap.serial}.pem"
    store.write_file(rel, chain_pem, 0o644)
    log.info("%s: took certificate %s (key %s%s)", st.slot, snap.serial, key_id,
             "" if known else ", new")
    return m.CertTaken(now, key_id, snap.spki_sha256,
                       m.CertInfo(key_id, snap.serial, snap.not_after, now, rel,
                                  issuers=issuers, issuer_names=labels))


REAL: dict[type[m.Action], Executor] = {
    m.StageKey: stage_key,
    m.Publish: publish,
    m.OrderCert: order,
    m.InstallCert: install,
    m.ProbeLive: probe,
    m.RefreshAri: refresh_ari,
    m.InspectLive: inspect_live,
    m.Rollback: rollback,
    m.DropKey: drop_key,
    m.TakeCert: take_cert,
}


# --- dry executors (plan) --------------------------------------------------------------------


def _dry_stage_key(ctx: ExecContext, ep: EndpointConfig, st: m.SlotState,
                   action: m.StageKey) -> m.Event:
    if ctx.edges.store.has_key(action.key_id):  # generated by a run that crashed: it is known
        return stage_key(ctx, ep, st, action)
    unknown = f"<{action.role.value} {action.slot.algorithm.value} key: known once generated>"
    return m.KeyStaged(ctx.clock.now(), action.key_id, action.role, unknown)


def _dry_publish(ctx: ExecContext, ep: EndpointConfig, st: m.SlotState,
                 action: m.Publish) -> m.Event:
    _change(ctx, ep, action)  # reads the provider: a credential problem shows in the plan too
    return m.Published(ctx.clock.now())  # then the machine waits for every server


def _dry_order(ctx: ExecContext, ep: EndpointConfig, st: m.SlotState,
               action: m.OrderCert) -> m.Event:
    source = ctx.edges.certs.get(str(ep.endpoint))
    where = source.describe() if source is not None else _source_name(ctx, ep)
    raise Unknowable(f"from {where}; what follows depends on the certificate the CA issues")


def _source_name(ctx: ExecContext, ep: EndpointConfig) -> str:
    cert = ep.certificate
    if cert is None:
        return "no certificate source"
    acme = ctx.config.acme
    if cert.source == "acme" and acme is not None and acme.directory:
        return f"ACME {acme.directory}"
    return cert.source


def _dry_install(ctx: ExecContext, ep: EndpointConfig, st: m.SlotState,
                 action: m.InstallCert) -> m.Event:
    chain = _load_chain(ctx, action.chain_file)
    refusal = flight.preflight(chain, _latest(ctx, ep, st), ctx.edges.verify, ep.host,
                               ctx.clock.now())
    ic = ctx.config.installer_for(ep)
    into = f" with installer {ic.name} ({ic.type})" if ic is not None else ""
    if refusal is not None:
        raise Unknowable(f"{into}: would be refused now: {refusal}")
    raise Unknowable(f"{into}: the pre-flight passes now; the post-flight decides the rest")


def _dry_take(ctx: ExecContext, ep: EndpointConfig, st: m.SlotState,
              action: m.TakeCert) -> m.Event:
    snap = _snapshot(ctx, ep, st)  # reads the source's files only
    if isinstance(snap, m.CertAwaited):
        return snap
    known = any(k.spki_sha256 == snap.spki_sha256 for k in st.keys)
    raise Unknowable(f"from {_source_name(ctx, ep)}: certificate {snap.serial} for "
                     f"{'the same' if known else 'a new'} key 3 1 1 {snap.spki_sha256[:12]}…")


def _dry_stop(what: str) -> Executor:
    def executor(ctx: ExecContext, ep: EndpointConfig, st: m.SlotState, action: Any) -> m.Event:
        raise Unknowable(what)

    return executor


DRY: dict[type[m.Action], Executor] = {
    **REAL,  # reading DNS and looking at the live server change nothing: done for real
    m.StageKey: _dry_stage_key,
    m.Publish: _dry_publish,
    m.OrderCert: _dry_order,
    m.InstallCert: _dry_install,
    m.RefreshAri: _dry_stop("the CA's answer decides the renewal time"),
    m.Rollback: _dry_stop("the installer restores the previous files"),
    m.DropKey: _dry_stop("the key file is deleted (or archived)"),
    m.TakeCert: _dry_take,
}


# --- batch executors: one kind of action for many slots at once ------------------------------


def _by_provider(ctx: ExecContext, items: Sequence[BatchItem]
                 ) -> tuple[dict[str, list[tuple[int, Change]]], list[m.Event | Exception]]:
    """Each publish as a Change (expect=None: the provider's own read right before the update
    is the compare-and-swap), grouped by provider; a zone that cannot be found is the item's
    error."""
    groups: dict[str, list[tuple[int, Change]]] = {}
    out: list[m.Event | Exception] = [ProviderError("not attempted")] * len(items)
    for i, (ep, _st, action) in enumerate(items):
        try:
            zone = ctx.zone_of(ep)
        except ObserveError as exc:
            out[i] = exc
            continue
        groups.setdefault(ep.provider, []).append(
            (i, Change(zone, action.owner, "TLSA", action.ttl, add=action.add,
                       remove=action.remove)))
    return groups, out


def _apply_many(provider: Provider, changes: list[Change]) -> list[ProviderError | None]:
    many = getattr(provider, "apply_many", None)
    if many is not None:
        results: list[ProviderError | None] = many(changes)
        return results
    out: list[ProviderError | None] = []
    for change in changes:
        try:
            provider.apply(change)
        except ProviderError as exc:
            out.append(exc)
        else:
            out.append(None)
    return out


def _merged(members: list[tuple[int, Change]]) -> tuple[list[Change], list[int]]:
    """One change per owner: the slots of one endpoint (one per algorithm) share its RRset, and
    must change it in one update. Separate updates would leave a moment in which it holds one
    slot's records but not the other's key in service (seen: an RSA-only client failing for
    ~100 ms at bootstrap). Returns the merged changes and, per member, its change's index."""
    merged: list[Change] = []
    where: dict[tuple[str, str], int] = {}
    index: list[int] = []
    for _i, c in members:
        key = (c.zone, c.owner)
        if key not in where:
            where[key] = len(merged)
            merged.append(c)
        else:
            k = where[key]
            prev = merged[k]
            add = prev.add | c.add
            merged[k] = replace(prev, ttl=max(prev.ttl, c.ttl), add=add,
                                remove=(prev.remove | c.remove) - add)
        index.append(where[key])
    return merged, index


def publish_many(ctx: ExecContext, items: Sequence[BatchItem]) -> list[m.Event | Exception]:
    """Publish for many slots: per provider one `apply_many` (many owners per update), the slots
    of one owner merged into one change."""
    groups, out = _by_provider(ctx, items)
    for name, members in groups.items():
        provider = ctx.edges.providers[name]
        changes, index = _merged(members)
        results = _apply_many(provider, changes)
        try:
            provider.wait_applied(60.0)
        except ProviderError as exc:
            results = [r or exc for r in results]
        for (i, _c), k in zip(members, index, strict=True):
            err = results[k]
            out[i] = err if err is not None else m.Published(ctx.clock.now())
    return out


def _dry_publish_many(ctx: ExecContext, items: Sequence[BatchItem]) -> list[m.Event | Exception]:
    """Reads the provider for every owner (a credential problem shows in the plan too)."""
    groups, out = _by_provider(ctx, items)
    for name, members in groups.items():
        provider = ctx.edges.providers[name]
        wanted = [(c.zone, c.owner, "TLSA") for _i, c in members]
        many = getattr(provider, "read_many", None)
        if many is not None:
            reads: list[object] = many(wanted)
        else:
            reads = []
            for zone, owner, rtype in wanted:
                try:
                    reads.append(provider.read(zone, owner, rtype))
                except ProviderError as exc:
                    reads.append(exc)
        for (i, _c), got in zip(members, reads, strict=True):
            out[i] = got if isinstance(got, ProviderError) else m.Published(ctx.clock.now())
    return out


REAL_BATCH: dict[type[m.Action], BatchExecutor] = {m.Publish: publish_many}
DRY_BATCH: dict[type[m.Action], BatchExecutor] = {m.Publish: _dry_publish_many}
