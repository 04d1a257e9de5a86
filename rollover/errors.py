"""Error types shared by every floor. Each carries the exit status the CLI turns it into.

Messages are one line, say what is wrong and where, and never contain secrets.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Process exit codes (documented in README). Nagios-compatible for `status`: 0/1/2/3."""

    OK = 0
    WARNING = 1  # status: something needs attention soon; run: finished with warnings
    ERROR = 2  # a step failed (provider, ACME, install, probe) or a check did not match
    UNKNOWN = 3  # status: state unreadable / cannot tell
    USAGE = 64  # bad command line (EX_USAGE)
    DATA = 65  # bad input file: certificate, key, bundle (EX_DATAERR)
    NO_INPUT = 66  # input file missing or unreadable (EX_NOINPUT)
    CONFIG = 78  # bad configuration (EX_CONFIG)
    LOCKED = 75  # another rollover holds the lock; try again later (EX_TEMPFAIL)
    NOT_IMPLEMENTED = 69  # EX_UNAVAILABLE
    INTERRUPTED = 130


class RolloverError(Exception):
    """Base class: str(err) is the one-line message shown to the operator."""

    exit_status: ExitStatus = ExitStatus.ERROR


class UsageError(RolloverError):
    exit_status = ExitStatus.USAGE


class InputError(RolloverError):
    """A file given on the command line is not what it should be."""

    exit_status = ExitStatus.DATA


class MissingInputError(RolloverError):
    exit_status = ExitStatus.NO_INPUT


class ConfigError(RolloverError):
    exit_status = ExitStatus.CONFIG


class StateError(RolloverError):
    """The state directory or state file is unusable (corrupt, newer schema, bad permissions)."""

    exit_status = ExitStatus.ERROR


class LockedError(RolloverError):
    exit_status = ExitStatus.LOCKED


class ProviderError(RolloverError):
    """Every failure of a DNS provider backend becomes this one type. `permanent`: retrying
    cannot help until someone changes something (a bad TSIG key, no authority for the zone, a
    refused API key): the slot stops instead of retrying forever."""

    exit_status = ExitStatus.ERROR

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class ObserveError(RolloverError):
    """Zone or nameserver discovery failed (not: a server disagreed; that is an observation)."""

    exit_status = ExitStatus.ERROR


class AcmeError(RolloverError):
    exit_status = ExitStatus.ERROR


class InstallError(RolloverError):
    exit_status = ExitStatus.ERROR
