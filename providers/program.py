"""A program the operator names does the DNS work (`type: exec`).

    providers:
      inhouse:
        type: exec
        command: [/usr/local/lib/rollover/dns-api, --zone-group, mail]
        timeout: 30              # seconds per call
        supports: [TLSA, TXT]    # what the program can write (TXT: ACME DNS-01)
        compare_and_swap: false  # true: the program refuses an apply whose "before" is stale

Every call runs the program once, with one JSON request on stdin, and reads one JSON answer from
stdout (stderr goes to the error message when it fails; nothing it prints is logged):

    {"version": 1, "action": "read", "zone": "example.nl.",
     "owner": "_25._tcp.mail.example.nl.", "rtype": "TLSA"}
    -> {"ttl": 3600, "rdatas": ["3 1 1 ab12..."]}        (absent RRset: ttl null, rdatas [])

    {"version": 1, "action": "apply", "zone": ..., "owner": ..., "rtype": ..., "ttl": 3600,
     "before": {"ttl": 3600, "rdatas": [...]}, "after": [...], "add": [...], "remove": [...]}
    -> {"ok": true}                                       (or {"error": "why not"})

`after` is the whole RRset to leave (empty: delete it); `add`/`remove` say the same as a
difference. Rdata is in presentation format, TLSA as "U S M hex". A program that ends with a
non-zero exit, does not answer within `timeout`, or answers something that is not the JSON
above makes the call fail with a ProviderError naming the program and what went wrong.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rollover.config.check import Section
from rollover.config.registry import ParseContext
from rollover.errors import ProviderError

from .base import ProviderBase, Submission, Supports, Target

PROTOCOL_VERSION = 1
MAX_ANSWER = 1 << 20  # a program answering more than 1 MiB is not answering this protocol


@dataclass(frozen=True)
class ExecOptions:
    command: tuple[str, ...]
    timeout: float = 30.0
    supports: frozenset[str] = frozenset({"TLSA", "TXT"})
    compare_and_swap: bool = False


class ExecProvider(ProviderBase):
    TYPE = "exec"
    OPTIONS = ("command", "timeout", "supports", "compare_and_swap")

    @classmethod
    def parse_options(cls, sec: Section, ctx: ParseContext) -> ExecOptions | None:
        command = sec.get_command("command")
        if command is None:
            sec.missing("command")
        elif not command:
            sec.bad("command", "must not be empty")
        timeout = sec.get_float("timeout", 30.0, hi=3600)
        supports: set[str] = set()
        if sec.has("supports"):
            for path, node in sec.sequence("supports", allow_scalar=True):
                ok, value = sec.p.construct(node, path)
                if ok and isinstance(value, str) and value.strip().upper() in ("TLSA", "TXT"):
                    supports.add(value.strip().upper())
                elif ok:
                    sec.p.error(node.start_mark.line + 1, path,
                                "must be TLSA or TXT (the record types rollover writes)")
        cas = sec.get_bool("compare_and_swap", False)
        if not command:
            return None
        return ExecOptions(tuple(command), timeout,
                           frozenset(supports) if sec.has("supports") else ExecOptions.supports,
                           cas)

    @classmethod
    def supports_for(cls, options: ExecOptions) -> Supports:
        """The declaration is the operator's (the program is theirs)."""
        return Supports(rtypes=options.supports, cas=options.compare_and_swap)

    @classmethod
    def from_config(cls, name: str, options: ExecOptions) -> ExecProvider:
        return cls(name, options)

    def __init__(self, name: str, options: ExecOptions) -> None:
        self.name = name
        self.options = options
        self._supports = self.supports_for(options)
        self._shown = shlex.join(options.command[:1])

    @property
    def supports(self) -> Supports:
        return self._supports

    def __repr__(self) -> str:
        return f"ExecProvider(name={self.name!r}, command={self._shown!r})"

    __str__ = __repr__

    # -- ProviderBase --------------------------------------------------------------------------

    def _read(self, t: Target) -> tuple[int | None, Iterable[str]]:
        answer = self._call({"action": "read", **_names(t)}, f"reading {t.owner} {t.rtype}")
        ttl, rdatas = answer.get("ttl"), answer.get("rdatas")
        if not isinstance(rdatas, list) or not all(isinstance(r, str) for r in rdatas):
            raise ProviderError(f"{self._shown} answered a read without an \"rdatas\" list of "
                                "strings")
        if rdatas and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0):
            raise ProviderError(f"{self._shown} answered a read without a TTL (an integer)")
        return (ttl if rdatas else None), rdatas

    def _submit(self, sub: Submission) -> None:
        t = sub.target
        request = {
            "action": "apply", **_names(t), "ttl": sub.ttl,
            "before": {"ttl": sub.before.ttl, "rdatas": sorted(sub.before.rdatas)},
            "after": sorted(sub.after), "add": sorted(sub.add), "remove": sorted(sub.remove),
        }
        answer = self._call(request, f"updating {t.owner} {t.rtype}")
        if answer.get("ok") is not True:
            raise ProviderError(f"{self._shown} did not confirm the update of {t.owner} "
                                f"{t.rtype} (no \"ok\": true in its answer)")

    # -- running the program -------------------------------------------------------------------

    def _call(self, request: dict[str, Any], what: str) -> dict[str, Any]:
        data = json.dumps({"version": PROTOCOL_VERSION, **request}).encode()
        try:
            proc = subprocess.Popen(
                list(self.options.command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True, env=dict(os.environ),
            )
        except FileNotFoundError:
            raise ProviderError(f"{self._shown}: command not found", permanent=True) from None
        except PermissionError:
            raise ProviderError(f"{self._shown}: permission denied", permanent=True) from None
        except OSError as exc:
            raise ProviderError(f"{self._shown} cannot be started: {exc.strerror}") from None
        try:
            out, err = proc.communicate(data, timeout=self.options.timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise ProviderError(f"{self._shown} did not answer within "
                                f"{self.options.timeout:g}s {what}; it was killed") from None
        if proc.returncode != 0:
            code = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
                    else f"exit {proc.returncode}")
            last = _last_line(err)
            raise ProviderError(f"{self._shown} failed ({code}) {what}" +
                                (f": {last}" if last else ""))
        if len(out) > MAX_ANSWER:
            raise ProviderError(f"{self._shown} answered more than {MAX_ANSWER} bytes {what}")
        try:
            answer = json.loads(out.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ProviderError(f"{self._shown} answered something that is not JSON {what} "
                                f"({len(out)} bytes on stdout)") from None
        if not isinstance(answer, dict):
            raise ProviderError(f"{self._shown} answered JSON that is not an object {what}")
        if "error" in answer:
            raise ProviderError(f"{self._shown} refused {what}: "
                                f"{' '.join(str(answer['error']).split())[:300]}")
        return answer


def _names(t: Target) -> dict[str, str]:
    return {"zone": t.zone, "owner": t.owner, "rtype": t.rtype}


def _last_line(err: bytes) -> str:
    lines = [ln.strip() for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
