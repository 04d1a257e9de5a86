#!/usr/bin/env bash
# ruff and mypy --strict over the code that ships. mypy cannot follow setuptools' package-dir
# mapping (providers/ and hooks/ install as rollover.providers / rollover.hooks), so it checks
# a temporary copy laid out the way the package installs.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m ruff check --no-cache .
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
cp -r rollover "$tree/rollover"
cp -r providers "$tree/rollover/providers"
cp -r hooks "$tree/rollover/hooks"
find "$tree" -name __pycache__ -prune -exec rm -rf {} +
(cd "$tree" && python3 -m mypy --config-file "$OLDPWD/pyproject.toml" --cache-dir /dev/null \
    -p rollover)
