"""Test configuration. The lab lives in tests/lab/ (imported as `lab`); its pytest fixtures are
registered here as plugins so every test module can ask for `dns_lab`, `pebble_lab`, ..."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

pytest_plugins = ["lab.dns_fixtures", "lab.app_fixtures"]
