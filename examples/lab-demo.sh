#!/usr/bin/env bash
# The main job on the embedded default (the local lab), on a fresh Debian machine, as root:
# installs the lab's packages and rollover, starts BIND x2 + Knot + Pebble + Postfix on
# loopback, bootstraps DANE for mail.example.test from nothing, rolls its keys over, shows
# `rollover status`, and stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/lab/install.sh >&2
python3 -m pip install --quiet --disable-pip-version-check -e . >&2
export PYTHONDONTWRITEBYTECODE=1
PYTHONPATH="$PWD/tests${PYTHONPATH:+:$PYTHONPATH}" exec python3 -m lab.demo "$@"
