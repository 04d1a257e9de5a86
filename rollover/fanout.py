"""Work that waits on the network, fanned out over threads: the one `parallel` helper."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_LIMIT = 32  # threads: these wait on sockets, not the CPU; a bound keeps a big list sane


def parallel(fn: Callable[[T], R], items: Sequence[T], limit: int = DEFAULT_LIMIT) -> list[R]:
    """fn over items, at most `limit` at a time; results in the order of items."""
    if not items:
        return []
    if len(items) == 1:
        return [fn(items[0])]
    with ThreadPoolExecutor(max_workers=min(len(items), limit)) as pool:
        return list(pool.map(fn, items))
