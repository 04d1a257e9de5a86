"""The state store: one JSON document, private keys and a few blobs under `state_dir`, one lock.

Layout (all owned by the user running rollover, nothing readable by group/other):

    state_dir/           0700
      lock               flock()ed while a run mutates anything; holds the holder's pid
      state.json         the document, {"schema": SCHEMA_VERSION, ...}, replaced atomically
      keys/              0700; <key_id>.pem, 0600, created with O_EXCL semantics, never replaced
      keys/archive/      0700; retired keys
      certs/, acme/      0700; blobs written atomically (write_file / read_file)

Every mutation requires the lock. Reads (plan, status) do not take it and never change anything:
a missing state_dir simply reads as "no state yet" when the store is opened with create=False.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from rollover import fileio
from rollover.display import clip, shown_path
from rollover.errors import LockedError, StateError
from rollover.state import codec as state_codec

SCHEMA_VERSION = 1
STATE_FILE = "state.json"
LOCK_FILE = "lock"
KEYS_DIR = "keys"
ARCHIVE_DIR = "keys/archive"
BLOB_DIRS = ("certs", "acme")

_KEY_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
_PART = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


class StateConflict(StateError):
    """A shared store was written by someone else since we read it (compare-and-swap lost):
    the engine re-reads the state and plans again."""


class StateBackend(Protocol):
    """What the engine needs from a state store (a shared S3/DynamoDB one can come later)."""

    def lock(self) -> contextlib.AbstractContextManager[None]: ...

    def load(self) -> dict[str, Any] | None: ...

    def save(self, doc: dict[str, Any]) -> None: ...

    def write_key(self, key_id: str, pem: bytes) -> None: ...

    def read_key(self, key_id: str) -> bytes: ...

    def has_key(self, key_id: str) -> bool: ...

    def delete_key(self, key_id: str) -> bool: ...

    def archive_key(self, key_id: str) -> str: ...

    def list_keys(self) -> list[str]: ...

    def write_file(self, rel: str, data: bytes, mode: int = 0o600) -> None: ...

    def read_file(self, rel: str) -> bytes | None: ...


class StateStore:
    """State on the local file system under `state_dir`.

    create=True (run, certbot-hook): make state_dir and keys/ (0700) when missing.
    create=False (plan, status): never create anything; a missing state_dir is "no state yet".
    Either way an existing state_dir is checked at once (owner, modes of dirs and key files).
    """

    def __init__(self, state_dir: Path, *, create: bool = True) -> None:
        self.state_dir = Path(state_dir)
        self.state_file = self.state_dir / STATE_FILE
        self.keys_dir = self.state_dir / KEYS_DIR
        self._lock_fd: int | None = None
        if not str(state_dir).strip():
            raise StateError("the state directory name is empty")
        if create:
            self._make_dir(self.state_dir)
        if _exists(self.state_dir):
            self.check()
        if create:
            self._make_dir(self.keys_dir)

    # -- checks ------------------------------------------------------------------------------

    def check(self) -> None:
        """Refuse a state dir owned by someone else, or anything private open to group/other."""
        st = self._stat_dir(self.state_dir, "state directory")
        if st.st_uid != os.geteuid():
            raise StateError(
                f"state directory {self.state_dir} is owned by uid {st.st_uid}, not by the user "
                f"running rollover (uid {os.geteuid()})"
            )
        self._check_private_dir(self.state_dir, st, "state directory")
        for rel in (KEYS_DIR, ARCHIVE_DIR):
            d = self.state_dir / rel
            if d.exists():
                self._check_private_dir(d, self._stat_dir(d, "key directory"), "key directory")
        for directory in (self.keys_dir, self.state_dir / ARCHIVE_DIR):
            for entry in _scandir(directory):
                # every *.pem, links included: a link to a 0644 file is a loose key
                if entry.name.endswith(".pem") and not fileio.is_temp_name(entry.name):
                    fileio.check_private(Path(entry.path), "key file", StateError)
        if os.path.lexists(self.state_file):
            fileio.check_private(self.state_file, "state file", StateError)

    def _stat_dir(self, path: Path, what: str) -> os.stat_result:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise StateError(f"{what} {shown_path(path)}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise StateError(f"{what} {shown_path(path)} is not a directory")
        return st

    def _check_private_dir(self, path: Path, st: os.stat_result, what: str) -> None:
        if fileio.loose_bits(st.st_mode):
            raise StateError(
                f"{what} {path} is accessible by group/other (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); run: chmod 700 {path}"
            )

    def _make_dir(self, path: Path) -> None:
        try:
            path.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            return
        except OSError as exc:
            raise StateError(f"cannot create {shown_path(path)}: {exc.strerror}") from None
        os.chmod(path, 0o700)  # the umask may have taken bits we want: exactly 0700
        fileio.fsync_dir(path.parent)

    # -- lock --------------------------------------------------------------------------------

    @property
    def locked(self) -> bool:
        return self._lock_fd is not None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive, non-blocking: LockedError (naming the holder's pid) when someone has it."""
        if self._lock_fd is not None:
            raise StateError(f"{self.state_dir / LOCK_FILE}: already locked by this process")
        self._make_dir(self.state_dir)
        self.check()
        self._make_dir(self.keys_dir)
        path = self.state_dir / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"pid {holder}" if holder else "pid unknown"
                raise LockedError(
                    f"another rollover ({who}) holds {path}; try again later"
                ) from None
            raise StateError(f"cannot lock {path}: {exc.strerror}") from None
        try:
            with contextlib.suppress(OSError):  # the pid only informs; a full disk says so later
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._lock_fd = fd
            self._repair()
            yield
        finally:
            self._lock_fd = None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _require_lock(self, what: str) -> None:
        if self._lock_fd is None:
            raise AssertionError(f"StateStore.{what}() called without holding the lock")

    def _repair(self) -> None:
        """Remove temp files left by a writer that died mid-write (we hold the lock)."""
        for rel in ("", KEYS_DIR, ARCHIVE_DIR, *BLOB_DIRS):
            fileio.remove_temp_files(self.state_dir / rel if rel else self.state_dir)

    # -- the document ------------------------------------------------------------------------

    def load(self) -> dict[str, Any] | None:
        """The state document, or None when there is none yet. Never repairs by replacing."""
        if self._lock_fd is not None:
            self._repair()
        try:
            os.lstat(self.state_file)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {self.state_file}: {exc.strerror}") from None
        # rollover writes it 0600 by rename: a link, a FIFO, a huge or loose file is not ours
        raw = fileio.read_limited(self.state_file, "state file", fileio.STATE_LIMIT,
                                  missing=StateError, bad=StateError, follow_symlinks=False,
                                  private=True)
        return parse_document(raw, self.state_file)

    def save(self, doc: dict[str, Any]) -> None:
        """Replace the document atomically (temp + fsync + rename + fsync dir). Lock required."""
        self._require_lock("save")
        data = dump_document(doc)
        try:
            fileio.atomic_write(self.state_file, data, 0o600)
        except OSError as exc:
            # disk full, read-only: the old document stays as it was (the temp file is gone)
            raise StateError(f"cannot write {shown_path(self.state_file)}: {exc.strerror}; "
                             "the previous state is kept") from None

    # -- keys --------------------------------------------------------------------------------

    def key_path(self, key_id: str) -> Path:
        if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
            raise StateError(f"bad key id {key_id!r}: use letters, digits, '.', '_', '-'")
        return self.keys_dir / f"{key_id}.pem"

    def write_key(self, key_id: str, pem: bytes) -> None:
        """Store a new private key (0600). An existing key is never overwritten."""
        self._require_lock("write_key")
        path = self.key_path(key_id)
        try:
            created = fileio.create_exclusive(path, pem, 0o600)
        except OSError as exc:
            raise StateError(f"cannot write key {key_id} ({shown_path(path)}): "
                             f"{exc.strerror}") from None
        if not created:
            raise StateError(f"key {key_id} already exists ({path}); refusing to overwrite it")

    def read_key(self, key_id: str) -> bytes:
        path = self.key_path(key_id)
        return _read_private(path, f"key {key_id}")

    def has_key(self, key_id: str) -> bool:
        return self.key_path(key_id).is_file()

    def delete_key(self, key_id: str) -> bool:
        """Remove a key for good; False when it was not there."""
        self._require_lock("delete_key")
        path = self.key_path(key_id)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        fileio.fsync_dir(path.parent)
        return True

    def archive_key(self, key_id: str) -> str:
        """Move a key to keys/archive/ (0600); returns the archived name (suffixed if taken)."""
        self._require_lock("archive_key")
        src = self.key_path(key_id)
        archive = self.state_dir / ARCHIVE_DIR
        self._make_dir(archive)
        for n in range(1000):
            name = key_id if n == 0 else f"{key_id}.{n}"
            dst = archive / f"{name}.pem"
            try:
                os.link(src, dst)
            except FileExistsError:
                continue
            except FileNotFoundError:
                raise StateError(f"key {key_id} does not exist ({src})") from None
            os.chmod(dst, 0o600)
            os.unlink(src)
            fileio.fsync_dir(archive)
            fileio.fsync_dir(self.keys_dir)
            return name
        raise StateError(f"cannot archive key {key_id}: too many archived copies")

    def list_keys(self) -> list[str]:
        return sorted(
            e.name[: -len(".pem")]
            for e in _scandir(self.keys_dir)
            if e.name.endswith(".pem")
            and not fileio.is_temp_name(e.name)
            and e.is_file(follow_symlinks=False)
        )

    def list_archived_keys(self) -> list[str]:
        return sorted(
            e.name[: -len(".pem")]
            for e in _scandir(self.state_dir / ARCHIVE_DIR)
            if e.name.endswith(".pem") and not fileio.is_temp_name(e.name)
        )

    # -- blobs -------------------------------------------------------------------------------

    def blob_path(self, rel: str) -> Path:
        parts = rel.split("/")
        if len(parts) < 2 or parts[0] not in BLOB_DIRS or not all(_PART.match(p) for p in parts):
            raise StateError(
                f"bad state file name {rel!r}: must be under {' or '.join(BLOB_DIRS)}/ and use "
                "letters, digits, '.', '_', '-'"
            )
        return self.state_dir.joinpath(*parts)

    def write_file(self, rel: str, data: bytes, mode: int = 0o600) -> None:
        """Replace state_dir/rel atomically (rel under certs/ or acme/). Lock required."""
        self._require_lock("write_file")
        path = self.blob_path(rel)
        for parent in reversed(path.relative_to(self.state_dir).parents[:-1]):
            self._make_dir(self.state_dir / parent)
        fileio.atomic_write(path, data, mode)

    def read_file(self, rel: str) -> bytes | None:
        """Contents of state_dir/rel, or None when it does not exist."""
        path = self.blob_path(rel)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror}") from None


