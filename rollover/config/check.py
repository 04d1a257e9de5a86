"""Checking a composed YAML node tree with line numbers: the machinery under rollover.config.

Every problem is recorded as (line, "key.path: problem") and reported all at once by the caller.
Values of keys we do not know are never echoed (someone may have pasted a secret there).
"""

from __future__ import annotations

import difflib
import errno
import ipaddress
import os
import re
import shlex
import stat
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer, ComposerError
from yaml.resolver import Resolver

from rollover.display import clip, looks_secret, shown, shown_path
from rollover.dns.names import normalize_hostname

_DURATION_PART = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
MAX_DURATION = 10 * 365 * 86400  # ten years: longer is a typo (or an overflow) in every setting
MAX_DEPTH = 64  # nesting of mappings and lists; real configs use about 6
MAX_NODES = 100_000  # values after expanding aliases (a "billion laughs" document is refused)
# Explicit core tags whose value must look like what the tag says before it is constructed
# (the constructors fail with Python errors, not YAML ones, on e.g. `!!int "abc"`).
_TAGGED = ("bool", "int", "float", "null", "timestamp")


class _DepthLimit:
    """Refuse documents nested deeper than MAX_DEPTH while composing (the composer recurses:
    100,000 levels would be a RecursionError)."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[attr-defined]
                raise ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep", mark
                )
            return super().compose_node(parent, index)  # type: ignore[misc, no-any-return]
        finally:
            self._depth -= 1


class LimitedLoader(_DepthLimit, yaml.SafeLoader):
    """SafeLoader with the nesting limit."""


class _LibyamlEvents(_DepthLimit, Composer, Resolver):
    """The same composer and resolver over libyaml's parser events: 7 x faster for a config of
    1,000 endpoints. libyaml's parser keeps its own stack (no recursion) and its own composer
    is never used (it recurses in C: a deep document would crash the process)."""

    def __init__(self, stream: str) -> None:
        from yaml._yaml import CParser

        self._events = CParser(stream)
        Composer.__init__(self)
        Resolver.__init__(self)

    def check_event(self, *choices: type[yaml.Event]) -> bool:
        return bool(self._events.check_event(*choices))

    def peek_event(self) -> Any:
        return self._events.peek_event()

    def get_event(self) -> Any:
        event = self._events.get_event()
        if isinstance(event, yaml.ScalarEvent) and not event.style:
            event.style = None  # plain, as PyYAML's parser says it
        return event


def compose(text: str) -> yaml.Node | None:
    """The node tree of one YAML document, with nesting and alias expansion limited.
    Raises yaml.YAMLError (marked with the line where possible)."""
    root = _compose_libyaml(text) if yaml.__with_libyaml__ else _PURE
    if root is _PURE:  # no libyaml, or a document it refuses: PyYAML's own words say why
        root = yaml.compose(text, Loader=LimitedLoader)
    if root is not None:
        assert isinstance(root, yaml.Node)
        check_expansion(root)
    return root


_PURE = object()


def _compose_libyaml(text: str) -> object:
    try:
        return _LibyamlEvents(text).get_single_node()
    except Exception:  # any doubt: the pure parser decides, errors and all
        return _PURE


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def check_expansion(root: yaml.Node) -> None:
    """Refuse a tree whose aliases expand to more than MAX_NODES values, or that contains
    itself (an alias inside its own anchor). Iterative: alias chains can be deep."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            size = 1 + sum(sizes[id(c)] for c in _children(node))
            if size > MAX_NODES:
                raise ComposerError(
                    None, None,
                    f"its aliases expand to more than {MAX_NODES} values (an alias bomb?)",
                    node.start_mark,
                )
            sizes[key] = size
            continue
        if key in sizes:
            continue
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise ComposerError(
                    None, None, "an alias refers to a mapping or list that contains it",
                    child.start_mark,
                )
            if id(child) not in sizes:
                stack.append((child, False))


def tag_problem(node: yaml.ScalarNode) -> str | None:
    """Why an explicitly tagged core scalar (`!!int "abc"`) cannot be what its tag says."""
    prefix = "tag:yaml.org,2002:"
    if not node.tag.startswith(prefix) or node.tag[len(prefix):] not in _TAGGED:
        return None
    name = node.tag[len(prefix):]
    value = node.value
    resolvers = yaml.SafeLoader.yaml_implicit_resolvers.get(value[:1] if value else "", [])
    if name == "null" and value in ("", "~"):
        return None
    if any(tag == node.tag and regexp.match(value) for tag, regexp in resolvers):
        return None
    return f"{shown(value)} is not a valid !!{name} value"


def line_of(node: yaml.Node | None) -> int:
    return node.start_mark.line + 1 if node is not None else 1


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    key = safe_key(key)
    return f"{path}.{key}" if path else key


