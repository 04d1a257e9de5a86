"""State store: atomic saves that survive kill -9, the lock, private keys, refusals."""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rollover.clock import SystemClock
from rollover.errors import ExitStatus, LockedError, StateError
from rollover.fileio import is_temp_name
from rollover.state.store import SCHEMA_VERSION, StateStore

REPO = Path(__file__).resolve().parent.parent
PEM = (
    b"-----BEGIN PRIVATE KEY-----\n"
    b"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n"
    b"-----END PRIVATE KEY-----\n"
)


def doc_of(n: int, slots: int = 1) -> dict[str, object]:
    """A valid state document (the store refuses anything else) that carries `n`, and whose
    size grows with `slots`: each slot's last_error holds a hash of n."""
    tag = hashlib.sha256(str(n).encode()).hexdigest()
    return {"slots": {
        f"h{i}.example.test:25:ecdsa-p256": {
            "slot": f"h{i}.example.test:25:ecdsa-p256", "phase": "new",
            "phase_since": "2026-01-01T00:00:00.000+00:00", "key_serial": n, "last_error": tag,
        }
        for i in range(slots)
    }}


def n_of(doc: dict[str, object]) -> int:
    slots = doc["slots"]
    assert isinstance(slots, dict)
    first = next(iter(slots.values()))
    assert all(s["last_error"] == hashlib.sha256(str(first["key_serial"]).encode()).hexdigest()
               for s in slots.values())
    return int(first["key_serial"])


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def child(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"},
    )


# -- the document --------------------------------------------------------------------------


def test_fresh_store(tmp_path: Path) -> None:
    d = tmp_path / "state"
    with umask(0o022):
        store = StateStore(d)
    assert mode_of(d) == 0o700
    assert mode_of(d / "keys") == 0o700
    assert store.load() is None
    with store.lock():
        store.save(doc_of(1))
        assert store.load() == {"schema": SCHEMA_VERSION, **doc_of(1)}
    assert mode_of(d / "state.json") == 0o600
    assert json.loads((d / "state.json").read_text())["schema"] == SCHEMA_VERSION