# --------------------------------------------------------------------------------------------


_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, allow_nan=False)


def dump_document(doc: dict[str, Any]) -> bytes:
    """Serialise with the schema version; refuse anything that looks like a private key.
    One slot per line: json's C encoder does no indenting, and the pure-Python one that
    does takes 5 x longer for a state of 1,000 slots."""
    out = dict(doc)
    out["schema"] = SCHEMA_VERSION
    slots = out.pop("slots", None)
    text = _ENCODER.encode(out)
    if isinstance(slots, dict):
        lines = [f"{_ENCODER.encode(k)}: {_ENCODER.encode(slots[k])}" for k in sorted(slots)]
        body = "\n" + ",\n".join(lines) + "\n" if lines else ""
        text = text[:-1] + ', "slots": {' + body + "}}"
    elif slots is not None:
        text = text[:-1] + ', "slots": ' + _ENCODER.encode(slots) + "}"
    text += "\n"
    if "PRIVATE KEY-----" in text:
        raise StateError("refusing to write a private key into state.json (keys go in keys/)")
    return text.encode("utf-8")


def parse_document(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StateError(
            f"{path} is corrupt: not UTF-8 at byte offset {exc.start}; it was left as it is "
            "(move it away to start from scratch)"
        ) from None
    try:
        doc = json.loads(text, parse_constant=_refuse_constant, parse_int=_parse_int)
    except RecursionError:  # the C decoder's answer to [[[[...]]]] 100,000 deep
        raise StateError(
            f"{path} is corrupt: nested too deeply to be a state file; {LEFT_AS_IS}"
        ) from None
    except _ConstantError as exc:
        raise StateError(f"{path} is corrupt: {exc}, which is not a state file's; {LEFT_AS_IS}") \
            from None
    except json.JSONDecodeError as exc:
        offset = len(text[: exc.pos].encode("utf-8"))
        raise StateError(
            f"{path} is corrupt: {exc.msg} at byte offset {offset} (line {exc.lineno}); it was "
            "left as it is (move it away to start from scratch)"
        ) from None
    if not isinstance(doc, dict):
        raise StateError(f"{path} is corrupt: the top level is not a JSON object")
    schema = doc.get("schema")
    if isinstance(schema, bool) or not isinstance(schema, int):
        raise StateError(f"{path} is corrupt: no integer 'schema' field")
    if schema > SCHEMA_VERSION:
        raise StateError(
            f"{path} was written by a newer rollover (schema {clip(str(schema), 20)}; this "
            "version knows up to "
            f"{SCHEMA_VERSION}); upgrade rollover"
        )
    if schema < 1:
        raise StateError(f"{path} is corrupt: unknown schema {clip(str(schema), 20)}")
    try:
        state_codec.check_document(doc)
    except state_codec.StateShapeError as exc:
        raise StateError(f"{path} is not a valid state file: {exc}; {LEFT_AS_IS}") from None
    return doc


LEFT_AS_IS = (
    "it was left as it is (restore it from a backup, or move it away to start from scratch)"
)


class _ConstantError(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    """json.loads accepts NaN and Infinity, which are not JSON: a file holding them is not ours."""
    raise _ConstantError(f"the value {name}")


def _read_private(path: Path, what: str) -> bytes:
    """A private key file: a regular 0600 file (checked on the opened descriptor), no link."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        raise StateError(f"{what} is missing ({path})") from None
    except OSError as exc:
        raise StateError(f"cannot read {what} ({path}): {exc.strerror}") from None
    data = fileio.read_limited(path, what, fileio.SECRET_LIMIT, missing=StateError,
                               bad=StateError, follow_symlinks=False, private=True)
    if not data.strip():
        raise StateError(f"{what} ({path}) is empty")
    return data


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > 20:  # int() refuses > 4300 digits with a Python message
        raise _ConstantError(f"a number with {len(digits)} digits")
    return int(digits)


def _exists(path: Path) -> bool:
    """Like Path.exists(), but a name the system refuses (too long, a NUL byte) is an error
    that names it, not a traceback."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise StateError(f"state directory {shown_path(path)}: {exc.strerror}") from None
    except ValueError:
        raise StateError("the state directory name holds a NUL byte") from None
    return True


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _scandir(directory: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(directory))
    except FileNotFoundError:
        return []
