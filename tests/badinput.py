"""Helpers of the bad-input tests: a working setup (config, TSIG secret, state with keys) that
each case breaks in one place, and a runner that calls the real CLI in-process and judges the
outcome by the README's promise: one clear line, a non-zero exit, no traceback, no hang, no
secret in the output, nothing changed on disk."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from rollover.cli.main import main
from rollover.core import machine as m
from rollover.environment import Environment
from rollover.model import Algorithm, Observation, ServerAnswer, SlotId

import certgen

TSIG_SECRET = "c2VjcmV0LWZvci10ZXN0cy1vbmx5LTIwMjY="  # base64: a value that must never be shown
EAB_SECRET = "ZWFiLWhtYWMta2V5LWZvci10ZXN0cy0yMDI2LXh5eg"  # base64url
SECRETS = (TSIG_SECRET, EAB_SECRET, "PRIVATE KEY-----", TSIG_SECRET[:16], EAB_SECRET[:16])
HOST = "mail.example.test"
SLOT = SlotId(HOST, 25, Algorithm.ECDSA_P256)
_INTERNALS = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception|Warning)\b|site-packages|\.py\b|"
                        r"fromhex\(\)|int\(\)")
CASE_TIMEOUT = 5.0  # seconds; a hang fails the case instead of the whole run

BASE_CONFIG = f"""\
# a working configuration; each case breaks one thing
state_dir: state
resolver: 127.0.0.1
dns:
  timeout: 0.5
providers:
  primary:
    type: rfc2136
    server: 127.0.30.11
    tsig_key_name: rollover-key
    tsig_algorithm: hmac-sha256
    tsig_secret_file: tsig.key
endpoints:
  - host: {HOST}
    port: 25
    zone: example.test
    provider: primary
    scheme: current+next
    algorithms: [ecdsa-p256]
    ttl: 1800
    policy:
      key_lifetime: 60d
      renew_before: 30d
      retire_grace: 1h
"""


def good_slot_state() -> m.SlotState:
    """A slot in the middle of its life: every optional part of the state document filled."""
    t = datetime(2026, 1, 1, tzinfo=UTC)
    cur, nxt = certgen.key("p256", 1), certgen.key("p256", 2)
    from rollover.dane import tlsa

    keys = [
        m.KeyInfo("k-1", m.KeyRole.CURRENT, tlsa.spki_sha256_hex(cur), t, t),
        m.KeyInfo("k-2", m.KeyRole.NEXT, tlsa.spki_sha256_hex(nxt), t),
    ]
    records = [m.RecordInfo(k.rdata, k.key_id, m.RecordState.OMNIPRESENT, t) for k in keys]
    cert = m.CertInfo("k-1", "0a1b2c", t + timedelta(days=90), t, "certs/mail-1.pem",
                      t + timedelta(days=60), None)
    answer = ServerAnswer("ns1.example.test.", "127.0.30.11", True, "NOERROR",
                          frozenset(r.rdata for r in records), 60, 7, None, None)
    obs = Observation(f"_25._tcp.{HOST}.", "TLSA", t, (answer,), "example.test.", 60)
    return m.SlotState(SLOT, m.Phase.ACTIVE, t, keys, records, key_serial=2, submitted_at=t,
                       agree_since=t, ttl_seen=60, negative_ttl=60, owner_was_empty=True,
                       installed=cert, pending=None, target_key=None, retire_at=None,
                       live_checked=True, failures=0, retry_at=None, last_error=None,
                       observation=obs)


def good_state_doc() -> dict[str, object]:
    return {"schema": 1, "slots": {SLOT.key: m.slot_to_dict(good_slot_state())}}


def make_setup(root: Path, *, state: bool = True) -> Path:
    """root/rollover.yaml, root/tsig.key (0600), root/state/ with state.json and key files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "rollover.yaml").write_text(BASE_CONFIG)
    secret = root / "tsig.key"
    secret.write_text(TSIG_SECRET + "\n")
    secret.chmod(0o600)
    if state:
        sd = root / "state"
        (sd / "keys").mkdir(parents=True, mode=0o700)
        sd.chmod(0o700)
        for kid, slot in (("k-1", 1), ("k-2", 2)):
            k = sd / "keys" / f"{kid}.pem"
            k.write_bytes(certgen.private_key_pem(certgen.key("p256", slot)))
            k.chmod(0o600)
        write_private(sd / "state.json", json.dumps(good_state_doc(), indent=2).encode())
    return root


