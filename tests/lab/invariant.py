"""The invariant monitor for any mail server of the lab: every ~100 ms, for every key algorithm,
which key does the server present (asked with `openssl s_client`, not rollover's probe), and
does every authoritative nameserver serve a 3 1 1 record for it? Any moment where one does not
is a violation (DESIGN: "The one invariant")."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from lab.dns import DnsLab
from lab.tlsclient import served_spki


class InvariantMonitor(threading.Thread):
    def __init__(self, dns_lab: DnsLab, address: str, port: int, starttls: str | None,
                 owner: str, algorithms: Sequence[str], *, before_dane: bool = False) -> None:
        super().__init__(daemon=True)
        self.dns_lab, self.address, self.port, self.starttls = dns_lab, address, port, starttls
        self.owner, self.algorithms = owner, tuple(algorithms)
        # before_dane: a server with no TLSA RRset at all is fine (DANE not on yet there)
        self.before_dane = before_dane
        self.samples = 0
        self.keys_seen: dict[str, list[str]] = {a: [] for a in self.algorithms}
        self.violations: list[str] = []
        self.halt = threading.Event()

    def _sample(self, algorithm: str) -> None:
        try:
            spki = served_spki(self.address, self.port, algorithm, self.starttls)
        except Exception as exc:  # the server must keep answering during a rollover
            self.violations.append(f"{algorithm}: TLS failed: {exc}")
            return
        seen = self.keys_seen[algorithm]
        if not seen or seen[-1] != spki:
            seen.append(spki)
        for srv in self.dns_lab.servers:
            try:
                records = self.dns_lab.query(srv, self.owner, "TLSA").records
            except Exception as exc:
                self.violations.append(f"{srv.name}: no answer: {exc}")
                continue
            if not records and self.before_dane:
                continue
            if f"3 1 1 {spki}" not in records:
                self.violations.append(f"sample {self.samples}: {srv.name} ({srv.address}) "
                                       f"lacks 3 1 1 {spki[:12]}… while {algorithm} presents it")

    def run(self) -> None:
        while not self.halt.is_set():
            for algorithm in self.algorithms:
                self._sample(algorithm)
            self.samples += 1
            self.halt.wait(0.1)

    def stop(self) -> None:
        self.halt.set()
        self.join(20)
