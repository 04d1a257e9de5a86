"""The state file is input: every field of state.json is checked against a declarative schema
before any of it reaches the machine (`machine.slot_from_dict`).

A file that does not fit is refused with one line naming the file and the field
("state.json: slots['mail.example.nl:25:ecdsa-p256'].records[1].rdata: must be a TLSA record
"U S M HEX", got the number 3"); nothing is repaired or rewritten.

To add a field, add one line to the table of its object (SLOT, KEY, RECORD, CERT, OBSERVATION,
ANSWER, PROBE): `"name": F(kind, required=..., null=...)`. A field not in its table is refused, so a
file written by a newer rollover (or by hand) is never half understood.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rollover.clock import parse_time
from rollover.core.machine import KeyRole, Phase, RecordKind, RecordState
from rollover.display import clip
from rollover.dns.names import normalize_hostname
from rollover.model import Algorithm, TLSARecord

Check = Callable[[Any], str | None]  # None when fine, else what it must be
MAX_INT = 2**53  # JSON integers beyond this lose precision in other readers
_KEY_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_RDATA = re.compile(r"^[0-9]{1,3} [0-9]{1,3} [0-9]{1,3} [0-9a-f]+$")
_BLOB = re.compile(r"^(certs|acme)(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,127})+$")
_DNS_NAME = re.compile(r"^([A-Za-z0-9_*-][A-Za-z0-9_.*-]{0,253})?\.$")  # absolute, as served
_WORD = re.compile(r"^[A-Z0-9_]{0,16}$")  # an rcode or an rtype: "NOERROR", "TIMEOUT", "TLSA"
_PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]+$")
_FIELD = re.compile(r"[a-z_][a-z0-9_]{0,63}")


class StateShapeError(ValueError):
    """What is wrong, and where in the document (a JSON-path-like string)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


@dataclass(frozen=True)
class F:
    """One field: its kind (a check, or a nested table / list of tables), whether it must be
    present, and whether null is allowed."""

    kind: Check | Table | ListOf
    required: bool = False
    null: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    fields: Mapping[str, F]


@dataclass(frozen=True)
class ListOf:
    item: Check | Table
    max_items: int = 10_000


# --------------------------------------------------------------------------- checks


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int):
        return f"the number {clip(str(value), 20)}"
    if isinstance(value, float):
        return f"the number {value!r}" if math.isfinite(value) else f"{value!r} (not a number)"
    if isinstance(value, str):
        return f"the string '{clip(value, 40)}'"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return "something else"  # pragma: no cover - json.loads gives only the above


def integer(lo: int = 0, hi: int = MAX_INT) -> Check:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int):
            return "must be a whole number"
        if not lo <= v <= hi:
            return f"must be between {lo} and {hi}"
        return None

    return check


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def text(max_len: int = 4096, pattern: re.Pattern[str] | None = None, what: str = "",
         *, min_len: int = 0) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, str):
            return f"must be {what or 'a string'}"
        if len(v) > max_len:
            return f"must be at most {max_len} characters"
        if len(v) < min_len:
            return f"must be {what or 'a string'}, not empty"
        if pattern is not None and not pattern.match(v):
            return f"must be {what}"
        return None

    return check


def ip_address(v: Any) -> str | None:
    return _ip_address(v) if isinstance(v, str) else "must be an IP address"


@functools.lru_cache(maxsize=1024)  # a state of 1,000 slots names the same few servers
def _ip_address(v: str) -> str | None:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return "must be an IP address"
    return None


def choice(enum: type[StrEnum]) -> Check:
    allowed = [e.value for e in enum]

    def check(v: Any) -> str | None:
        if isinstance(v, str) and v in allowed:
            return None
        return f"must be one of {', '.join(allowed)}"

    return check


def timestamp(v: Any) -> str | None:
    if isinstance(v, str) and len(v) <= 64:
        try:
            parse_time(v)
            return None
        except ValueError:
            pass
    return "must be an ISO 8601 time like 2026-01-01T00:00:00.000+00:00"


def rdata(v: Any) -> str | None:
    return _rdata(v) if isinstance(v, str) and len(v) <= 4096 else _RDATA_WHAT


