"""Small, careful file primitives: atomic writes, private-file checks, one-line secrets.

Ground floor: imports nothing of ours but errors. Messages name the file and the problem and
never contain what a secret file holds.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from rollover.errors import ConfigError, RolloverError, StateError

# Temp files are named ".<final name>.tmp-<random>" next to the final file, so a crash leaves
# something recognisable that a later load (holding the lock) may remove.
TEMP_MARK = ".tmp-"


def temp_name_for(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_MARK}{secrets.token_hex(6)}")


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and TEMP_MARK in name


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp(path: Path, data: bytes, mode: int = 0o600) -> Path:
    """Write `data` to a new temp file next to `path` (O_EXCL, `mode` from creation, fsynced).

    The file is created with at most `mode` (the umask can only take bits away) and then set to
    exactly `mode`, so it is never looser than asked for, not even for an instant.
    """
    tmp = temp_name_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    return tmp


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data`: temp file + fsync + rename + fsync of the directory.

    Readers see the old content or the new one, never a mix, even after kill -9 or power loss.
    """
    path = Path(path)
    tmp = write_temp(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(path.parent)


def create_exclusive(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Create `path` with `data` atomically, never replacing an existing file.

    Returns False (and writes nothing) when `path` already exists. The content is complete the
    moment the name appears: written to a temp file first, then hard-linked (link fails on an
    existing name, like O_EXCL).
    """
    path = Path(path)
    tmp = write_temp(path, data, mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        _unlink_quietly(tmp)
    fsync_dir(path.parent)
    return True


def remove_temp_files(directory: Path) -> list[Path]:
    """Delete leftover temp files of interrupted writes in `directory` (not recursive).

    Only call this while holding the lock that every writer holds.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
            _unlink_quietly(Path(entry.path))
            removed.append(Path(entry.path))
    if removed:
        fsync_dir(directory)
    return removed


def loose_bits(st_mode: int) -> int:
    """The permission bits that give group or other any access."""
    return stat.S_IMODE(st_mode) & 0o077


def check_private(path: Path, what: str, error: type[RolloverError] = StateError) -> os.stat_result:
    """Raise `error` unless `path` exists and gives group/other no access at all.

    `what` says what the file is ("TSIG secret file", "key file"); the message names the path
    and the fix, never the content.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise error(f"{what} {path}: cannot stat: {exc.strerror}") from None
    bits = loose_bits(st.st_mode)
    if bits:
        mode = stat.S_IMODE(st.st_mode)
        raise error(
            f"{what} {path} is accessible by group/other (mode {mode:04o}); "
            f"run: chmod go-rwx {path}"
        )
    return st


def read_secret(path: Path, what: str, error: type[RolloverError] = ConfigError) -> str:
    """Read a one-line secret (e.g. a base64 TSIG secret) from a private file.

    The file must be a regular file, private (see check_private), UTF-8, and hold exactly one
    non-empty line (a trailing newline is fine). Errors never contain any of the content.
    """
    path = Path(path)
    st = check_private(path, what, error)
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path} is not a regular file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"{what} {path}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not UTF-8 text") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise error(f"{what} {path} is empty")
    if len(lines) > 1:
        raise error(f"{what} {path} must hold the secret on one line (found {len(lines)} lines)")
    return lines[0]


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
