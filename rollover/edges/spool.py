"""The spool: what a deploy hook leaves for the next `rollover run`, under state_dir/spool/.

The hook runs inside certbot and must return at once, whether or not a run holds the lock, so
it takes no lock: it writes one small JSON file per endpoint (atomically; a second renewal
simply replaces the first note) saying "a new lineage version waits". A run, holding the lock,
reads the notes, makes those slots look at their source, and removes each note it acted on
(only if it is still the note it read). Nothing secret is in a note: lineage path, names, time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from rollover import fileio

SPOOL_DIR = "spool"
_NAME = re.compile(r"^[a-z0-9_.-]{1,300}\.json$")


@dataclass(frozen=True)
class Note:
    endpoint: str  # "host:port"
    source: str  # "certbot"
    lineage: str
    domains: tuple[str, ...]
    at: str  # when the hook ran (ISO 8601)
    path: Path  # the note's file
    raw: bytes  # its content, so only this very note is removed

    def describe(self) -> str:
        return (f"{self.source} deploy hook ({self.at}): a new version of {self.lineage} "
                "waits; looking at it now")


def _file(state_dir: Path, endpoint: str) -> Path:
    return state_dir / SPOOL_DIR / (endpoint.replace(":", "_").lower() + ".json")


def write(state_dir: Path, endpoint: str, source: str, lineage: str,
          domains: tuple[str, ...], at: str) -> Path:
    """Leave a note for `endpoint` (state_dir must exist: the caller made it, 0700)."""
    directory = state_dir / SPOOL_DIR
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    path = _file(state_dir, endpoint)
    body = {"endpoint": endpoint, "source": source, "lineage": lineage,
            "domains": list(domains), "at": at}
    fileio.atomic_write(path, json.dumps(body, sort_keys=True).encode() + b"\n", 0o600)
    return path


def read(state_dir: Path) -> dict[str, Note]:
    """Every well-formed note, by endpoint; a file that is not one is left alone."""
    directory = state_dir / SPOOL_DIR
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    notes: dict[str, Note] = {}
    for name in names:
        if not _NAME.match(name) or fileio.is_temp_name(name):
            continue
        path = directory / name
        try:
            raw = path.read_bytes()[:65536]
            body = json.loads(raw)
            note = Note(str(body["endpoint"]), str(body["source"]), str(body["lineage"]),
                        tuple(str(d) for d in body.get("domains", ())), str(body["at"]), path,
                        raw)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half written by a hook that died, or not ours: ignored
        notes[note.endpoint] = note
    return notes


def remove(state_dir: Path, note: Note) -> None:
    """Remove `note`, unless a hook replaced it meanwhile (then the next pick-up sees it)."""
    try:
        if note.path.read_bytes()[:65536] == note.raw:
            os.unlink(note.path)
    except OSError:
        pass
