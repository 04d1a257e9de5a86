"""One registry per edge kind: DNS providers, installers and certificate sources.

Every edge type, the built-in ones too, is an entry point of its kind's group, so a third-party
distribution adds one exactly the way rollover adds its own (pyproject.toml):

    [project.entry-points."rollover.providers"]
    powerdns = "rollover.providers.powerdns:PowerDNSProvider"

The object an entry point names (a class) brings:

- `OPTIONS`: the keys its config section takes besides `type`;
- `parse_options(sec, ctx)` (a classmethod): checks its own section with the FILE:LINE machinery
  of `rollover.config.check` (`sec.get_str`, `sec.get_int`, `sec.bad`, ...) and returns its own
  frozen options object, or None after reporting the problems;
- the builder of its kind: providers and installers `from_config(name, options)`, certificate
  sources `from_config(options, env)` (`env` is a `SourceEnv`).

The generic config loader knows no plugin's keys: it reads `type`, finds the plugin here, has
unknown keys reported against the plugin's `OPTIONS` and hands the section to the plugin. A type
that is planned but not written yet registers a class with `NOT_IMPLEMENTED` (a short reason);
the loader refuses it when the config loads ("... not implemented yet"), never later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Literal

import yaml

from rollover.config.check import Problems, Section
from rollover.errors import ConfigError
from rollover.model import Algorithm

Kind = Literal["provider", "installer", "source"]
GROUPS: dict[Kind, str] = {
    "provider": "rollover.providers",
    "installer": "rollover.installers",
    "source": "rollover.sources",
}
_WHAT: dict[Kind, str] = {
    "provider": "provider type",
    "installer": "installer type",
    "source": "source",
}

# Test hook: (kind, name) -> object, consulted before the installed entry points.
EXTRA: dict[tuple[Kind, str], Any] = {}


class PluginError(ConfigError):
    """An edge type that is unknown, cannot be imported, or is not implemented yet."""


@dataclass(frozen=True)
class ParseContext:
    """What a plugin's `parse_options` may need besides its own section."""

    name: str  # the config key (providers.NAME, installers.NAME) or the endpoint's host
    base: Path  # relative paths are taken relative to the config file's directory
    # secret_file(sec, key, what, required): the path, checked to exist and be private (0600)
    secret_file: Callable[[Section, str, str, bool], Path | None]
    algorithms: tuple[Algorithm, ...] = ()  # sources: the endpoint's algorithms
    acme: Any = None  # sources: the top-level acme section (rollover.config.AcmeConfig) or None


@dataclass(frozen=True)
class SourceEnv:
    """What a certificate source gets when the engine is built (rollover.engine.wiring)."""

    config: Any  # rollover.config.Config
    endpoint: Any  # rollover.config.EndpointConfig
    store: Any  # rollover.state.StateStore
    provider: Any  # the endpoint's Provider (ACME DNS-01 goes through it)
    observer: Any  # rollover.edges.observe.Observer
    zone: str
    clock: Any  # rollover.clock.Clock


@cache
def _installed(group: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep)
    return found


def names(kind: Kind) -> list[str]:
    """Every registered type name of `kind`, sorted (planned ones included)."""
    extra = {n for k, n in EXTRA if k == kind}
    return sorted(set(_installed(GROUPS[kind])) | extra)


def find(kind: Kind, type_name: str) -> Any:
    """The plugin registered as `type_name`; PluginError when unknown, not importable or not
    implemented yet."""
    what = _WHAT[kind]
    if (kind, type_name) in EXTRA:
        obj = EXTRA[(kind, type_name)]
    else:
        eps = _installed(GROUPS[kind])
        if type_name not in eps:
            known = ", ".join(names(kind)) or "none"
            raise PluginError(f"unknown {what} {type_name!r} (known: {known})")
        try:
            obj = eps[type_name].load()
        except ImportError as exc:
            raise PluginError(f"{what} {type_name!r} cannot be loaded: {exc}") from None
        except Exception as exc:  # a third-party module failing at import
            raise PluginError(
                f"{what} {type_name!r} cannot be loaded: {type(exc).__name__}: {exc}"
            ) from None
    reason = getattr(obj, "NOT_IMPLEMENTED", None)
    if reason:
        raise PluginError(f"{what} {type_name!r} is not implemented yet ({reason})")
    return obj


def parse_section(plugin: Any, sec: Section, ctx: ParseContext, type_key: str = "type") -> Any:
    """Check `sec` (read open-ended, `type` already taken) against the plugin's own schema and
    return its options object (None after reporting problems). A plugin without
    `parse_options` gets its section as a plain mapping, unchecked (it checks when built)."""
    if not hasattr(plugin, "parse_options"):
        if sec.node is None:
            return {}
        ok, value = sec.p.construct(sec.node, sec.path)
        if not ok or not isinstance(value, dict):
            return None
        value.pop(type_key, None)
        return value
    sec.restrict((type_key, *getattr(plugin, "OPTIONS", ())))
    return plugin.parse_options(sec, ctx)


def parse_mapping(plugin: Any, mapping: Mapping[str, Any], ctx: ParseContext,
                  error: type[Exception] = ConfigError) -> Any:
    """`parse_section` for options given as a Python mapping (tests, programmatic use): the
    same schema, the problems joined into one `error`."""
    try:
        node = yaml.compose(yaml.safe_dump(dict(mapping)), Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise error(f"{ctx.name}: options are not plain data: {exc}") from None
    p = Problems("<options>")
    sec = Section(p, node if isinstance(node, yaml.MappingNode) else None, "", (),
                  open_ended=True)
    options = parse_section(plugin, sec, ctx)
    if p.errors or options is None:
        problems = "; ".join(msg for _, msg in p.errors) or "bad options"
        raise error(f"{ctx.name}: {problems}")
    return options


def no_secret_files(sec: Section, key: str, what: str, required: bool) -> Path | None:
    """A `ParseContext.secret_file` for callers that have no config file (parse_mapping): the
    same checks, relative to the current directory."""
    from rollover import fileio

    path = sec.get_path(key, Path.cwd(), required=required, must_exist="file")
    if path is None:
        return None
    try:
        fileio.check_private(path, what, ConfigError)
    except ConfigError as exc:
        sec.bad(key, str(exc))
        return None
    return path


class Planned:
    """Base of a registered type that is not written yet: refused at config load."""

    NOT_IMPLEMENTED = "planned"
    OPTIONS: tuple[str, ...] = ()
