"""Any octoDNS provider as a rollover provider (`type: octodns`; `pip install octodns` and the
octoDNS provider package, e.g. octodns-powerdns, octodns-bind, octodns-cloudflare).

    providers:
      via-octodns:
        type: octodns
        class: octodns_powerdns.PowerDnsProvider   # any octoDNS provider class
        options: {host: 192.0.2.10, port: 8081}    # its constructor's arguments
        secret_files: {api_key: /etc/rollover/pdns.key}   # arguments read from 0600 files

The class must declare TLSA in its `SUPPORTS` (and TXT for ACME DNS-01); one that does not (e.g.
octodns-route53's) is refused when the config loads, with the reason.

Scoped: rollover never hands octoDNS a plan computed from a whole zone. Each change becomes a
plan of exactly one octoDNS Change (Create, Update or Delete) of the one owner/type rollover
manages, so no other record of the zone can be touched, whatever the zone holds. Reads go through
the provider's `populate` (the whole zone is read; only the one RRset is used).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollover import fileio
from rollover.config.check import Section, line_of
from rollover.config.registry import ParseContext
from rollover.errors import ProviderError

from .base import ProviderBase, Submission, Supports, Target

WANTED = frozenset({"TLSA", "TXT"})


@dataclass(frozen=True)
class OctoDNSOptions:
    class_path: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, repr=False)
    secret_files: dict[str, Path] = field(default_factory=dict, hash=False)

    def load(self) -> Any:
        return load_class(self.class_path)


def load_class(path: str) -> Any:
    """The octoDNS provider class `module.Class`; ProviderError if it cannot be imported."""
    module_name, _, class_name = path.rpartition(".")
    if not module_name or not class_name:
        raise ProviderError(f"{path!r} is not module.Class (e.g. "
                            "octodns_powerdns.PowerDnsProvider)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ProviderError(f"cannot import {module_name} ({exc}); install octodns and the "
                            "package that provides it") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ProviderError(f"{module_name} has no {class_name}")
    return cls


def declared(cls: Any) -> frozenset[str]:
    supports = getattr(cls, "SUPPORTS", ())
    return frozenset(str(s).upper() for s in supports) & WANTED


class OctoDNSProvider(ProviderBase):
    TYPE = "octodns"
    OPTIONS = ("class", "options", "secret_files")

    @classmethod
    def parse_options(cls, sec: Section, ctx: ParseContext) -> OctoDNSOptions | None:
        path = sec.get_str("class", required=True)
        octo_cls = None
        if path is not None:
            try:
                octo_cls = load_class(path)
            except ProviderError as exc:
                sec.bad("class", str(exc))
            else:
                if "TLSA" not in declared(octo_cls):
                    sec.bad("class", f"{path} does not declare TLSA in its SUPPORTS, so it "
                            "cannot write TLSA records; use a provider that does")
                    octo_cls = None
        options: dict[str, Any] = {}
        if sec.has("options"):
            node = sec.value_node("options")
            ok, value = sec.p.construct(node, f"{sec.path}.options") if node else (False, None)
            if ok and isinstance(value, dict) and all(isinstance(k, str) for k in value):
                options = value
            elif ok:
                sec.p.error(line_of(node), f"{sec.path}.options",
                            "must be a mapping of the octoDNS provider's arguments")
        secrets: dict[str, Path] = {}
        ssec = sec.section("secret_files", (), open_ended=True)
        if ssec is not None:
            for key in ssec.keys:
                secret = ctx.secret_file(ssec, key, f"secret file for {key}", True)
                if secret is not None:
                    secrets[key] = secret
                if key in options:
                    ssec.bad(key, "is given in options too")
        if octo_cls is None or path is None:
            return None
        return OctoDNSOptions(path, options, secrets)

    @classmethod
    def supports_for(cls, options: OctoDNSOptions) -> Supports:
        return Supports(rtypes=declared(options.load()), cas=False, needs_wait=False)

    @classmethod
    def from_config(cls, name: str, options: OctoDNSOptions) -> OctoDNSProvider:
        secrets = {k: fileio.read_secret(p, f"secret file for {k}", ProviderError)
                   for k, p in options.secret_files.items()}
        octo_cls = options.load()
        try:
            octo = octo_cls(name, **options.options, **secrets)
        except Exception as exc:  # a third-party constructor: any failure is a config problem
            text = _scrub(f"{type(exc).__name__}: {exc}", secrets.values())
            raise ProviderError(f"{options.class_path} cannot be set up: {text}") from None
        return cls(name, options, octo, secrets.values())

    def __init__(self, name: str, options: OctoDNSOptions, octo: Any,
                 secrets: Iterable[str] = ()) -> None:
        self.name = name
        self.options = options
        self._octo = octo
        self._hidden = tuple(s for s in secrets if s)
        self._supports = Supports(rtypes=declared(type(octo)))

    @property
    def supports(self) -> Supports:
        return self._supports

    def __repr__(self) -> str:
        return f"OctoDNSProvider(name={self.name!r}, class={self.options.class_path!r})"

    def _secrets(self) -> Iterable[str]:
        return self._hidden

    def _octo_call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ProviderError:
            raise
        except Exception as exc:  # an octoDNS provider raises what it likes
            text = _scrub(" ".join(f"{type(exc).__name__}: {exc}".split())[:300], self._hidden)
            raise ProviderError(f"{self.options.class_path} failed {what}: {text}") from None

    # -- ProviderBase --------------------------------------------------------------------------

    def _read(self, t: Target) -> tuple[int | None, Iterable[str]]:
        from octodns.zone import Zone

        zone = Zone(t.zone, [])
        self._octo_call(f"reading zone {t.zone}", self._octo.populate, zone, lenient=True)
        for record in zone.records:
            if record.fqdn.lower() == t.owner and record._type == t.rtype:
                rrset = record.to_rrset()
                return int(rrset.ttl), list(rrset.rdatas)
        return None, ()

    def _submit(self, sub: Submission) -> None:
        from octodns.provider.plan import Plan
        from octodns.record import Create, Delete, Record, Update
        from octodns.record.rr import Rrset
        from octodns.zone import Zone

        t = sub.target
        existing_zone, desired_zone = Zone(t.zone, []), Zone(t.zone, [])

        def record(zone: Any, ttl: int | None, rdatas: frozenset[str]) -> Any:
            return Record.from_rrset(zone, Rrset(t.owner, t.rtype, ttl, sorted(rdatas)))

        old = (self._octo_call("building the old record", record, existing_zone,
                               sub.before.ttl, sub.before.rdatas)
               if sub.before.rdatas else None)
        new = (self._octo_call("building the new record", record, desired_zone, sub.ttl,
                               sub.after)
               if sub.after else None)
        if old is not None:
            existing_zone.add_record(old, lenient=True)
        if new is not None:
            desired_zone.add_record(new, lenient=True)
        if old is None:
            change: Any = Create(new)
        elif new is None:
            change = Delete(old)
        else:
            change = Update(old, new)
        plan = Plan(existing_zone, desired_zone, [change], exists=True)
        self._octo_call(f"updating {t.owner} {t.rtype}", self._octo.apply, plan)


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<secret>")
    return text
