"""`rollover transitions`: the machine's transitions table, as the README shows it."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from rollover.core.machine import transitions_table
from rollover.errors import ExitStatus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    print(transitions_table())
    return ExitStatus.OK
