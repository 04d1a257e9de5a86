"""DNS-01 publishers for tests: the real one writes TXT records into the DNS lab (TSIG update at
the primary, wait until all three servers serve them); the "silent" one records calls but never
publishes, so the CA's validation must fail."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.dns import DnsLab


def quoted(values: frozenset[str]) -> list[str]:
    return [f'"{v}"' for v in sorted(values)]


@dataclass
class LabDns01:
    lab: DnsLab
    publish_for_real: bool = True
    calls: list[tuple[str, str, frozenset[str]]] = field(default_factory=list)

    def publish(self, name: str, values: frozenset[str]) -> None:
        self.calls.append(("publish", name, values))
        if self.publish_for_real:
            self.lab.update(name, "TXT", self.lab.ttl, quoted(values))

    def wait_visible(self, name: str, values: frozenset[str]) -> None:
        self.calls.append(("wait_visible", name, values))
        if self.publish_for_real:
            self.lab.wait_all(name, "TXT", quoted(values), timeout=10.0)

    def cleanup(self, name: str, values: frozenset[str]) -> None:
        self.calls.append(("cleanup", name, values))
        self.lab.delete(name, "TXT")

    def names(self, kind: str) -> list[str]:
        return [name for k, name, _ in self.calls if k == kind]
