"""Shared installer logic: write a slot's key/chain files atomically, keep the previous content as
FILE.previous, run a command (reload), and put the previous files back when the command fails.

Rules (DESIGN: "Certificates and installation"):
- every file is written with temp + fsync + rename + directory fsync (never a half file), with
  exactly `file_mode` from the first byte (and `group` set before the rename);
- a pre-existing target that allows more than `file_mode` is refused (InstallError naming it);
- FILE.previous (0600) is written only when the current content differs from the new one, so a
  re-run after a crash between install and state save keeps the true previous content;
- a failing command (non-zero exit, timeout, missing binary) restores the previous files, runs
  the command again and raises InstallError with one line: command, exit code, last stderr line.

Messages name files and commands, never what a key file holds.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import shlex
import stat
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rollover.dane import tlsa
from rollover.errors import InputError, InstallError
from rollover.fileio import fsync_dir, write_temp
from rollover.model import Algorithm, SlotId, format_file_name

log = logging.getLogger("rollover.hooks")

PREVIOUS_SUFFIX = ".previous"
PREVIOUS_MODE = 0o600

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def previous_path(path: Path) -> Path:
    return path.with_name(path.name + PREVIOUS_SUFFIX)


def file_name_for(pattern: str, slot: SlotId, what: str = "file_name") -> str:
    """`pattern` formatted with host, port and algorithm; a plain file name (no '/')."""
    try:
        return format_file_name(pattern, slot)
    except ValueError as exc:
        raise InstallError(f"{what} pattern: {exc}") from None


def check_key_and_chain(slot: SlotId, key_pem: bytes, chain_pem: bytes) -> None:
    """The key must parse, belong to the slot's algorithm and be the leaf's key."""
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise InstallError(f"{slot}: the chain to install is not PEM certificates") from None
    try:
        key = tlsa.load_private_key_pem(key_pem, f"the private key for {slot}")
    except InputError as exc:
        raise InstallError(str(exc)) from None
    leaf_spki = certs[0].public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if tlsa.spki_der(key) != leaf_spki:
        raise InstallError(f"{slot}: the private key does not belong to the chain's leaf")
    algorithm = tlsa.algorithm_of(key)
    if algorithm != slot.algorithm:
        got = algorithm.value if algorithm else "an unsupported algorithm"
        raise InstallError(f"{slot}: the key is {got}, not {slot.algorithm.value}")


def one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def command_text(command: Sequence[str]) -> str:
    return shlex.join(command)


def run_command(
    command: Sequence[str],
    run: Runner,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """Run `command`; None when it succeeded, else one line saying why not."""
    shown = command_text(command)
    kwargs: dict[str, Any] = {"capture_output": True, "text": True, "timeout": timeout}
    if env is not None:
        kwargs["env"] = dict(env)
    try:
        proc = run(list(command), **kwargs)
    except FileNotFoundError:
        return f"`{shown}` failed: {command[0]}: command not found"
    except PermissionError:
        return f"`{shown}` failed: {command[0]}: permission denied"
    except subprocess.TimeoutExpired:
        return f"`{shown}` timed out after {timeout:g} s"
    except OSError as exc:
        return f"`{shown}` failed: {exc.strerror or exc}"
    if proc.returncode == 0:
        return None
    last = one_line(proc.stderr or "") or one_line(proc.stdout or "")
    code = (
        f"killed by signal {-proc.returncode}" if proc.returncode < 0
        else f"exit {proc.returncode}"
    )
    return f"`{shown}` failed ({code})" + (f": {last}" if last else "")


@dataclass(frozen=True)
class _Undo:
    """How to put one target back as it was before this install."""

    path: Path
    existed: bool  # False: the target did not exist; undo removes it


class FileInstaller:
    """Base of the file-writing installers. Subclasses say which files a slot has
    (`files_for`), what goes in them (`contents`) and which command to run after (`command_for`).
    """

    kind = "files"

    def __init__(
        self,
        directory: Path,
        *,
        file_mode: int = 0o600,
        group: str | None = None,
        run: Runner = subprocess.run,
        timeout: float = 60.0,
    ) -> None:
        self.directory = Path(directory)
        self.file_mode = file_mode
        self.group = group
        self.run = run
        self.timeout = timeout
        if file_mode & ~0o777 or file_mode & 0o007:
            raise InstallError(
                f"file mode {file_mode:04o} for {self.directory} would let anyone read "
                "private keys; use 0600 (or 0640 with a group)"
            )

    # -- to be provided by subclasses -----------------------------------------------------------

    def files_for(self, slot: SlotId) -> list[Path]:
        raise NotImplementedError

    def contents(self, slot: SlotId, key_pem: bytes, chain_pem: bytes) -> list[bytes]:
        raise NotImplementedError

    def command_for(self, slot: SlotId) -> tuple[Sequence[str], Mapping[str, str] | None]:
        """The command to run after writing (empty: none) and its environment (None: ours)."""
        raise NotImplementedError

    def describe_command(self, slot: SlotId) -> str:
        command, _ = self.command_for(slot)
        return f"run {command_text(command)}" if command else "no reload command"

    # -- Installer protocol ---------------------------------------------------------------------

    def describe(self, slot: SlotId) -> str:
        files = ", ".join(str(p) for p in self.files_for(slot))
        return f"write {files}; {self.describe_command(slot)}"

    def install(self, slot: SlotId, key_pem: bytes, chain_pem: bytes) -> None:
        check_key_and_chain(slot, key_pem, chain_pem)
        paths = self.files_for(slot)
        datas = self.contents(slot, key_pem, chain_pem)
        self._check_directory()
        current = [self._read_target(p) for p in paths]  # refuses loose modes before any write
        gid = self._gid()
        undo: list[_Undo] = []
        try:
            for path, data, old in zip(paths, datas, current, strict=True):
                if old is not None and old != data:
                    self._write(previous_path(path), old, PREVIOUS_MODE, None)
                undo.append(_Undo(path, old is not None))
                if old != data:
                    self._write(path, data, self.file_mode, gid)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._undo(undo)
            raise InstallError(f"{slot}: cannot write into {self.directory}: "
                               f"{exc.strerror or exc}") from None
        log.info("%s: wrote %s", slot, ", ".join(str(p) for p in paths))
        failure = self._run_after(slot)
        if failure is None:
            return
        try:
            restored = self._undo(undo)
        except OSError as exc:
            raise InstallError(f"{slot}: {failure}; restoring the previous files failed too: "
                               f"{exc.strerror or exc}") from None
        again = self._run_after(slot)
        what = "restored the previous files" if restored else "no previous files to restore"
        message = f"{slot}: {failure}; {what}"
        if again is not None:
            message += f", but running it again failed too: {again}"
        raise InstallError(message)

    def rollback(self, slot: SlotId) -> None:
        paths = self.files_for(slot)
        self._check_directory()
        gid = self._gid()
        for path in paths:
            prev = previous_path(path)
            try:
                data = prev.read_bytes()
            except FileNotFoundError:
                # Nothing was replaced: the file did not exist before our install, so the
                # state to go back to is "no file". Anything else would leave the rollback
                # stuck forever.
                if path.exists():
                    self._read_target(path)  # refuses a loosened target
                    path.unlink()
                    fsync_dir(path.parent)
                    log.info("%s: removed %s (there was no previous file)", slot, path)
                continue
            except OSError as exc:
                raise InstallError(f"{slot}: cannot read {prev}: {exc.strerror or exc}") from None
            self._read_target(path)  # refuses a loosened target
            if path.exists() and path.read_bytes() == data:
                continue
            try:
                self._write(path, data, self.file_mode, gid)
            except OSError as exc:
                raise InstallError(f"{slot}: cannot restore {path}: "
                                   f"{exc.strerror or exc}") from None
        log.info("%s: restored %s", slot, ", ".join(str(p) for p in paths))
        failure = self._run_after(slot)
        if failure is not None:
            raise InstallError(f"{slot}: restored the previous files, but {failure}")

    # -- helpers --------------------------------------------------------------------------------

    def _check_directory(self) -> None:
        if not self.directory.is_dir():
            raise InstallError(f"installer directory {self.directory} does not exist")

    def _read_target(self, path: Path) -> bytes | None:
        """Current content of a target (None: absent), refusing anything but a private file."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise InstallError(f"cannot stat {path}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(st.st_mode):
            raise InstallError(f"{path} exists and is not a regular file (a symlink?); "
                               "refusing to replace it")
        mode = stat.S_IMODE(st.st_mode)
        if mode & ~self.file_mode:
            raise InstallError(
                f"{path} has mode {mode:04o}, looser than {self.file_mode:04o}; it holds a "
                f"private key: run chmod {self.file_mode:04o} {path}"
            )
        try:
            return path.read_bytes()
        except OSError as exc:
            raise InstallError(f"cannot read {path}: {exc.strerror or exc}") from None

    def _gid(self) -> int | None:
        if self.group is None:
            return None
        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            raise InstallError(f"group {self.group!r} does not exist") from None

    @staticmethod
    def _write(path: Path, data: bytes, mode: int, gid: int | None) -> None:
        tmp = write_temp(path, data, mode)
        try:
            if gid is not None:
                os.chown(tmp, -1, gid)
                os.chmod(tmp, mode)  # chown may clear bits on some systems; set them again
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_dir(path.parent)

    def _undo(self, undo: Sequence[_Undo]) -> bool:
        """Put the targets back as they were; True when anything was restored."""
        restored = False
        gid = self._gid()
        for item in undo:
            prev = previous_path(item.path)
            if item.existed:
                try:
                    data = prev.read_bytes()
                except FileNotFoundError:
                    continue  # the target already held the new content: nothing older known
                if item.path.read_bytes() != data:
                    self._write(item.path, data, self.file_mode, gid)
                restored = True
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(item.path)
                    fsync_dir(item.path.parent)
                restored = True
        return restored

    def _run_after(self, slot: SlotId) -> str | None:
        command, env = self.command_for(slot)
        if not command:
            return None
        return run_command(command, self.run, self.timeout, env)