def write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def tree_hash(root: Path) -> dict[str, str]:
    """Every entry under root: file content hashes, link targets, kinds and modes. FIFOs and
    devices are never opened."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = f"link {os.readlink(p)}"
            elif p.is_file():
                out[rel] = f"{st.st_mode:o} {hashlib.sha256(p.read_bytes()).hexdigest()}"
            else:
                out[rel] = f"{st.st_mode:o}"
    return out


class CaseTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def alarm(_sig: int, _frame: FrameType | None) -> None:
        raise CaseTimeout(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def run_cli(argv: Sequence[str], cwd: Path | None = None) -> Outcome:
    """The real CLI, in-process, with stdout/stderr captured and a time limit."""
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                time_limit(CASE_TIMEOUT):  # redirected too: a stray print() would be caught
            code = main(list(argv), Environment(stdout=out, stderr=err, environ={}))
    finally:
        os.chdir(old)
    return Outcome(code, out.getvalue(), err.getvalue())


@dataclass
class Tally:
    """Cases by category, and the ones that broke the promise (with why)."""

    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def judge(self, category: str, name: str, outcome: Outcome, *, max_lines: int = 1,
              expect: str | None = None, ok_codes: Sequence[int] = ()) -> None:
        """A bad input: non-zero exit, at most `max_lines` lines on stderr (each a
        `rollover: error:` line or a FILE:LINE line of the same error), nothing on stdout,
        no traceback, no secret; `expect` must appear in the error when given."""
        self.counts[category] = self.counts.get(category, 0) + 1
        problems = problems_of(outcome, max_lines=max_lines, expect=expect, ok_codes=ok_codes)
        if problems:
            err = outcome.err[:300].replace("\n", "\\n")
            self.failures.append(f"{category}/{name}: {'; '.join(problems)} [{err}]")

    def record(self, category: str, name: str, problems: list[str]) -> None:
        self.counts[category] = self.counts.get(category, 0) + 1
        if problems:
            self.failures.append(f"{category}/{name}: {'; '.join(problems)}")


def problems_of(o: Outcome, *, max_lines: int = 1, expect: str | None = None,
                ok_codes: Sequence[int] = ()) -> list[str]:
    problems = []
    if o.code == 0 and 0 not in ok_codes:
        problems.append("exit 0")
    if o.code not in ok_codes and o.out.strip():
        problems.append("printed on stdout")
    lines = o.err.splitlines()
    errors = [ln for ln in lines if not ln.startswith("rollover: warning:")]
    if o.code != 0 and not errors:
        problems.append("no error line")
    if len(errors) > max_lines:
        problems.append(f"{len(errors)} error lines")
    if errors and not re.match(r"rollover( [a-z-]+)?: error: ", errors[0]):
        problems.append("first line is not an error line")
    if any(len(ln) > 600 for ln in lines):
        problems.append("a line longer than 600 characters")
    if "Traceback" in o.err or _INTERNALS.search(o.err + o.out):
        problems.append("Python internals in the output")
    if any(c in o.err + o.out for c in "\x1b\x00\r"):
        problems.append("control characters in the output")
    if any(s in o.err or s in o.out for s in SECRETS):
        problems.append("a secret in the output")
    if expect is not None and expect not in o.err:
        problems.append(f"{expect!r} not in the error")
    return problems
