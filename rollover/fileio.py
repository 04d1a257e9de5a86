"""Small, careful file primitives: atomic writes, private-file checks, one-line secrets.

Ground floor: imports nothing of ours but errors. Messages name the file and the problem and
never contain what a secret file holds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

from rollover.display import shown_path
from rollover.errors import ConfigError, InputError, MissingInputError, RolloverError, StateError

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


# Sane maximum sizes of what rollover reads; a bigger file is refused, never read whole.
CONFIG_LIMIT = 1 << 20  # 1 MiB
CERT_LIMIT = 1 << 20  # a certificate, key or CA bundle
STATE_LIMIT = 16 << 20  # state.json
SECRET_LIMIT = 64 << 10  # a one-line secret or a private key


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"


def _kind(st_mode: int) -> str:
    if stat.S_ISDIR(st_mode):
        return "a directory"
    if stat.S_ISFIFO(st_mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(st_mode):
        return "a socket"
    if stat.S_ISCHR(st_mode) or stat.S_ISBLK(st_mode):
        return "a device"
    return "not a regular file"


def _open_error(exc: OSError, what: str, shown: str, missing: type[RolloverError],
                bad: type[RolloverError]) -> RolloverError:
    if exc.errno == errno.ENOENT:
        return missing(f"{what} {shown} does not exist")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return missing(f"{what} {shown}: permission denied")
    if exc.errno == errno.ELOOP:
        return bad(
            f"{what} {shown} is a symbolic link; give the file itself (rollover does not "
            "follow links for secret and key files)"
        )
    if exc.errno == errno.ENAMETOOLONG:
        return bad(f"{what} {shown}: the file name is longer than the system allows")
    if exc.errno == errno.ENOTDIR:
        return missing(f"{what} {shown} does not exist (a part of the path is not a directory)")
    return missing(f"{what} {shown}: cannot open: {exc.strerror or 'error'}")


def read_limited(
    path: Path | str,
    what: str,
    limit: int,
    *,
    missing: type[RolloverError] = MissingInputError,
    bad: type[RolloverError] = InputError,
    follow_symlinks: bool = True,
    private: bool = False,
) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, read without ever blocking.

    A FIFO, device, socket or directory is refused before it is opened (and again on the
    opened descriptor), so neither a pipe without a writer nor /dev/zero can hang or exhaust
    memory. With follow_symlinks=False a symbolic link is refused; with private=True the opened
    file itself must give group/other no access. Messages name the file, never its content.
    """
    shown = shown_path(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        st = os.stat(path, follow_symlinks=follow_symlinks)
        if not follow_symlinks and stat.S_ISLNK(st.st_mode):
            raise OSError(errno.ELOOP, "symbolic link")
        if not stat.S_ISREG(st.st_mode):
            error = missing if stat.S_ISDIR(st.st_mode) else bad
            raise error(f"{what} {shown} is {_kind(st.st_mode)}, not a regular file")
        fd = os.open(path, flags)
    except OSError as exc:
        raise _open_error(exc, what, shown, missing, bad) from None
    except ValueError:  # a NUL byte in the name
        raise bad(f"{what} {shown}: the file name holds a NUL byte") from None
    try:
        st = os.fstat(fd)  # the file we opened, not whatever the name pointed at before
        if not stat.S_ISREG(st.st_mode):
            raise bad(f"{what} {shown} is {_kind(st.st_mode)}, not a regular file")
        if private:
            _refuse_loose(st, what, shown, bad)
        if st.st_size > limit:
            raise bad(f"{what} {shown} is larger than {_size(limit)}, the most rollover reads")
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            try:
                chunk = os.read(fd, min(65536, limit + 1 - total))
            except OSError as exc:
                raise missing(f"{what} {shown}: cannot read: {exc.strerror or 'error'}") from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise bad(f"{what} {shown} is larger than {_size(limit)}, the most rollover reads")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _refuse_loose(st: os.stat_result, what: str, shown: str, error: type[RolloverError]) -> None:
    bits = loose_bits(st.st_mode)
    if bits:
        mode = stat.S_IMODE(st.st_mode)
        raise error(
            f"{what} {shown} is accessible by group/other (mode {mode:04o}); "
            f"run: chmod go-rwx {shown}"
        )


def check_private(path: Path, what: str, error: type[RolloverError] = StateError) -> os.stat_result:
    """Raise `error` unless `path` is a regular file (not a symbolic link) that gives group and
    other no access at all.

    A link is refused outright: its target's mode is not what protects the link, and advice to
    chmod the link would change the target. `what` says what the file is ("TSIG secret file",
    "key file"); the message names the path and the fix, never the content.
    """
    shown = shown_path(path)
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise _open_error(exc, what, shown, error, error) from None
    except ValueError:
        raise error(f"{what} {shown}: the file name holds a NUL byte") from None
    if stat.S_ISLNK(st.st_mode):
        raise _open_error(OSError(errno.ELOOP, "link"), what, shown, error, error)
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {shown} is {_kind(st.st_mode)}, not a regular file")
    _refuse_loose(st, what, shown, error)
    return st


def read_secret(path: Path, what: str, error: type[RolloverError] = ConfigError) -> str:
    """Read a one-line secret (e.g. a base64 TSIG secret) from a private file.

    The file must be a regular file (no symbolic link), private (checked on the opened file),
    UTF-8, and hold exactly one non-empty line (a trailing newline is fine). Errors never
    contain any of the content.
    """
    path = Path(path)
    raw = read_limited(path, what, SECRET_LIMIT, missing=error, bad=error,
                       follow_symlinks=False, private=True)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} {shown_path(path)} is not UTF-8 text") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise error(f"{what} {shown_path(path)} is empty")
    if len(lines) > 1:
        raise error(
            f"{what} {shown_path(path)} must hold the secret on one line "
            f"(found {len(lines)} lines)"
        )
    return lines[0]


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