# -- the config section of a file-writing installer (checked here, not in rollover.config.load) --

DEFAULT_FILE_NAME = "{host}.{algorithm}.pem"
FILE_OPTIONS = ("directory", "file_mode", "group", "file_name")
SEPARATE_FILE_OPTIONS = ("key_name", "chain_name")
_SAMPLE_SLOT = SlotId("mail.example.test", 25, Algorithm.ECDSA_P256)


@dataclass(frozen=True)
class FileOptions:
    """A checked installer section: where the files go, how they are named and protected, and
    the command run after writing them (Postfix: the reload command)."""

    directory: Path
    command: tuple[str, ...] = ()
    file_mode: int = 0o600
    group: str | None = None  # group owner of written files (e.g. Debian-exim)
    # File names in `directory`, formatted with {host}, {port}, {algorithm}. One file holds key
    # then chain (Postfix smtpd_tls_chain_files) unless key_name and chain_name are both given.
    file_name: str = DEFAULT_FILE_NAME
    key_name: str | None = None
    chain_name: str | None = None

    def file_names(self, slot: SlotId) -> tuple[str, ...]:
        """The names this installer writes for `slot` (one, or key and chain)."""
        patterns = (
            (self.key_name, self.chain_name)
            if self.key_name is not None and self.chain_name is not None
            else (self.file_name,)
        )
        return tuple(format_file_name(p, slot) for p in patterns)

    def describe(self, slot: SlotId) -> str:
        files = ", ".join(str(self.directory / n) for n in self.file_names(slot))
        return f"into {files}; then {' '.join(self.command) or 'no reload'}"


