"""Shared state on S3: the state document in one object written by compare-and-swap, the lock as
a lease object with an expiry, so several rollover hosts (or a CronJob without a disk) can share
one state without a home-made server.

- `lock()`: create `<prefix>lease` with `If-None-Match: *` ({"holder", "expires"}). When it
  exists and has expired (its holder was killed), take it over with `If-Match: <its ETag>`:
  of two hosts racing for an expired lease exactly one wins. Released with `If-Match` on ours.
- `load()`: `<prefix>state.json`, checked by the same validating codec as the local file
  (`state.parse_document`); its ETag is remembered.
- `save()`: first checks the lease is still ours (same ETag: not expired and taken over), then
  `PutObject` with `If-Match: <ETag we loaded or last wrote>` (`If-None-Match: *` when there
  was none). A lost compare-and-swap raises `StateConflict`: the engine re-reads and re-plans.
- Private keys never leave the machine: keys and blobs stay in the local `state_dir`
  (rollover.state.StateStore); only the document (public key digests, records, times) is
  shared. A slot that installs certificates must therefore be run from the host holding its
  keys; DNS-side work (TLSA records, propagation) can run from any host.

Conditional writes checked against moto 5.2.5 in server mode: `If-None-Match: *` and `If-Match`
on PutObject and `If-Match` on DeleteObject are enforced (PreconditionFailed, HTTP 412).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollover.clock import Clock, parse_time
from rollover.errors import LockedError, StateError
from rollover.state.store import StateConflict, StateStore, dump_document, parse_document

__all__ = ["S3Location", "S3StateStore", "StateConflict"]

DEFAULT_LEASE = 600.0  # seconds; renewed at every save once half of it has passed


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str = "rollover/"
    endpoint_url: str | None = None
    region: str = "us-east-1"


class S3StateStore(StateStore):
    """The document and the lock on S3; keys and blobs in the local `state_dir`."""

    def __init__(self, state_dir: Path, where: S3Location, *, clock: Clock,
                 lease_seconds: float = DEFAULT_LEASE, holder: str | None = None,
                 client: Any = None, create: bool = True) -> None:
        super().__init__(state_dir, create=create)
        self.where = where
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self._s3 = client if client is not None else _client(where)
        self._etag: str | None = None  # of the document as we last read or wrote it
        self._lease_etag: str | None = None
        self._lease_expires: float = 0.0

    @property
    def _state_key(self) -> str:
        return self.where.prefix + "state.json"

    @property
    def _lease_key(self) -> str:
        return self.where.prefix + "lease"

    # -- lease ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with super().lock():  # the local keys are ours alone too
            self._acquire()
            try:
                yield
            finally:
                self._release()

    def _lease_body(self) -> tuple[bytes, float]:
        expires = self.clock.now().timestamp() + self.lease_seconds
        at = self.clock.now().fromtimestamp(expires, self.clock.now().tzinfo)
        body = {"holder": self.holder, "expires": at.isoformat()}
        return json.dumps(body).encode(), expires

    def _acquire(self) -> None:
        body, expires = self._lease_body()
        try:
            r = self._s3.put_object(Bucket=self.where.bucket, Key=self._lease_key, Body=body,
                                    IfNoneMatch="*")
        except Exception as exc:
            if not _precondition_failed(exc):
                raise _s3_error("taking the lease", exc) from None
            r = self._take_over_expired(body)
        self._lease_etag, self._lease_expires = r["ETag"], expires

    def _take_over_expired(self, body: bytes) -> Any:
        try:
            got = self._s3.get_object(Bucket=self.where.bucket, Key=self._lease_key)
            held = json.loads(got["Body"].read())
            until = parse_time(held["expires"])
        except Exception as exc:
            raise _s3_error("reading the lease", exc) from None
        if until > self.clock.now():
            raise LockedError(f"another rollover ({held.get('holder', 'unknown')}) holds the "
                              f"lease s3://{self.where.bucket}/{self._lease_key} until "
                              f"{until.isoformat()}; try again later")
        try:
            return self._s3.put_object(Bucket=self.where.bucket, Key=self._lease_key,
                                       Body=body, IfMatch=got["ETag"])
        except Exception as exc:
            if _precondition_failed(exc):
                raise LockedError("another rollover took over the expired lease "
                                  f"s3://{self.where.bucket}/{self._lease_key} just now; "
                                  "try again later") from None
            raise _s3_error("taking over the expired lease", exc) from None

    def _check_lease(self) -> None:
        """Still ours? Renewed once half of it has passed (If-Match: nobody took it over)."""
        try:
            head = self._s3.head_object(Bucket=self.where.bucket, Key=self._lease_key)
        except Exception as exc:
            raise StateConflict(f"the lease is gone ({_code(exc)}): another rollover may be "
                                "running; re-read") from None
        if head["ETag"] != self._lease_etag:
            raise StateConflict("the lease expired and another rollover took it over; re-read")
        if self._lease_expires - self.clock.now().timestamp() < self.lease_seconds / 2:
            body, expires = self._lease_body()
            try:
                r = self._s3.put_object(Bucket=self.where.bucket, Key=self._lease_key,
                                        Body=body, IfMatch=self._lease_etag)
            except Exception as exc:
                raise StateConflict(f"could not renew the lease ({_code(exc)}); re-read") \
                    from None
            self._lease_etag, self._lease_expires = r["ETag"], expires

    def _release(self) -> None:
        if self._lease_etag is None:
            return
        with contextlib.suppress(Exception):  # expired and taken over: not ours to delete
            self._s3.delete_object(Bucket=self.where.bucket, Key=self._lease_key,
                                   IfMatch=self._lease_etag)
        self._lease_etag = None

    # -- the document --------------------------------------------------------------------------

    def load(self) -> dict[str, Any] | None:
        try:
            got = self._s3.get_object(Bucket=self.where.bucket, Key=self._state_key)
            raw = got["Body"].read()
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                self._etag = None
                return None
            raise _s3_error("reading the state", exc) from None
        self._etag = got["ETag"]
        return parse_document(raw, Path(f"s3://{self.where.bucket}/{self._state_key}"))

    def save(self, doc: dict[str, Any]) -> None:
        self._require_lock("save")
        self._check_lease()
        data = dump_document(doc)
        cond = {"IfMatch": self._etag} if self._etag else {"IfNoneMatch": "*"}
        try:
            r = self._s3.put_object(Bucket=self.where.bucket, Key=self._state_key, Body=data,
                                    **cond)
        except Exception as exc:
            if _precondition_failed(exc):
                raise StateConflict(
                    f"s3://{self.where.bucket}/{self._state_key} changed since it was read "
                    "(another rollover wrote it); re-read") from None
            raise _s3_error("writing the state", exc) from None
        self._etag = r["ETag"]


def _client(where: S3Location) -> Any:
    import boto3  # lazily: only S3 users need it

    return boto3.client("s3", endpoint_url=where.endpoint_url, region_name=where.region)


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", type(exc).__name__))
    return type(exc).__name__


def _precondition_failed(exc: Exception) -> bool:
    return _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict")


def _s3_error(what: str, exc: Exception) -> StateError:
    return StateError(f"S3 state: {what} failed ({_code(exc)})")