def safe_key(key: str) -> str:
    """A mapping key as shown in a message: as it is when it is a plain name, else quoted,
    clipped and escaped (or hidden when it looks like a secret pasted as a key)."""
    if _PLAIN_KEY.match(key) and not looks_secret(key):
        return key
    return shown(key, 40)


@dataclass
class Problems:
    """Errors and warnings of one file, each with its 1-based line."""

    file: str
    errors: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[tuple[int, str]] = field(default_factory=list)
    _constructor: yaml.SafeLoader = field(default_factory=lambda: yaml.SafeLoader(""))

    def error(self, line: int, path: str, message: str) -> None:
        self.errors.append((line, f"{path}: {message}" if path else message))

    def warn(self, line: int, path: str, message: str) -> None:
        self.warnings.append((line, f"{path}: {message}" if path else message))

    def format(self, items: list[tuple[int, str]]) -> list[str]:
        ordered = sorted(enumerate(items), key=lambda x: (x[1][0], x[0]))
        return [f"{self.file}:{line}: {msg}" for _, (line, msg) in ordered]

    def where(self, node: yaml.Node | None) -> str:
        return f"{self.file}:{line_of(node)}"

    def construct(self, node: yaml.Node, path: str) -> tuple[bool, Any]:
        """Python value of `node` (deep). (False, None) after reporting when it cannot be built."""
        if isinstance(node, yaml.ScalarNode):
            problem = tag_problem(node)
            if problem is not None:
                self.error(line_of(node), path, problem)
                return False, None
        try:
            return True, self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            self.error(line_of(node), path, f"bad value: {clip(problem, 100)}")
            return False, None
        except ValueError as exc:  # a value in the right shape but out of range
            if node.tag.endswith(":int"):
                reason = "a whole number with more than 4300 digits"
            else:
                reason = clip(str(exc).split(":")[0], 60)
            self.error(line_of(node), path, f"bad value ({reason})")
            return False, None


def describe(node: yaml.Node, value: Any = None) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int):
        return f"the integer {clip(str(value), 20)}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {shown(value)}"
    return f"a {type(value).__name__}"