def name_pattern(sec: Any, key: str) -> str | None:
    """A file-name pattern, checked on a sample slot (collisions between slots are checked per
    endpoint by the config loader, where they happen)."""
    pattern: str | None = sec.get_str(key)
    if pattern is None:
        return None
    try:
        format_file_name(pattern, _SAMPLE_SLOT)
    except ValueError as exc:
        sec.bad(key, str(exc))
        return None
    return pattern


def parse_file_options(
    sec: Any, base: Path, *, command_key: str, default_command: tuple[str, ...] = (),
    command_required: bool = False, separate: bool = False,
) -> FileOptions | None:
    """Check a file-writing installer's section (a confcheck.Section)."""
    directory = sec.get_path("directory", base, required=True, must_exist="dir")
    command = sec.get_command(command_key)
    if command_required and not command:
        if not sec.has(command_key):
            sec.missing(command_key)
        elif command == ():
            sec.bad(command_key, "must not be empty")
    file_mode = sec.get_mode("file_mode", 0o600)
    group = sec.get_str("group")
    if file_mode & 0o007:
        sec.bad("file_mode", f"{file_mode:04o} lets everyone read the private key; use 0600 "
                "(or 0640 with group)")
    elif file_mode & 0o070 and group is None:
        sec.warn("file_mode", f"{file_mode:04o} gives the group access to the private key")
    file_name = name_pattern(sec, "file_name") or DEFAULT_FILE_NAME
    key_name = chain_name = None
    if separate:
        key_name = name_pattern(sec, "key_name")
        chain_name = name_pattern(sec, "chain_name")
        if sec.has("key_name") != sec.has("chain_name"):
            given, other = (
                ("key_name", "chain_name") if sec.has("key_name") else ("chain_name", "key_name")
            )
            sec.bad(given, f"needs {other} as well (separate key and chain files)")
        elif key_name is not None and key_name == chain_name:
            sec.bad("chain_name", "must differ from key_name")
    if directory is None:
        return None
    return FileOptions(directory=directory, command=command or default_command,
                       file_mode=file_mode, group=group, file_name=file_name,
                       key_name=key_name, chain_name=chain_name)
