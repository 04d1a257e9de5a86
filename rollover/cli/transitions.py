"""`rollover transitions`: the machine's transitions table, as the README shows it."""

from __future__ import annotations

import argparse

from rollover.core.machine import transitions_table
from rollover.environment import Environment
from rollover.errors import ExitStatus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace, env: Environment) -> int:
    env.out(transitions_table())
    return ExitStatus.OK