def test_save_needs_the_lock(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s")
    with pytest.raises(AssertionError, match="without holding the lock"):
        store.save({})
    with pytest.raises(AssertionError):
        store.write_key("k", PEM)
    assert not (tmp_path / "s" / "state.json").exists()


def test_private_key_never_goes_into_state_json(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s")
    with store.lock(), pytest.raises(StateError, match="refusing to write a private key"):
        store.save({"oops": PEM.decode()})
    assert store.load() is None


def test_read_only_store_creates_nothing(tmp_path: Path) -> None:
    d = tmp_path / "missing"
    store = StateStore(d, create=False)
    assert store.load() is None
    assert store.list_keys() == []
    assert not store.has_key("k")
    assert not d.exists()


CORRUPT = [
    (b'{"schema": 1, "slots": ', r"corrupt: Expecting value at byte offset 23 \(line 1\)"),
    (b'{"schema": 1, "h\xc3\xa9": 1,,}', r"corrupt: Expecting property name .* at byte offset 23"),
    (b"\xff\xfe{}", r"corrupt: not UTF-8 at byte offset 0"),
    (b"[1, 2]", r"corrupt: the top level is not a JSON object"),
    (b'{"slots": {}}', r"corrupt: no integer 'schema' field"),
    (b'{"schema": 2, "slots": {}}', r"written by a newer rollover \(schema 2; .*upgrade rollover"),
    (b"", r"corrupt: Expecting value at byte offset 0"),
]


@pytest.mark.parametrize(("content", "message"), CORRUPT)
def test_corrupt_or_newer_state_is_refused_and_left_alone(
    tmp_path: Path, content: bytes, message: str
) -> None:
    store = StateStore(tmp_path / "s")
    path = tmp_path / "s" / "state.json"
    path.write_bytes(content)
    path.chmod(0o600)
    before = os.stat(path)
    with pytest.raises(StateError, match=message) as info:
        store.load()
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with store.lock(), pytest.raises(StateError):
        store.load()
    assert path.read_bytes() == content
    assert os.stat(path).st_mtime_ns == before.st_mtime_ns
    assert info.value.exit_status == ExitStatus.ERROR


def test_leftover_temp_file_is_cleaned_under_the_lock_only(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s")
    with store.lock():
        store.save(doc_of(1))
    leftover = tmp_path / "s" / ".state.json.tmp-0123456789ab"
    leftover.write_text('{"n": 2, "half')
    key_leftover = tmp_path / "s" / "keys" / ".k.pem.tmp-0123456789ab"
    key_leftover.write_bytes(b"half a key")
    key_leftover.chmod(0o600)
    assert store.load() == {"schema": 1, **doc_of(1)}
    assert leftover.exists()  # a reader without the lock changes nothing
    with store.lock():
        assert store.load() == {"schema": 1, **doc_of(1)}
    assert not leftover.exists()
    assert not key_leftover.exists()
    assert store.list_keys() == []


# -- kill -9 in the middle of saving --------------------------------------------------------

SAVER = """
import sys
from pathlib import Path
from rollover.state.store import StateStore
from test_state import doc_of
store = StateStore(Path(sys.argv[1]))
n = int(sys.argv[2])
with store.lock():
    while True:
        store.save(doc_of(n, 1500))
        print(n, flush=True)
        n += 1
"""


def test_save_survives_kill_9(tmp_path: Path) -> None:
    d = tmp_path / "s"
    rng = random.Random(20260101)
    clock = SystemClock()
    next_n = 0
    temps_seen = 0
    for _round in range(20):
        proc = child(SAVER, str(d), str(next_n))
        assert proc.stdout is not None
        last = None
        for _ in range(rng.randint(1, 4)):
            line = proc.stdout.readline()
            assert line, "saver died on its own"
            last = int(line)
        clock.sleep(rng.uniform(0, 0.004))  # land the kill at a random point of a save
        proc.kill()
        proc.wait()
        proc.stdout.close()
        assert proc.stdin is not None
        proc.stdin.close()
        assert last is not None
        doc = json.loads((d / "state.json").read_bytes())  # always complete, valid JSON
        assert n_of(doc) >= last  # the last printed version, or one written after it
        assert len(doc["slots"]) == 1500
        temps_seen += sum(1 for p in d.iterdir() if is_temp_name(p.name))
        store = StateStore(d)
        with store.lock():  # the killed holder's lock is gone; leftovers are repaired
            assert store.load() == {"schema": 1, **doc}
        assert not [p for p in d.iterdir() if is_temp_name(p.name)]
        next_n = n_of(doc) + 1
    print(f"kill -9 rounds: 20, temp files left behind and cleaned: {temps_seen}")


# -- the lock -------------------------------------------------------------------------------

HOLDER = """
import sys
from pathlib import Path
from rollover.state.store import StateStore
with StateStore(Path(sys.argv[1])).lock():
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    d = tmp_path / "s"
    proc = child(HOLDER, str(d))
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert proc.stdout.readline().strip() == "locked"
        store = StateStore(d)
        with pytest.raises(LockedError) as info, store.lock():
            pass
        assert str(info.value) == (
            f"another rollover (pid {proc.pid}) holds {d}/lock; try again later"
        )
        assert info.value.exit_status == ExitStatus.LOCKED
        assert not store.locked
    finally:
        proc.stdin.close()
        proc.wait()
        proc.stdout.close()
    with store.lock():
        assert store.locked
        assert (d / "lock").read_text().strip() == str(os.getpid())
    assert not store.locked


def test_lock_is_not_reentrant(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s")
    with (
        store.lock(),
        pytest.raises(StateError, match="already locked by this process"),
        store.lock(),
    ):
        pass


# -- keys -----------------------------------------------------------------------------------


def test_keys_are_private_and_never_overwritten(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s")
    with umask(0), store.lock():
        store.write_key("mail.example.test-ecdsa-p256-1", PEM)
        path = tmp_path / "s" / "keys" / "mail.example.test-ecdsa-p256-1.pem"
        assert mode_of(path) == 0o600
        with pytest.raises(StateError, match=r"already exists .*refusing to overwrite") as info:
            store.write_key("mail.example.test-ecdsa-p256-1", b"other")
        assert "PRIVATE" not in str(info.value)
        assert path.read_bytes() == PEM
        assert store.read_key("mail.example.test-ecdsa-p256-1") == PEM
        assert store.has_key("mail.example.test-ecdsa-p256-1")
        store.write_key("b", PEM)
        assert store.list_keys() == ["b", "mail.example.test-ecdsa-p256-1"]
        assert store.delete_key("b") is True
        assert store.delete_key("b") is False
        assert not store.has_key("b")


def test_archive_key(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s")
    with store.lock():
        store.write_key("k1", PEM)
        assert store.archive_key("k1") == "k1"
        store.write_key("k1", b"second")
        assert store.archive_key("k1") == "k1.1"
        with pytest.raises(StateError, match="key k1 does not exist"):
            store.archive_key("k1")
    archive = tmp_path / "s" / "keys" / "archive"
    assert mode_of(archive) == 0o700
    assert mode_of(archive / "k1.pem") == 0o600
    assert (archive / "k1.1.pem").read_bytes() == b"second"
    assert store.list_keys() == []
    assert store.list_archived_keys() == ["k1", "k1.1"]


@pytest.mark.parametrize("key_id", ["", "../x", "a/b", ".hidden", "a b", "x" * 200, "é"])
def test_bad_key_ids(tmp_path: Path, key_id: str) -> None:
    store = StateStore(tmp_path / "s")
    with store.lock(), pytest.raises(StateError, match="bad key id"):
        store.write_key(key_id, PEM)
    assert list((tmp_path / "s" / "keys").iterdir()) == []


def test_missing_key(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s")
    with pytest.raises(StateError, match=r"key nope is missing \("):
        store.read_key("nope")


# -- refusals ---------------------------------------------------------------------------------


def test_state_dir_open_to_others_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "s"
    StateStore(d)
    d.chmod(0o755)
    with pytest.raises(
        StateError,
        match=r"state directory .* is accessible by group/other \(mode 0755\); run: chmod 700",
    ):
        StateStore(d)
    with pytest.raises(StateError):
        StateStore(d, create=False)


def test_keys_dir_open_to_others_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "s"
    StateStore(d)
    (d / "keys").chmod(0o750)
    with pytest.raises(StateError, match=r"key directory .*/keys is accessible by group/other"):
        StateStore(d)


def test_loose_key_file_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "s"
    store = StateStore(d)
    with store.lock():
        store.write_key("k", PEM)
    (d / "keys" / "k.pem").chmod(0o640)
    with pytest.raises(StateError, match=r"key file .*k\.pem is accessible by group/other") as info:
        StateStore(d)
    assert "PRIVATE" not in str(info.value)
    with pytest.raises(StateError, match="accessible by group/other"):
        store.read_key("k")  # an already open store re-checks each read
    (d / "keys" / "k.pem").chmod(0o600)
    assert StateStore(d).read_key("k") == PEM


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_state_dir_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "s"
    StateStore(d)
    os.chown(d, 65534, 65534)
    with pytest.raises(StateError, match=r"is owned by uid 65534, not by the user running"):
        StateStore(d)


def test_state_dir_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(StateError, match="is not a directory"):
        StateStore(tmp_path / "f")


# -- blobs ------------------------------------------------------------------------------------


def test_blobs(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s")
    assert store.read_file("certs/mail.example.test/ecdsa-p256.pem") is None
    with store.lock():
        store.write_file("certs/mail.example.test/ecdsa-p256.pem", b"chain")
        store.write_file("certs/mail.example.test/ecdsa-p256.pem", b"chain 2")
        store.write_file("acme/account.json", b"{}", mode=0o600)
        for bad in ("../x", "keys/k.pem", "/etc/passwd", "certs", "certs/../keys/k.pem", "x/y"):
            with pytest.raises(StateError, match="bad state file name"):
                store.write_file(bad, b"")
    assert store.read_file("certs/mail.example.test/ecdsa-p256.pem") == b"chain 2"
    assert mode_of(tmp_path / "s" / "certs") == 0o700
    assert mode_of(tmp_path / "s" / "certs" / "mail.example.test") == 0o700
    assert mode_of(tmp_path / "s" / "acme" / "account.json") == 0o600
