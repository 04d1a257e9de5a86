"""Command line: argv -> subcommand -> exit status. Tests call `main(argv, env)` with an
`Environment` (streams, clock, variables) of their own.

Every RolloverError becomes one line on stderr and its exit status; no traceback ever reaches
an operator for bad input. Each subcommand lives in its own `rollover/cmd_*.py` module with
`add_arguments(parser)` and `run(args, env: Environment) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from rollover import __version__, logsetup
from rollover.display import clip, printable
from rollover.environment import Environment
from rollover.errors import ExitStatus, RolloverError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("rollover.cli.run", "dry run: what `run` would do now, and why (changes nothing)"),
    "run": ("rollover.cli.run", "advance every slot as far as the rules allow"),
    "status": ("rollover.cli.run", "per slot: state, records per server, next action"),
    "check": ("rollover.cli.check", "probe a live server (or a chain file) against TLSA records"),
    "tlsa": ("rollover.cli.tlsa", "TLSA records from certificates, keys or CA bundles"),
    "certbot-hook": ("rollover.cli.certbot_hook",
                     "certbot deploy hook: record and stage, never fail"),
    "init": ("rollover.cli.init", "write a starting configuration"),
    "transitions": ("rollover.cli.transitions", "the state machine's transitions table"),
}

class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so main() owns the exit status."""

    def error(self, message: str) -> NoReturn:
        # argparse quotes the offending argument: keep it short and free of control characters
        raise _UsageExit(f"{self.prog}: error: {clip(message, 300)}")


class _UsageExit(Exception):
    pass


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser. Only the module of the command named in `argv` is imported (its options are
    needed); `--version`, `--help` and other commands never pay for the engine's imports."""
    parser = _Parser(
        prog="rollover",
        description="DANE TLSA certificate rollover for mail servers.",
    )
    parser.add_argument("--version", action="version", version=f"rollover {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="log lines on stderr as text (default) or one JSON object each")
    parser.add_argument("--syslog", action="store_true",
                        help="also log to syslog (facility mail)")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="for cron: print only when something changed or failed")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        if name != wanted:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            p.set_defaults(_missing=True)
            continue
        module.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    env = Environment() if env is None else env
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        argv = hoist(argv)
        parser = build_parser(argv)
        try:
            args = parser.parse_args(argv)
        except _UsageExit as exc:
            env.err(str(exc))
            # the certbot deploy-hook contract: never fail certbot, whatever happens
            return ExitStatus.OK if "certbot-hook" in argv else ExitStatus.USAGE
        except SystemExit as exc:  # --help / --version
            return int(exc.code or 0)
        logsetup.configure(args.verbose, args.log_format, args.syslog, args.quiet, env.stderr)
        if not args.command:
            env.err(f"rollover: error: no COMMAND given (one of {', '.join(COMMANDS)}); "
                    "rollover --help tells more")
            return ExitStatus.USAGE
        if getattr(args, "_missing", False):
            env.err(f"rollover {args.command}: not implemented yet")
            return ExitStatus.NOT_IMPLEMENTED
        module = importlib.import_module(args._module)
        return int(module.run(args, env))
    except RolloverError as exc:
        # one line per problem (a config error lists them all); none can drive the terminal
        lines = "\n".join(printable(line) for line in str(exc).split("\n"))
        env.err(f"rollover: error: {lines}")
        return int(exc.exit_status)
    except KeyboardInterrupt:
        env.err("rollover: interrupted")
        return ExitStatus.INTERRUPTED


_GLOBAL_FLAGS = ("--version", "-h", "--help", "--verbose", "--syslog", "--quiet", "-q")


def hoist(argv: Sequence[str]) -> list[str]:
    """Options typed before the command that belong to it (`rollover --config X run`) go after
    the command name; the parser's own options stay in front."""
    head: list[str] = []
    moved: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in COMMANDS:
            return [*head, arg, *moved, *argv[i + 1:]]
        if arg == "--log-format":
            head += argv[i:i + 2]
            i += 2
            continue
        is_global = arg in _GLOBAL_FLAGS or arg.startswith("--log-format=") or (
            len(arg) > 1 and arg.startswith("-") and set(arg[1:]) == {"v"})
        (head if is_global else moved).append(arg)
        i += 1
    return list(argv)


def entry() -> NoReturn:
    sys.exit(main())