_RDATA_WHAT = 'must be a TLSA record "U S M HEX" (lowercase hex)'


@functools.lru_cache(maxsize=8192)  # each record is named by the slot and by every answer
def _rdata(v: str) -> str | None:
    if not _RDATA.match(v):
        return _RDATA_WHAT
    try:
        TLSARecord.from_text(v)
    except ValueError:
        return _RDATA_WHAT
    return None


def slot_key(v: Any) -> str | None:
    what = "must be HOST:PORT:ALGORITHM"
    if not isinstance(v, str) or v.count(":") < 2:
        return what
    host, port, alg = v.rsplit(":", 2)
    if normalize_hostname(host) != (host, None) or not port.isascii() or not port.isdigit():
        return what
    if not 1 <= int(port) <= 65535 or alg not in {a.value for a in Algorithm}:
        return what
    return None


KEY_ID = text(128, _KEY_ID, "a key id (letters, digits, '.', '_', '-')")
HEX64 = text(64, _HEX64, "64 lowercase hex digits (a SHA2-256 digest)")
BLOB = text(512, _BLOB, "a file name under certs/ or acme/ of the state directory")
TTL = integer(0, 2**31 - 1)
SHORT = text(1024)
DNS_NAME = text(300, _DNS_NAME, "an absolute DNS name (ending in '.')")
WORD = text(16, _WORD, "a word in capitals (like NOERROR or TLSA)")
LABEL = text(300, _PRINTABLE, "a name without control characters")

# --------------------------------------------------------------------------- the schema

KEY = Table("key", {
    "key_id": F(KEY_ID, required=True),
    "role": F(choice(KeyRole), required=True),
    "spki_sha256": F(HEX64, required=True),
    "created": F(timestamp, required=True),
    "activated": F(timestamp, null=True),
})

RECORD = Table("record", {
    "rdata": F(rdata, required=True),
    "key_id": F(KEY_ID, null=True),
    "state": F(choice(RecordState), required=True),
    "since": F(timestamp, required=True),
    "kind": F(choice(RecordKind)),  # absent in state files written before record kinds
    "label": F(SHORT, null=True),  # issuer records: subject and depth, for people
})

CERT = Table("certificate", {
    "key_id": F(KEY_ID, required=True),
    "serial": F(text(128, re.compile(r"^[0-9a-fA-F:]+$"), "a serial number in hex"),
                required=True),
    "not_after": F(timestamp, required=True),
    "issued_at": F(timestamp, required=True),
    "chain_file": F(BLOB, required=True),
    "renew_at": F(timestamp, null=True),
    "ari_retry_after": F(timestamp, null=True),
    "issuers": F(ListOf(rdata, 64)),  # current+issuer: the chain's 2 1 1 records
    "issuer_names": F(ListOf(SHORT, 64)),
})

ANSWER = Table("answer", {
    "server": F(LABEL, required=True),
    "address": F(ip_address, required=True),
    "ok": F(boolean, required=True),
    "rcode": F(WORD, required=True),
    "records": F(ListOf(rdata, 1000)),
    "ttl": F(TTL, null=True),
    "serial": F(integer(0, 2**32 - 1), null=True),
    "dnssec": F(SHORT, null=True),
    "error": F(SHORT, null=True),
})

