"""`rollover certbot-hook`: certbot's deploy hook. Records, never installs, never fails certbot.

certbot runs it after every successful issuance with RENEWED_LINEAGE (live/NAME) and
RENEWED_DOMAINS. It finds the endpoints whose `certificate: {source: certbot}` is that lineage,
leaves a note per endpoint in the spool (state_dir/spool/, no lock needed: a running `rollover
run` may hold it), says so in one line (stderr, which certbot logs, and syslog) and returns 0,
whatever happened: a bad config, a locked state, anything. The note makes the next run look at
the lineage at once; the machine then installs the certificate when the rules allow (a new
key's 3 1 1 first). With --run it starts that run itself for those endpoints only, killed after
--timeout seconds (a run is crash-safe at any instant; the next one continues), and without
--wait, so certbot is never held up for 2 x TTL.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import syslog
from typing import TYPE_CHECKING

from rollover.cli import argtypes
from rollover.clock import format_time
from rollover.display import clip, printable
from rollover.environment import Environment
from rollover.errors import ExitStatus, RolloverError

if TYPE_CHECKING:
    from rollover.config.load import Config, EndpointConfig

DEFAULT_TIMEOUT = 120.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="PATH", type=argtypes.path,
                        help="configuration file (default $ROLLOVER_CONFIG or "
                             "/etc/rollover/rollover.yaml)")
    parser.add_argument("--state-dir", metavar="DIR", type=argtypes.path,
                        help="override state_dir of the config")
    parser.add_argument("--run", action="store_true",
                        help="then run the affected endpoints now (rollover run --only HOST)")
    parser.add_argument("--timeout", type=argtypes.seconds(3600), default=DEFAULT_TIMEOUT,
                        metavar="SECONDS",
                        help=f"with --run: stop that run after this long (default "
                             f"{DEFAULT_TIMEOUT:g})")


def run(args: argparse.Namespace, env: Environment) -> int:
    try:
        _hook(args, env)
    except RolloverError as exc:
        lines = str(exc).split("\n")
        more = f" (and {len(lines) - 1} more problems)" if len(lines) > 1 else ""
        _say(env, f"error: {lines[0]}{more}; nothing recorded, certbot's files are as it wrote "
             "them", syslog.LOG_ERR)
    except Exception as exc:  # a bug must not fail certbot either; no traceback, no secrets
        _say(env, f"error: unexpected {type(exc).__name__}; nothing recorded", syslog.LOG_ERR)
    except KeyboardInterrupt:
        _say(env, "interrupted; nothing recorded", syslog.LOG_WARNING)
    return ExitStatus.OK  # by contract: a deploy hook of ours never fails certbot


def _say(env: Environment, message: str, priority: int = syslog.LOG_INFO) -> None:
    line = printable(clip(message, 2000))
    env.err(f"rollover certbot-hook: {line}")
    with contextlib.suppress(OSError):
        syslog.openlog("rollover-certbot-hook", 0, syslog.LOG_DAEMON)
        syslog.syslog(priority, line)


def _matching(config: Config, lineage: str) -> list[EndpointConfig]:
    found = []
    for ep in config.endpoints:
        cert = ep.certificate
        serves = getattr(cert.options, "serves", None) if cert else None
        if cert is not None and cert.source == "certbot" and callable(serves) and \
                serves(lineage):
            found.append(ep)
    return found


def _hook(args: argparse.Namespace, env: Environment) -> None:
    lineage = env.environ.get("RENEWED_LINEAGE", "").strip()
    if not lineage:
        _say(env, "error: RENEWED_LINEAGE is not set: run me as certbot's deploy hook "
             "(deploy_hook = rollover certbot-hook)", syslog.LOG_ERR)
        return
    # imported here: certbot runs every deploy hook it has, for every lineage; the quick answer
    # for a call that is not for us must stay quick
    from rollover.cli.run import load
    from rollover.edges import spool
    from rollover.state.store import StateStore

    domains = tuple(env.environ.get("RENEWED_DOMAINS", "").split())
    config = load(args, env)
    endpoints = _matching(config, lineage)
    if not endpoints:
        _say(env, f"no endpoint of {config.path} takes its certificate from {lineage}; nothing to "
             "do")
        return
    store = StateStore(config.state_dir, create=True)  # checks owner and modes
    now = format_time(env.clock.now())
    for ep in endpoints:
        spool.write(store.state_dir, str(ep.endpoint), "certbot", lineage, domains, now)
    hosts = sorted({ep.host for ep in endpoints})
    missing = [h for h in hosts if domains and h not in domains]
    warn = f" (warning: the certificate does not name {', '.join(missing)})" if missing else ""
    if not args.run:
        _say(env, f"{lineage} renewed: noted for {', '.join(hosts)}; the next `rollover run` "
             f"installs it when the rules allow{warn}")
        return
    _say(env, f"{lineage} renewed: noted for {', '.join(hosts)}; running them now{warn}")
    _run_now(args, config, hosts, env)


def _run_now(args: argparse.Namespace, config: Config, hosts: list[str], env: Environment
             ) -> None:
    argv = [sys.executable, "-m", "rollover", "run", "--config", str(config.path)]
    if args.state_dir:
        argv += ["--state-dir", str(args.state_dir)]
    for host in hosts:
        argv += ["--only", host]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, timeout=args.timeout, check=False,
                              env=dict(env.environ))
    except subprocess.TimeoutExpired:
        _say(env, f"run stopped after {args.timeout:g}s (it resumes where it stopped: the next "
             "`rollover run` continues)", syslog.LOG_WARNING)
        return
    except OSError as exc:
        _say(env, f"error: cannot start rollover run: {exc.strerror}; the note waits for the next "
             "run", syslog.LOG_ERR)
        return
    if done.returncode == ExitStatus.LOCKED:
        _say(env, "another rollover run holds the lock; it (or the next run) takes the note")
    elif done.returncode != 0:
        _say(env, f"rollover run exited {done.returncode} (its reason is above)",
             syslog.LOG_WARNING)
