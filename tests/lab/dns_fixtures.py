"""pytest fixtures for the DNS part of the lab (BIND primary, BIND + Knot secondaries).

`dns_lab` is session-scoped: one started `lab.dns.DnsLab` shared by every test, stopped at the end
of the session. Tests that freeze or pause a server must restore it in a `finally`. Without the
server binaries the fixture skips, except in CI (`CI` set), where a missing binary fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from lab.dns import DnsLab

BINARIES = ("named", "named-checkconf", "knotd", "knotc")


def missing_dns_binaries() -> list[str]:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [b for b in BINARIES if shutil.which(b, path=path) is None]


def skip_or_fail(reason: str) -> None:
    """A lab part that cannot run: skipped on a developer's machine, a failure in CI."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def require_dns_binaries() -> None:
    missing = missing_dns_binaries()
    if missing:
        skip_or_fail(f"DNS lab needs {', '.join(missing)} (run tests/lab/install.sh)")


@pytest.fixture(scope="session")
def dns_lab() -> Iterator[DnsLab]:
    require_dns_binaries()
    lab = DnsLab()
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()
