#!/usr/bin/env bash
# The test command (README and CI run exactly this). On a fresh Debian machine, as root:
# installs the lab's Debian packages and the Python package with its test extra, then runs
# every test, lab included (the tests start and stop the servers they need).
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k tlsa`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/lab/install.sh
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
# Nothing may be written into the tree by a test run (no __pycache__, no .pytest_cache).
export PYTHONDONTWRITEBYTECODE=1
exec python3 -m pytest "$@"
