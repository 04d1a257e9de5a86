"""pytest fixtures for the lab's other mail servers: Exim (`exim_lab`) and Dovecot
(`dovecot_lab`), session-scoped. Without the binaries they skip, except in CI (`CI` set)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.dns_fixtures import skip_or_fail
from lab.dovecot import DOVECOT, DovecotLab
from lab.exim import EXIM, EximLab


def _require(binary: str, what: str) -> None:
    if not Path(binary).exists():
        skip_or_fail(f"{what} needs {binary} (run tests/lab/install.sh)")


@pytest.fixture(scope="session")
def exim_lab() -> Iterator[EximLab]:
    _require(EXIM, "the Exim lab")
    lab = EximLab()
    lab.start()
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="session")
def dovecot_lab() -> Iterator[DovecotLab]:
    _require(DOVECOT, "the Dovecot lab")
    lab = DovecotLab()
    lab.start()
    try:
        yield lab
    finally:
        lab.close()
