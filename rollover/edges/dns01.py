"""ACME DNS-01 through the endpoint's own provider, proven by the same propagation observer."""

from __future__ import annotations

from datetime import timedelta

from rollover.clock import Clock
from rollover.edges.observe import Observer
from rollover.errors import AcmeError, RolloverError
from rollover.providers.base import Change, Provider


class ProviderDns01:
    """Publishes `_acme-challenge` TXT records and waits until every authoritative address of
    the zone (plus the endpoint's extra nameservers) serves them."""

    def __init__(
        self,
        provider: Provider,
        observer: Observer,
        zone: str,
        clock: Clock,
        *,
        ttl: int = 60,
        extra: tuple[str, ...] = (),
        timeout: float = 300.0,
    ) -> None:
        self.provider = provider
        self.observer = observer
        self.zone = zone
        self.clock = clock
        self.ttl = ttl
        self.extra = extra
        self.timeout = timeout

    def _change(self, name: str, values: frozenset[str], *, add: bool) -> None:
        current = self.provider.read(self.zone, name, "TXT")
        change = Change(
            self.zone,
            name,
            "TXT",
            self.ttl,
            add=values if add else frozenset(),
            remove=frozenset() if add else values,
            expect=current.rdatas,
            allow_empty=True,
        )
        self.provider.apply(change)

    def publish(self, name: str, values: frozenset[str]) -> None:
        self._change(name, frozenset(_quoted(v) for v in values), add=True)

    def cleanup(self, name: str, values: frozenset[str]) -> None:
        self._change(name, frozenset(_quoted(v) for v in values), add=False)

    def wait_visible(self, name: str, values: frozenset[str]) -> None:
        wanted = frozenset(_quoted(v) for v in values)
        deadline = self.clock.now() + timedelta(seconds=self.timeout)
        delay = 0.05
        while True:
            try:
                obs = self.observer.observe(name, "TXT", self.zone, self.extra)
                problem = obs.disagreement(wanted)
            except RolloverError as exc:
                problem = str(exc)
            if problem is None:
                return
            if self.clock.now() >= deadline:
                raise AcmeError(
                    f"DNS-01 record {name} not on every nameserver after "
                    f"{self.timeout:.0f}s: {problem}"
                )
            self.clock.sleep(delay)
            delay = min(2.0, delay * 2)


def _quoted(value: str) -> str:
    """TXT rdata text as dnspython prints it: one quoted string."""
    return value if value.startswith('"') else f'"{value}"'