class Section:
    """One YAML mapping under check. Getters report problems and return None on error."""

    def __init__(
        self,
        p: Problems,
        node: yaml.MappingNode | None,
        path: str,
        allowed: Collection[str],
        *,
        open_ended: bool = False,
    ) -> None:
        self.p = p
        self.node = node
        self.path = path
        self.line = line_of(node)
        self.keys: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        if node is None:
            return
        own = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
        try:
            self.p._constructor.flatten_mapping(node)  # resolve "<<" merge keys
        except yaml.YAMLError as exc:
            self.p.error(self.line, path, f"bad merge key: {getattr(exc, 'problem', exc)}")
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                p.error(line_of(knode), path, f"keys must be strings, got {describe(knode)}")
                continue
            ok, key = p.construct(knode, path)
            if not ok:
                continue
            if not isinstance(key, str):
                p.error(line_of(knode), path, f"keys must be strings, got {describe(knode, key)}")
                continue
            kpath = join(path, key)
            if key in self.keys and id(self.keys[key][0]) not in own:
                del self.keys[key]  # a merged ("<<") value: the explicit or later one wins
            if key in self.keys:
                first = line_of(self.keys[key][0])
                p.error(line_of(knode), kpath, f"duplicate key (first given on line {first})")
                continue
            self.keys[key] = (knode, vnode)
            if not open_ended and key not in allowed:
                p.error(line_of(knode), kpath, unknown_key_message(key, allowed))

    def restrict(self, allowed: Collection[str]) -> None:
        """Report every key not in `allowed`, for a section first read open-ended (e.g. to
        learn its `type` before knowing which keys that type takes)."""
        for key, (knode, _) in self.keys.items():
            if key not in allowed:
                message = unknown_key_message(key, allowed)
                self.p.error(line_of(knode), join(self.path, key), message)

    # -- raw access -------------------------------------------------------------------------

    def has(self, key: str) -> bool:
        return self.value_node(key) is not None

    def value_node(self, key: str) -> yaml.Node | None:
        """The value node, or None when the key is absent or explicitly null."""
        pair = self.keys.get(key)
        if pair is None:
            return None
        vnode = pair[1]
        if isinstance(vnode, yaml.ScalarNode) and vnode.tag == "tag:yaml.org,2002:null":
            return None
        return vnode

    def line_for(self, key: str) -> int:
        pair = self.keys.get(key)
        return line_of(pair[0]) if pair else self.line

    def missing(self, key: str) -> None:
        self.p.error(self.line, join(self.path, key), "missing (required)")

    def bad(self, key: str, message: str) -> None:
        self.p.error(self.line_for(key), join(self.path, key), message)

    def warn(self, key: str, message: str) -> None:
        self.p.warn(self.line_for(key), join(self.path, key), message)

    def scalar(self, key: str, required: bool = False) -> tuple[yaml.Node | None, Any]:
        node = self.value_node(key)
        if node is None:
            if required:
                self.missing(key)
            return None, None
        if not isinstance(node, yaml.ScalarNode):
            self.p.error(
                line_of(node), join(self.path, key), f"must be a single value, not {describe(node)}"
            )
            return None, None
        ok, value = self.p.construct(node, join(self.path, key))
        return (node, value) if ok else (None, None)

    def wrong(self, key: str, node: yaml.Node, value: Any, wanted: str) -> None:
        self.p.error(
            line_of(node), join(self.path, key), f"must be {wanted}, got {describe(node, value)}"
        )

    # -- nested -------------------------------------------------------------------------------

    def section(
        self,
        key: str,
        allowed: Collection[str],
        *,
        required: bool = False,
        open_ended: bool = False,
    ) -> Section | None:
        """The nested mapping (an empty Section when absent); None when it is not a mapping."""
        node = self.value_node(key)
        path = join(self.path, key)
        if node is None:
            if required:
                self.missing(key)
            return Section(self.p, None, path, allowed, open_ended=open_ended)
        if not isinstance(node, yaml.MappingNode):
            self.p.error(
                self.line_for(key),
                path,
                f"must be a mapping, got {describe(node, _peek(self.p, node))}",
            )
            return None
        sec = Section(self.p, node, path, allowed, open_ended=open_ended)
        sec.line = line_of(self.keys[key][0])
        return sec

    def sequence(self, key: str, *, allow_scalar: bool = False) -> Iterator[tuple[str, yaml.Node]]:
        """(path, node) of each item of a list value; nothing when absent or not a list."""
        node = self.value_node(key)
        path = join(self.path, key)
        if node is None:
            return
        if isinstance(node, yaml.ScalarNode) and allow_scalar:
            yield path, node
            return
        if not isinstance(node, yaml.SequenceNode):
            self.p.error(
                self.line_for(key),
                path,
                f"must be a list, got {describe(node, _peek(self.p, node))}",
            )
            return
        for i, item in enumerate(node.value):
            yield join(path, i), item

    # -- typed getters -----------------------------------------------------------------------

    def get_str(
        self, key: str, default: str | None = None, *, required: bool = False
    ) -> str | None:
        node, value = self.scalar(key, required)
        if node is None:
            return default
        if not isinstance(value, str) or not value.strip():
            self.wrong(key, node, value, "a non-empty string")
            return default
        return value.strip()

    def get_int(
        self, key: str, default: int | None = None, *, lo: int, hi: int, required: bool = False
    ) -> int | None:
        node, value = self.scalar(key, required)
        if node is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.wrong(key, node, value, "an integer")
            return default
        if not lo <= value <= hi:
            self.p.error(
                line_of(node),
                join(self.path, key),
                f"{clip(str(value), 20)} is out of range ({lo}-{hi})",
            )
            return default
        return value

    def get_float(self, key: str, default: float, *, hi: float) -> float:
        node, value = self.scalar(key)
        if node is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.wrong(key, node, value, "a number of seconds")
            return default
        if not 0 < value <= hi:
            self.p.error(
                line_of(node),
                join(self.path, key),
                f"{clip(str(value), 20)} is out of range (more than 0, at most {hi})",
            )
            return default
        return float(value)

    def get_bool(self, key: str, default: bool) -> bool:
        node, value = self.scalar(key)
        if node is None:
            return default
        if not isinstance(value, bool):
            self.wrong(key, node, value, "true or false")
            return default
        return value

    def get_duration(self, key: str, default: int) -> int:
        node, value = self.scalar(key)
        if node is None:
            return default
        seconds = parse_duration(value)
        if seconds is None:
            self.wrong(
                key, node, value, 'a duration (seconds, or like "90s", "15m", "2h", "30d", "1w")'
            )
            return default
        if seconds > MAX_DURATION:
            self.p.error(
                line_of(node), join(self.path, key),
                f"{seconds}s is longer than 10 years (the most rollover accepts)",
            )
            return default
        return seconds

    def get_ip(self, key: str, *, required: bool = False) -> str | None:
        node, value = self.scalar(key, required)
        if node is None:
            return None
        return self.check_ip(join(self.path, key), node, value)

    def check_ip(self, path: str, node: yaml.Node, value: Any) -> str | None:
        if isinstance(value, str):
            try:
                return str(ipaddress.ip_address(value.strip()))
            except ValueError:
                pass
        hint = " (quote IPv6 addresses)" if isinstance(value, int) else ""
        self.p.error(
            line_of(node), path, f"must be an IP address, got {describe(node, value)}{hint}"
        )
        return None

    def get_ip_list(self, key: str) -> tuple[str, ...] | None:
        """IP addresses (a list, or one address as a plain value); None when absent."""
        if not self.has(key):
            return None
        out: list[str] = []
        for path, node in self.sequence(key, allow_scalar=True):
            if not isinstance(node, yaml.ScalarNode):
                self.p.error(line_of(node), path, f"must be an IP address, got {describe(node)}")
                continue
            ok, value = self.p.construct(node, path)
            if not ok:
                continue
            ip = self.check_ip(path, node, value)
            if ip is None:
                continue
            if ip in out:
                self.p.error(line_of(node), path, f"{ip} is listed twice")
                continue
            out.append(ip)
        return tuple(out)

    def get_hostname(
        self, key: str, *, required: bool = False, what: str = "a DNS name"
    ) -> str | None:
        node, value = self.scalar(key, required)
        if node is None:
            return None
        if not isinstance(value, str):
            self.wrong(key, node, value, what)
            return None
        name, problem = normalize_hostname(value)
        if problem:
            self.p.error(
                line_of(node), join(self.path, key), f"{shown(value)} is not {what}: {problem}"
            )
            return None
        return name

    def get_path(
        self, key: str, base: Path, *, required: bool = False, must_exist: str | None = None
    ) -> Path | None:
        """A path (relative ones are taken relative to the config file's directory).

        must_exist: None (no check), "file" or "dir".
        """
        node, value = self.scalar(key, required)
        if node is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.wrong(key, node, value, "a file path")
            return None
        if "\0" in value:
            self.p.error(line_of(node), join(self.path, key), "a file path cannot hold a NUL")
            return None
        path = base / value.strip()
        if must_exist is None:
            return path
        try:
            st = os.stat(path)
        except OSError as exc:
            why = (
                "has a name longer than the system allows"
                if exc.errno == errno.ENAMETOOLONG
                else "does not exist"
            )
            self.p.error(line_of(node), join(self.path, key), f"{shown_path(path)} {why}")
            return None
        want_dir = must_exist == "dir"
        if stat.S_ISDIR(st.st_mode) != want_dir or not (want_dir or stat.S_ISREG(st.st_mode)):
            why = "is not a directory" if want_dir else "is not a regular file"
            self.p.error(line_of(node), join(self.path, key), f"{shown_path(path)} {why}")
            return None
        return path

    def get_command(self, key: str) -> tuple[str, ...] | None:
        """A command: a list of strings, or one string split like a shell would (no shell)."""
        node = self.value_node(key)
        if node is None:
            return None
        path = join(self.path, key)
        if isinstance(node, yaml.ScalarNode):
            ok, value = self.p.construct(node, path)
            if not ok:
                return None
            if not isinstance(value, str):
                self.wrong(key, node, value, "a command (a list of strings, or a string)")
                return None
            try:
                return tuple(shlex.split(value))
            except ValueError as exc:
                self.p.error(line_of(node), path, f"cannot split the command: {exc}")
                return None
        out: list[str] = []
        for ipath, item in self.sequence(key):
            ok, value = (
                self.p.construct(item, ipath) if isinstance(item, yaml.ScalarNode) else (True, None)
            )
            if not ok:
                return None
            if not isinstance(value, str) or not value:
                self.p.error(line_of(item), ipath, f"must be a string, got {describe(item, value)}")
                return None
            out.append(value)
        return tuple(out)

    def get_mode(self, key: str, default: int) -> int:
        node, value = self.scalar(key)
        if node is None:
            return default
        mode: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            mode = value  # YAML 1.1 reads 0600 as octal already
        elif isinstance(value, str) and re.fullmatch(r"0?o?[0-7]{3,4}", value.strip()):
            mode = int(value.strip().replace("o", ""), 8)
        if mode is None or not 0 <= mode <= 0o777:
            self.wrong(key, node, value, "a file mode like 0600")
            return default
        return mode


def _peek(p: Problems, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        ok, value = p.construct(node, "")
        return value if ok else None
    return None


def unknown_key_message(key: str, allowed: Collection[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (allowed here: {', '.join(sorted(allowed))})"


def parse_duration(value: Any) -> int | None:
    """Seconds from an int (>= 0) or a string: "90", "90s", "15m", "2h", "30d", "1w", "1h30m"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text.isdigit():
        return int(text)
    if not text or not re.fullmatch(r"(?:\d+\s*[smhdw]\s*)+", text):
        return None
    return sum(int(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))