def seconds(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        return "must be a number of seconds (0 or more)"
    return None


OBSERVATION = Table("observation", {
    "mono": F(seconds, null=True),
    "run": F(text(32, re.compile(r"^[0-9a-f]*$"), "a run id (hex)"), null=True),
    "owner": F(DNS_NAME, required=True),
    "rtype": F(text(16, re.compile(r"^[A-Z0-9]{1,16}$"), "a record type like TLSA")),
    "at": F(timestamp, required=True),
    "answers": F(ListOf(ANSWER, 1000)),
    "zone": F(DNS_NAME, null=True),
    "negative_ttl": F(TTL, null=True),
    "signed": F(boolean),
    "problems": F(ListOf(SHORT, 100)),
})

PROBE = Table("probe", {
    "address": F(ip_address, required=True),
    "matched": F(boolean, required=True),
    "at": F(timestamp, required=True),
    "error": F(SHORT, null=True),
})

SLOT = Table("slot", {
    "slot": F(slot_key, required=True),
    "phase": F(choice(Phase), required=True),
    "phase_since": F(timestamp, required=True),
    "keys": F(ListOf(KEY, 1000)),
    "records": F(ListOf(RECORD, 1000)),
    "key_serial": F(integer(0, 10**9)),
    "submitted_at": F(timestamp, null=True),
    "agree_since": F(timestamp, null=True),
    "stopped": F(text(), null=True),
    "stopped_config": F(text(64, re.compile(r"^[0-9a-f]*$"), "a hex digest"), null=True),
    "ttl_seen": F(TTL),
    "negative_ttl": F(TTL),
    "owner_was_empty": F(boolean, null=True),
    "installed": F(CERT, null=True),
    "pending": F(CERT, null=True),
    "target_key": F(KEY_ID, null=True),
    "roll_requested": F(boolean),
    "retire_at": F(timestamp, null=True),
    "live_checked": F(boolean),
    "failures": F(integer(0, 10**6)),
    "retry_at": F(timestamp, null=True),
    "last_error": F(text(4096), null=True),
    "observation": F(OBSERVATION, null=True),
    "source_checked": F(timestamp, null=True),  # external certificate sources (certbot, files)
    "probes": F(ListOf(PROBE, 1000)),  # the last post-flight probe, per address (metrics)
    "last_success": F(timestamp, null=True),  # the last run that ended without error
})

# --------------------------------------------------------------------------- validation


def _where(base: str, key: str) -> str:
    if _FIELD.fullmatch(key):
        return f"{base}.{key}" if base else key
    return f"{base}['{clip(key, 40)}']"


def check_table(value: Any, table: Table, where: str) -> None:
    if not isinstance(value, dict):
        raise StateShapeError(where, f"must be an object ({table.name}), got {describe(value)}")
    for name in value:
        if name not in table.fields:
            raise StateShapeError(_where(where, name), f"unknown field of a {table.name}")
    for name, field in table.fields.items():
        if name not in value:
            if field.required:
                raise StateShapeError(_where(where, name), "missing")
            continue
        v, kind = value[name], field.kind
        if v is not None and not isinstance(kind, Table | ListOf):
            # a plain value (most of them): its path is spelled out only when it is wrong
            problem = kind(v)
            if problem is not None:
                raise StateShapeError(_where(where, name), f"{problem}, got {describe(v)}")
            continue
        check_value(v, field, _where(where, name))


def check_value(value: Any, field: F, where: str) -> None:
    if value is None:
        if field.null:
            return
        raise StateShapeError(where, "must not be null")
    kind = field.kind
    if isinstance(kind, Table):
        check_table(value, kind, where)
    elif isinstance(kind, ListOf):
        if not isinstance(value, list):
            raise StateShapeError(where, f"must be a list, got {describe(value)}")
        if len(value) > kind.max_items:
            raise StateShapeError(where, f"has more than {kind.max_items} items")
        item = F(kind.item, required=True)
        for i, v in enumerate(value):
            check_value(v, item, f"{where}[{i}]")
    else:
        problem = kind(value)
        if problem is not None:
            raise StateShapeError(where, f"{problem}, got {describe(value)}")


def check_document(doc: Any) -> None:
    """Raise StateShapeError unless `doc` (parsed JSON) is a state document this rollover
    understands, field by field. The schema number is checked by the caller first."""
    if not isinstance(doc, dict):
        raise StateShapeError("the top level", f"must be an object, got {describe(doc)}")
    for name in doc:
        if name not in ("schema", "slots"):
            raise StateShapeError(_where("", name), "unknown field")
    slots = doc.get("slots", {})
    if not isinstance(slots, dict):
        raise StateShapeError("slots", f"must be an object (slot -> state), got {describe(slots)}")
    for key, slot in slots.items():
        where = f"slots['{clip(key, 80)}']"
        problem = slot_key(key)
        if problem is not None:
            raise StateShapeError(where, f"the slot name {problem}")
        check_table(slot, SLOT, where)
        if slot["slot"] != key:
            raise StateShapeError(f"{where}.slot", "differs from the name the slot is stored under")
