"""pytest fixture `zonefile_lab`: a BIND and a Knot serving zf.test. from zone files (session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.dns_fixtures import require_dns_binaries
from lab.zonefile import ZoneFileLab


@pytest.fixture(scope="session")
def zonefile_lab() -> Iterator[ZoneFileLab]:
    require_dns_binaries()
    lab = ZoneFileLab()
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()
