"""`rollover plan`, `rollover run`, `rollover status`: the engine through the command line."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from rollover import logsetup
from rollover.cli import argtypes
from rollover.config.load import Config, load_config
from rollover.environment import DEFAULT_CONFIG, Environment
from rollover.errors import ExitStatus, RolloverError, UsageError
from rollover.monitor.nagios import days_threshold, plugin_output

log = logging.getLogger("rollover")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="PATH", type=argtypes.path,
                        help=f"configuration file (default $ROLLOVER_CONFIG or {DEFAULT_CONFIG})")
    parser.add_argument("--state-dir", metavar="DIR", type=argtypes.path,
                        help="override state_dir of the config")
    command = parser.prog.split()[-1]
    if command == "run":
        parser.add_argument("--wait", action="store_true",
                            help="keep going (polling) until nothing is left to do")
        parser.add_argument("--resume", action="store_true",
                            help="the cause of a stopped slot is fixed: try it again now")
        parser.add_argument("--roll", action="store_true",
                            help="start a key rollover now (next key becomes current)")
        parser.add_argument("--max-wait", type=argtypes.seconds(366 * 86400, zero=True),
                            default=86400.0, metavar="SECONDS",
                            help="with --wait: give up waiting after this long (default 1 day)")
        parser.add_argument("--only", action="append", metavar="HOST",
                            help="advance only the endpoints of HOST (repeatable)")
    if command in ("status", "plan"):
        parser.add_argument("--json", action="store_true", help="machine-readable output")
    if command == "status":
        parser.add_argument("--nagios", action="store_true",
                            help="one line, exit 0 OK / 1 WARNING / 2 CRITICAL / 3 UNKNOWN")
        parser.add_argument("--no-observe", action="store_true",
                            help="show the stored state only; ask no nameserver")
        parser.add_argument("-w", "--warning", type=days_threshold, default=21.0,
                            metavar="DAYS", help="--nagios: warn when a certificate expires "
                                                 "within DAYS (default 21)")
        parser.add_argument("--critical", type=days_threshold, default=7.0, metavar="DAYS",
                            help="--nagios: critical within DAYS (default 7; -c is --config)")
        parser.add_argument("--prometheus", metavar="FILE", type=argtypes.path,
                            help="also write Prometheus metrics to FILE (textfile collector; "
                                 "atomic)")


def load(args: argparse.Namespace, env: Environment) -> Config:
    config = load_config(env.config_path(args.config))
    for warning in logsetup.aggregate(config.warnings):  # one line per advice
        log.warning("warning: %s", warning)
    if args.state_dir is not None:
        config = dataclasses.replace(config, state_dir=Path(args.state_dir))
    return config


def run(args: argparse.Namespace, env: Environment) -> int:
    if args.command == "status" and args.nagios:
        try:
            return _run(args, env)
        except RolloverError as exc:  # a plugin that cannot tell says UNKNOWN, in one line
            env.out(plugin_output("ROLLOVER", ExitStatus.UNKNOWN, str(exc).split("\n")[0], ()))
            return ExitStatus.UNKNOWN
    return _run(args, env)


def _run(args: argparse.Namespace, env: Environment) -> int:
    # the engine's imports are paid here, not by `--help` or the certbot hook (which needs load())
    from rollover.engine.wiring import build_engine
    from rollover.monitor import report
    from rollover.monitor.progress_view import LiveView, PlainLines

    clock = env.clock
    config = load(args, env)
    command = args.command
    if command == "run":
        if args.only:
            config = only(config, args.only)
        engine = build_engine(config, clock)
        quiet = getattr(args, "quiet", False)
        view = (None if quiet else LiveView(env.stderr, clock) if env.stderr_isatty()
                else PlainLines(env.stderr))
        try:
            reports = engine.run(roll=args.roll, resume=args.resume, wait=args.wait,
                                 max_wait=args.max_wait, progress=view)
        finally:
            if view is not None:
                view.close()
        if not quiet or any(r.done or r.error for r in reports):  # cron: only on a change
            env.out(report.text(reports, clock.now()))
        return ExitStatus.ERROR if any(r.error for r in reports) else ExitStatus.OK
    engine = build_engine(config, clock, with_certs=False, create_state=False)
    if command == "plan" or not getattr(args, "no_observe", False):
        from rollover.edges.probe import LiveProber

        # looking at the live servers is read-only: plan does it as run would
        engine.edges.prober = LiveProber(config.resolver, dns_port=config.dns.port,
                                         dns_timeout=config.dns.timeout, timeout=5.0)
    if command == "plan":
        reports = engine.plan()
        now = clock.now()
        env.out(report.to_json(reports, now) if args.json else
                report.text(reports, now, heading="would next"))
        return ExitStatus.ERROR if any(r.error for r in reports) else ExitStatus.OK
    reports = engine.status(observe=not args.no_observe)
    now = clock.now()
    if args.prometheus:
        from rollover.monitor.metrics import write_status

        write_status(reports, now, args.prometheus)
    if args.nagios:
        status, line = report.nagios(reports, now, args.warning, args.critical)
        env.out(line)
        return status
    env.out(report.to_json(reports, now) if args.json else report.text(reports, now))
    return ExitStatus.ERROR if any(r.error for r in reports) else ExitStatus.OK


def only(config: Config, hosts: list[str]) -> Config:
    """The config reduced to the endpoints of `hosts` (the other slots' state stays as is)."""
    wanted = {h.lower().rstrip(".") for h in hosts}
    unknown = wanted - {ep.host for ep in config.endpoints}
    if unknown:
        raise UsageError(f"--only {sorted(unknown)[0]}: no endpoint of that name in "
                         f"{config.path}")
    return dataclasses.replace(
        config, endpoints=tuple(ep for ep in config.endpoints if ep.host in wanted))
