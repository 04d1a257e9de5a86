"""Watch a directory for files renamed into it (atomic writes), from outside the process that
writes them: Linux inotify through ctypes (the standard library has no binding)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
from pathlib import Path

IN_MOVED_TO = 0x00000080
IN_CLOEXEC = 0o2000000
IN_NONBLOCK = 0o4000
_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class RenameWatch:
    """Counts IN_MOVED_TO events of names matching `suffix` in `directory`."""

    def __init__(self, directory: Path, suffix: str = ".json") -> None:
        self.fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(directory), IN_MOVED_TO)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
        self.suffix = suffix
        self.count = 0

    def wait(self, timeout: float) -> int:
        """Block up to `timeout` s for events; return how many matching renames arrived."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return 0
        data = os.read(self.fd, 65536)
        seen, off = 0, 0
        while off < len(data):
            _wd, _mask, _cookie, length = _EVENT.unpack_from(data, off)
            name = data[off + _EVENT.size: off + _EVENT.size + length].rstrip(b"\0")
            off += _EVENT.size + length
            if name.decode(errors="replace").endswith(self.suffix):
                seen += 1
        self.count += seen
        return seen

    def close(self) -> None:
        os.close(self.fd)
