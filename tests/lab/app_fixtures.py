"""pytest fixtures for the application part of the lab (Pebble ACME, Postfix).

`pebble_lab` (uses `dns_lab`: Pebble validates DNS-01 against the lab's primary) and `postfix_lab`
are session-scoped. Without the binaries the fixtures skip, except in CI (`CI` set), where a missing
binary fails. Tests that change Postfix's chain files should restore them or not depend on them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.dns import DnsLab
from lab.pebble import PEBBLE, PebbleLab
from lab.postfix import POSTFIX, PostfixLab


def _require(binary: str, what: str) -> None:
    if Path(binary).exists():
        return
    reason = f"{what} needs {binary} (run tests/lab/install.sh)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pebble_lab(dns_lab: DnsLab) -> Iterator[PebbleLab]:
    _require(PEBBLE, "the Pebble lab")
    lab = PebbleLab(dns_server=f"{dns_lab.primary.address}:53", net=dns_lab.net)
    lab.start()
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="session")
def postfix_lab() -> Iterator[PostfixLab]:
    _require(POSTFIX, "the Postfix lab")
    lab = PostfixLab()
    lab.start()
    try:
        yield lab
    finally:
        lab.close()
