"""Test configuration. The lab lives in tests/lab/ (imported as `lab`); its pytest fixtures are
registered here as plugins so every test module can ask for `dns_lab`, `pebble_lab`, ..."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# Hypothesis caches into ./.hypothesis unless told otherwise; keep the tree clean.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "rollover-hypothesis")
)

from hypothesis import settings

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

# Hypothesis keeps no example database: nothing may be written into the tree by a test run.
settings.register_profile("rollover", database=None, deadline=None)
settings.load_profile("rollover")

pytest_plugins = ["lab.dns_fixtures", "lab.app_fixtures", "lab.pdns_fixtures",
                  "lab.zonefile_fixtures", "lab.mta_fixtures"]
