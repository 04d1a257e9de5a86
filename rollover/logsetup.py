"""Where log lines go: stderr as text or JSON (`--log-format`), syslog facility mail
(`--syslog`), and `--quiet` for cron (stderr gets errors only; syslog still gets everything at
the chosen level). Advice that repeats per endpoint is folded into one line per advice
(`aggregate`)."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import stat
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

FORMATS = ("text", "json")
SYSLOG_SOCKET = "/dev/log"
_WHERE = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<path>[^:\s]+): (?P<msg>.+)$")
_INDEX = re.compile(r"\[\d+\]")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, from the record), level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        return json.dumps({"time": when, "level": record.levelname.lower(),
                           "logger": record.name, "message": record.getMessage()},
                          ensure_ascii=False)


def configure(verbosity: int = 0, fmt: str = "text", syslog: bool = False,
              quiet: bool = False, stream: TextIO | None = None) -> None:
    stream = sys.stderr if stream is None else stream
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 \
        else logging.DEBUG
    stderr = logging.StreamHandler(stream)
    stderr.setFormatter(JsonFormatter() if fmt == "json"
                        else logging.Formatter("rollover: %(message)s"))
    if quiet:
        stderr.setLevel(logging.ERROR)
    handlers: list[logging.Handler] = [stderr]
    if syslog:
        try:
            # SysLogHandler connects lazily and drops lines silently: look at the socket first
            if not stat.S_ISSOCK(os.stat(SYSLOG_SOCKET).st_mode):
                raise OSError(f"{SYSLOG_SOCKET} is not a socket")
            sys_handler = logging.handlers.SysLogHandler(
                address=SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_MAIL)
        except OSError as exc:
            # no syslog daemon: say so once on stderr and keep going without it
            print(f"rollover: warning: --syslog: cannot open {SYSLOG_SOCKET}: "
                  f"{exc.strerror or exc}", file=stream)
        else:
            sys_handler.setFormatter(logging.Formatter("rollover: %(message)s"))
            handlers.append(sys_handler)
    logging.basicConfig(level=level, handlers=handlers, force=True)


def aggregate(lines: Sequence[str]) -> list[str]:
    """"FILE:LINE: key.path: advice" lines: the same advice on the same key of many list items
    (endpoints[0].ttl, endpoints[1].ttl, ...) becomes one line naming the first and the count."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    order: list[tuple[str, str, str] | str] = []
    for line in lines:
        m = _WHERE.match(line)
        if m is None:
            order.append(line)
            continue
        key = (m["file"], _INDEX.sub("[*]", m["path"]), m["msg"])
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(m["line"])
    out: list[str] = []
    for item in order:
        if isinstance(item, str):
            out.append(item)
            continue
        file, path, msg = item
        found = groups[item]
        if len(found) == 1:
            out.append(next(ln for ln in lines if ln.startswith(f"{file}:{found[0]}: ")
                            and ln.endswith(msg)))
        else:
            out.append(f"{file}:{found[0]}: {path}: {msg} (and {len(found) - 1} more, lines "
                       f"{', '.join(found[1:4])}{', ...' if len(found) > 4 else ''})")
    return out
