"""Disk faults under the state directory (issue 13's fault matrix): a state directory that fills
up (ENOSPC on a real 1 MiB tmpfs) or turns read-only while `run` writes keeps the previous state
byte for byte, leaves no temp file, says so in one line, and the next run completes — with no
moment of mismatch for the fake world's monitor.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_fakes import build_world

from rollover.errors import StateError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")


@pytest.fixture
def small_state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(state)],
                   check=True)
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], check=True)


def _files(state: Path) -> dict[str, bytes]:
    return {str(p.relative_to(state)): p.read_bytes()
            for p in state.rglob("*") if p.is_file() and p.name != "filler"}


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_state_write_that_fails_keeps_the_old_state_and_says_so(
        tmp_path: Path, small_state_dir: Path, fault: str) -> None:
    world = build_world(tmp_path)
    world.engine.run(wait=False)  # keys staged and published: a state document exists
    before = _files(small_state_dir)
    assert "state.json" in " ".join(before)
    world.clock.advance(3600)  # the next run has work to do (mark omnipresent, issue, install)
    if fault == "full":
        filler = small_state_dir / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_state_dir)], check=True)
    with pytest.raises(StateError) as err:
        world.engine.run(wait=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("cannot "), msg
    assert ("No space left" in msg) if fault == "full" else ("Read-only" in msg), msg
    assert _files(small_state_dir) == before  # nothing lost, no temp file left behind
    if fault == "full":
        (small_state_dir / "filler").unlink()
    else:
        subprocess.run(["mount", "-o", "remount,rw", str(small_state_dir)], check=True)
    reports = world.engine.run(wait=True, max_wait=7 * 86400)
    assert not [r.error for r in reports if r.error], [r.reason for r in reports]
    assert world.violations == [], world.violations[:3]
