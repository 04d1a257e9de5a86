"""pytest fixture `pdns_lab`: one started `lab.pdns.PdnsLab` for the session (skipped without
pdns_server on a developer's machine, a failure in CI)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.dns_fixtures import skip_or_fail
from lab.pdns import PDNS_SERVER, SCHEMA, PdnsLab


@pytest.fixture(scope="session")
def pdns_lab() -> Iterator[PdnsLab]:
    for needed in (Path(PDNS_SERVER), SCHEMA):
        if not needed.exists():
            skip_or_fail(f"the PowerDNS lab needs {needed} (run tests/lab/install.sh)")
    lab = PdnsLab()
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()
