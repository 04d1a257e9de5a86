"""An example third-party provider: RRsets kept in one JSON file (a stand-in for "your DNS API").

    providers:
      mine:
        type: jsonfile
        path: /var/lib/dns/records.json

A provider is `read` + `submit` + what it supports; rollover's ProviderBase does the rest (rdata
canonical form, the ownership and never-empty checks, skipping no-ops, re-reading to confirm).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollover.errors import ProviderError
from rollover.providers.base import ProviderBase, Submission, Supports, Target


@dataclass(frozen=True)
class JsonFileOptions:
    path: Path


class JsonFileProvider(ProviderBase):
    TYPE = "jsonfile"
    SUPPORTS = Supports(rtypes=frozenset({"TLSA", "TXT"}), cas=False, needs_wait=False)
    OPTIONS = ("path",)

    @classmethod
    def parse_options(cls, sec: Any, ctx: Any) -> JsonFileOptions | None:
        path = sec.get_path("path", ctx.base, required=True)  # errors are FILE:LINE: ...
        return JsonFileOptions(path) if path is not None else None

    @classmethod
    def from_config(cls, name: str, options: JsonFileOptions) -> JsonFileProvider:
        return cls(name, options.path)

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path

    def _load(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ProviderError(f"cannot read {self.path}: {exc}") from None

    def _read(self, t: Target) -> tuple[int | None, Iterable[str]]:
        entry = self._load().get(f"{t.owner} {t.rtype}")
        return (entry["ttl"], entry["rdatas"]) if entry else (None, ())

    def _submit(self, sub: Submission) -> None:
        data = self._load()
        key = f"{sub.target.owner} {sub.target.rtype}"
        if sub.after:
            data[key] = {"ttl": sub.ttl, "rdatas": sorted(sub.after)}
        else:
            data.pop(key, None)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)
