"""`zonefile` provider: the conformance suite against a real BIND (`rndc reload`) and a real Knot
(`knotc zone-reload`) serving a zone file that $INCLUDEs the file rollover owns."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from providers.conformance import R1, R2, ProviderConformance, Target, fresh_owner

from rollover.errors import ProviderError
from rollover.model import RRset
from rollover.providers.base import Change
from rollover.providers.zonefile import ZoneFileOptions, ZoneFileProvider, next_serial

from lab.zonefile import ZoneFileLab, ZoneFileServer


def make(server: ZoneFileServer, **kw: object) -> ZoneFileProvider:
    opts: dict[str, object] = {
        "include_file": str(server.include_file), "reload_command": tuple(server.reload_command),
        "serial": "increment", "zone_file": str(server.zone_file),
        "check_server": server.address}
    opts.update(kw)
    return ZoneFileProvider("files", ZoneFileOptions(**opts))  # type: ignore[arg-type]


@pytest.fixture(params=["bind", "knot"])
def server(request: pytest.FixtureRequest, zonefile_lab: ZoneFileLab) -> ZoneFileServer:
    return zonefile_lab.servers[request.param]


@pytest.mark.lab
class TestZoneFileConformance(ProviderConformance):
    @pytest.fixture
    def target(self, zonefile_lab: ZoneFileLab, server: ZoneFileServer) -> Target:
        def served(owner: str, rtype: str) -> RRset:
            answer = zonefile_lab.query(server, owner, rtype)
            return RRset(owner, rtype, answer.ttl, answer.records)

        def meddle(owner: str, rtype: str, ttl: int, rdatas: Iterable[str]) -> None:
            zonefile_lab.meddle(server, owner, rtype, ttl, rdatas)

        return Target(provider=make(server), zone=zonefile_lab.zone,
                      owner=fresh_owner(zonefile_lab.zone), served=served, meddle=meddle)


@pytest.mark.lab
def test_serial_bumped_per_change_not_per_no_op(zonefile_lab: ZoneFileLab,
                                                server: ZoneFileServer) -> None:
    provider = make(server)
    owner = fresh_owner(zonefile_lab.zone)
    before = zonefile_lab.serial(server)
    change = Change(zonefile_lab.zone, owner, "TLSA", 300, add=frozenset({R1}))
    provider.apply(change)
    assert zonefile_lab.serial(server) == before + 1
    provider.apply(change)  # in effect already: no write, no reload
    assert zonefile_lab.serial(server) == before + 1
    text = server.include_file.read_text()
    assert text.startswith("; Managed by rollover") and f"{owner} 300 IN TLSA {R1}" in text


@pytest.mark.lab
def test_failed_reload_puts_the_files_back(zonefile_lab: ZoneFileLab,
                                           server: ZoneFileServer) -> None:
    include, zone = server.include_file.read_bytes(), server.zone_file.read_bytes()
    provider = make(server, reload_command=("sh", "-c", "echo zone zf.test: bad >&2; exit 1"))
    with pytest.raises(ProviderError) as err:
        provider.apply(Change(zonefile_lab.zone, fresh_owner(zonefile_lab.zone), "TLSA", 300,
                              add=frozenset({R2})))
    assert "failed (exit 1): zone zf.test: bad" in str(err.value)
    assert "put the previous rollover-zf.test.zone back" in str(err.value)
    assert server.include_file.read_bytes() == include
    assert server.zone_file.read_bytes() == zone


def test_serial_keep_leaves_the_zone_file_alone(tmp_path: Path) -> None:
    zone = tmp_path / "zone.db"
    zone.write_text("@ SOA ns. h. 7 1 1 1 1\n")
    provider = ZoneFileProvider("files", ZoneFileOptions(
        str(tmp_path / "rollover-{zone}.zone"), ("true",), "keep", str(zone)))
    provider.apply(Change("zf.test.", "_25._tcp.mail.zf.test.", "TLSA", 300,
                          add=frozenset({R1})))
    assert zone.read_text() == "@ SOA ns. h. 7 1 1 1 1\n"
    assert (tmp_path / "rollover-zf.test.zone").read_text().count("IN TLSA") == 1
    assert provider.read("zf.test.", "_25._tcp.mail.zf.test.", "TLSA").rdatas == {R1}


def test_serial_in_a_commented_multi_line_soa(tmp_path: Path) -> None:
    zone = tmp_path / "zone.db"
    zone.write_text("$TTL 60\n@ IN SOA ns.zf.test. hostmaster.zf.test. ( ; SOA 99 in a comment\n"
                    "      2026010105 ; serial\n      1h 15m 1w 60 )\n")
    provider = ZoneFileProvider("files", ZoneFileOptions(
        str(tmp_path / "inc"), ("true",), "increment", str(zone)))
    provider.apply(Change("zf.test.", "_25._tcp.mail.zf.test.", "TLSA", 300,
                          add=frozenset({R1})))
    assert "      2026010106 ; serial\n" in zone.read_text()
    assert "SOA 99 in a comment" in zone.read_text()


@pytest.mark.parametrize(("old", "mode", "new"), [
    (1, "increment", 2), (2**32 - 1, "increment", 1), (5, "unixtime", 1767225600),
    (1767225600, "unixtime", 1767225601), (1, "date", 2026010100),
    (2026010100, "date", 2026010101),
])
def test_next_serial(old: int, mode: str, new: int) -> None:
    assert next_serial(old, mode, datetime(2026, 1, 1, tzinfo=UTC)) == new


@pytest.mark.parametrize(("opts", "match"), [
    ({"serial": "increment"}, "serial: increment needs zone_file"),
    ({"serial": "sometimes", "zone_file": "z"}, "unknown serial mode"),
    ({"serial": "keep", "reload_command": []}, "reload_command: must not be empty"),
    ({"serial": "keep", "include_file": "x-{host}"}, "only {zone}"),
])
def test_options(opts: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"include_file": "inc-{zone}", "reload_command": "rndc reload"}
    base.update(opts)
    with pytest.raises(ProviderError, match=match):
        ZoneFileProvider.from_options("files", base)
