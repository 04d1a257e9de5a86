"""PowerDNS Authoritative through its HTTP API (`type: powerdns`).

    providers:
      pdns:
        type: powerdns
        api_url: http://127.0.0.1:8081       # the webserver with api=yes
        api_key_file: /etc/rollover/pdns.key # the X-API-Key value alone, chmod 600
        server_id: localhost                 # default
        rectify: false                       # true: PUT .../rectify after each change (DNSSEC)
        soa_edit_api: null                   # e.g. INCREASE: set it on the zone if it differs
        notify: true                         # Master zones: NOTIFY the secondaries at once
        timeout: 10

Reads GET the zone filtered to the one RRset (`rrset_name`, `rrset_type`); a change is one PATCH
with `changetype: REPLACE` of the whole RRset computed from that fresh read (DELETE when it
ends up empty). PowerDNS applies a PATCH before it answers, so nothing is waited for; the shared
algorithm re-reads and confirms. The API has no conditional write: a writer that lands between
our read and our PATCH is not detected by the PATCH itself (SUPPORTS.cas is False), one that
lands after it is caught by the re-read.

Zone kinds: Native and Master (Primary) are written; a Slave (Secondary) or Consumer zone is
refused, because its data comes from elsewhere by AXFR and an edit would be overwritten. After a
change to a Master zone the secondaries are sent a NOTIFY at once (`PUT .../notify`) unless
`notify: false`; PowerDNS itself would only notice the new serial at its next
xfr-cycle-interval (60 s by default).
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollover import fileio
from rollover.config.check import Section
from rollover.config.registry import ParseContext
from rollover.display import shown
from rollover.errors import ProviderError

from .base import ProviderBase, Submission, Supports, Target

WRITABLE_KINDS = ("native", "master", "primary")
NOTIFY_KINDS = ("master", "primary")
SOA_EDIT_API = ("DEFAULT", "INCREASE", "EPOCH", "SOA-EDIT", "SOA-EDIT-INCREASE", "OFF")


@dataclass(frozen=True)
class PowerDNSOptions:
    api_url: str
    api_key_file: Path
    server_id: str = "localhost"
    rectify: bool = False
    soa_edit_api: str | None = None
    timeout: float = 10.0
    ca_bundle: Path | None = None
    notify: bool = True


class PowerDNSProvider(ProviderBase):
    TYPE = "powerdns"
    SUPPORTS = Supports(rtypes=frozenset({"TLSA", "TXT"}), cas=False, needs_wait=False)
    OPTIONS = ("api_url", "api_key_file", "server_id", "rectify", "soa_edit_api", "timeout",
               "ca_bundle", "notify")

    @classmethod
    def parse_options(cls, sec: Section, ctx: ParseContext) -> PowerDNSOptions | None:
        url = sec.get_str("api_url", required=True)
        if url is not None:
            parsed = urllib.parse.urlsplit(url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                sec.bad("api_url", f"{shown(url)} is not an http(s) URL")
                url = None
            elif parsed.path not in ("", "/"):
                sec.bad("api_url", f"give the webserver's base URL without a path (not "
                        f"{parsed.path!r}); rollover adds /api/v1/...")
                url = None
        key_file = ctx.secret_file(sec, "api_key_file", "PowerDNS API key file", True)
        server_id = sec.get_str("server_id", "localhost") or "localhost"
        rectify = sec.get_bool("rectify", False)
        soa_edit = sec.get_str("soa_edit_api")
        if soa_edit is not None and soa_edit.upper() not in SOA_EDIT_API:
            sec.bad("soa_edit_api", f"unknown SOA-EDIT-API {shown(soa_edit)} (allowed: "
                    f"{', '.join(SOA_EDIT_API)})")
            soa_edit = None
        timeout = sec.get_float("timeout", 10.0, hi=300)
        ca_bundle = sec.get_path("ca_bundle", ctx.base, must_exist="file")
        notify = sec.get_bool("notify", True)
        if url is None or key_file is None:
            return None
        return PowerDNSOptions(url.rstrip("/"), key_file, server_id, rectify,
                               soa_edit.upper() if soa_edit else None, timeout, ca_bundle,
                               notify)

    @classmethod
    def from_config(cls, name: str, options: PowerDNSOptions) -> PowerDNSProvider:
        key = fileio.read_secret(options.api_key_file, "PowerDNS API key file", ProviderError)
        return cls(name, options, key)

    def __init__(self, name: str, options: PowerDNSOptions, api_key: str) -> None:
        self.name = name
        self.options = options
        self._key = api_key.strip()
        self._ssl = (ssl.create_default_context(cafile=str(options.ca_bundle))
                     if options.ca_bundle else None)
        self._soa_checked: set[str] = set()
        self._kinds: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"PowerDNSProvider(name={self.name!r}, api_url={self.options.api_url!r})"

    __str__ = __repr__

    def _secrets(self) -> Iterable[str]:
        return (self._key,)

    # -- HTTP ----------------------------------------------------------------------------------

    def _zone_path(self, zone: str) -> str:
        sid = urllib.parse.quote(self.options.server_id, safe="")
        return f"/api/v1/servers/{sid}/zones/{urllib.parse.quote(zone, safe='.')}"

    def _call(self, method: str, path: str, what: str, body: Any = None,
              query: dict[str, str] | None = None) -> Any:
        url = self.options.api_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={
            "X-API-Key": self._key, "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {})})
        where = self.options.api_url
        try:
            with urllib.request.urlopen(req, timeout=self.options.timeout,
                                        context=self._ssl) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = _error_text(exc)
            if exc.code in (401, 403):
                raise ProviderError(f"{where} refused the API key ({exc.code}) {what}: check "
                                    "api_key_file against the server's api-key",
                                    permanent=True) from None
            if exc.code == 404:
                raise ProviderError(f"{where}: not found (404) {what}{detail}: is the zone on "
                                    f"this server (server_id {self.options.server_id})?",
                                    permanent=True) from None
            raise ProviderError(f"{where} answered HTTP {exc.code} {what}{detail}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            text = getattr(reason, "strerror", None) or str(reason)
            raise ProviderError(f"cannot reach {where} {what}: {text}") from None
        except TimeoutError:
            raise ProviderError(f"{where} did not answer within {self.options.timeout:g}s "
                                f"{what}") from None
        except OSError as exc:
            raise ProviderError(f"cannot reach {where} {what}: {exc.strerror or exc}") from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ProviderError(f"{where} answered something that is not JSON {what}") from None

    def _zone(self, t: Target) -> dict[str, Any]:
        what = f"reading {t.owner} {t.rtype}"
        doc = self._call("GET", self._zone_path(t.zone), what,
                         query={"rrset_name": t.owner, "rrset_type": t.rtype})
        if not isinstance(doc, dict) or not isinstance(doc.get("rrsets"), list):
            raise ProviderError(f"{self.options.api_url} answered an unexpected zone document "
                                f"{what}")
        kind = str(doc.get("kind", "")).lower()
        self._kinds[t.zone] = kind
        if kind not in WRITABLE_KINDS:
            raise ProviderError(
                f"zone {t.zone} is a {doc.get('kind')} zone on {self.options.api_url}: its data "
                "comes from its primary, so rollover must write there (configure the primary's "
                "API)", permanent=True
            )
        return doc

    # -- ProviderBase --------------------------------------------------------------------------

    def _read(self, t: Target) -> tuple[int | None, Iterable[str]]:
        doc = self._zone(t)
        for rrset in doc["rrsets"]:
            if str(rrset.get("name", "")).lower() == t.owner and rrset.get("type") == t.rtype:
                records = [r["content"] for r in rrset.get("records", [])
                           if not r.get("disabled")]
                return int(rrset["ttl"]), records
        return None, ()

    def _submit(self, sub: Submission) -> None:
        t = sub.target
        self._ensure_soa_edit(t.zone)
        if sub.after:
            rrset: dict[str, Any] = {
                "name": t.owner, "type": t.rtype, "ttl": sub.ttl, "changetype": "REPLACE",
                "records": [{"content": c, "disabled": False} for c in sorted(sub.after)]}
        else:
            rrset = {"name": t.owner, "type": t.rtype, "changetype": "DELETE"}
        self._call("PATCH", self._zone_path(t.zone), f"updating {t.owner} {t.rtype}",
                   {"rrsets": [rrset]})
        if self.options.rectify:
            self._call("PUT", self._zone_path(t.zone) + "/rectify", f"rectifying zone {t.zone}")
        if self.options.notify and self._kinds.get(t.zone) in NOTIFY_KINDS:
            self._call("PUT", self._zone_path(t.zone) + "/notify",
                       f"asking it to NOTIFY the secondaries of {t.zone}")

    def _ensure_soa_edit(self, zone: str) -> None:
        wanted = self.options.soa_edit_api
        if wanted is None or zone in self._soa_checked:
            return
        doc = self._call("GET", self._zone_path(zone), f"reading zone {zone}",
                         query={"rrsets": "false"})
        if str(doc.get("soa_edit_api", "")).upper() != wanted:
            self._call("PUT", self._zone_path(zone), f"setting soa_edit_api of {zone}",
                       {"soa_edit_api": wanted})
        self._soa_checked.add(zone)


def _error_text(exc: urllib.error.HTTPError) -> str:
    """PowerDNS's {"error": "..."} as ": ...", cut short; never a header or a key."""
    try:
        doc = json.loads(exc.read()[:2000] or b"{}")
    except (ValueError, OSError):
        return ""
    text = doc.get("error") if isinstance(doc, dict) else None
    return f": {' '.join(str(text).split())[:200]}" if text else ""
