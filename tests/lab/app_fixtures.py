"""pytest fixtures for the application part of the lab (Pebble ACME, Postfix).

`pebble_lab` (uses `dns_lab`: Pebble validates DNS-01 against the lab's primary) and `postfix_lab`
are session-scoped. Without the binaries the fixtures skip, except in CI (`CI` set), where a missing
binary fails. Tests that change Postfix's chain files should restore them or not depend on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.dns import DnsLab
from lab.dns_fixtures import skip_or_fail
from lab.pebble import PEBBLE, PebbleLab
from lab.pki import ALGORITHMS
from lab.postfix import POSTFIX, PostfixLab


def _require(binary: str, what: str) -> None:
    if not Path(binary).exists():
        skip_or_fail(f"{what} needs {binary} (run tests/lab/install.sh)")


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


@pytest.fixture(autouse=True)
def _postfix_serves_every_algorithm_again(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that narrowed what the shared Postfix serves (PostfixLab.serve) leaves it as the
    next test expects it: one key per lab algorithm."""
    yield
    if "postfix_lab" in request.fixturenames:
        lab: PostfixLab = request.getfixturevalue("postfix_lab")
        if lab.serving != ALGORITHMS and lab.master_pid is not None:
            lab.serve(ALGORITHMS)
