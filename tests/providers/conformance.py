"""The provider conformance suite: every DNS provider must pass it by subclassing.

    class TestMyProviderConformance(ProviderConformance):
        @pytest.fixture
        def target(self, my_server) -> Target:
            return Target(provider=..., zone="example.test.", owner=fresh_owner("example.test."),
                          served=..., meddle=...)

`served(owner, rtype)` reads what the authoritative side really serves (a direct query to the
primary, the moto server's API, ...), independent of the provider under test. `meddle(owner,
rtype, ttl, rdatas)` is "someone else": it adds rdatas to the RRset without going through the
provider (a direct RFC 2136 update, a raw API call). The owner must be fresh for each test (the
lab is shared by the whole session), so tests never see each other's records.

The suite only uses the Provider protocol (read / apply / wait_applied) and asserts behaviour:
what the server serves afterwards, and that every refusal is a one-line ProviderError.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pytest

from rollover.errors import ProviderError
from rollover.model import RRset
from rollover.providers.base import Change, Provider

WAIT = 30.0  # wait_applied timeout; RFC 2136 returns at once


@dataclass
class Target:
    provider: Provider
    zone: str  # absolute, trailing dot
    owner: str  # fresh for this test, absolute, inside zone (a TLSA owner: _25._tcp.host.zone.)
    served: Callable[[str, str], RRset]
    meddle: Callable[[str, str, int, Iterable[str]], None]


def fresh_owner(zone: str, port: int = 25) -> str:
    """A TLSA owner name no other test uses."""
    return f"_{port}._tcp.c{secrets.token_hex(5)}.{zone}"


def tlsa(usage: int, selector: int, mtype: int, seed: str) -> str:
    """Canonical TLSA rdata text with a digest derived from `seed`."""
    digest = hashlib.sha512 if mtype == 2 else hashlib.sha256
    return f"{usage} {selector} {mtype} {digest(seed.encode()).hexdigest()}"


def txt(value: str) -> str:
    """TXT rdata as dnspython presents it (one quoted string)."""
    return f'"{value}"'


def acme_token(seed: str) -> str:
    """Looks like an ACME DNS-01 value (43 chars of base64url)."""
    return hashlib.sha256(seed.encode()).hexdigest()[:43]


R1 = tlsa(3, 1, 1, "current")
R2 = tlsa(3, 1, 1, "next")
R3 = tlsa(2, 1, 1, "issuer")
FOREIGN = tlsa(3, 1, 1, "someone else")


class ProviderConformance:
    """Inherit, provide the `target` fixture; never collected on its own (no Test prefix)."""

    @pytest.fixture
    def target(self) -> Target:
        raise NotImplementedError("subclasses provide the target fixture")

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def change(
        t: Target, ttl: int = 300, rtype: str = "TLSA", owner: str | None = None,
        add: Iterable[str] = (), remove: Iterable[str] = (),
        expect: Iterable[str] | None = None, allow_empty: bool = False,
    ) -> Change:
        return Change(
            zone=t.zone, owner=owner or t.owner, rtype=rtype, ttl=ttl, add=frozenset(add),
            remove=frozenset(remove), expect=None if expect is None else frozenset(expect),
            allow_empty=allow_empty,
        )

    @staticmethod
    def apply(t: Target, change: Change) -> None:
        t.provider.apply(change)
        t.provider.wait_applied(WAIT)

    @staticmethod
    def assert_refused(err: pytest.ExceptionInfo[ProviderError]) -> str:
        message = str(err.value)
        assert message and "\n" not in message, f"not one line: {message!r}"
        assert "Traceback" not in message
        return message

    # -- reading -----------------------------------------------------------------------------

    def test_read_absent_rrset(self, target: Target) -> None:
        got = target.provider.read(target.zone, target.owner, "TLSA")
        assert got.rdatas == frozenset()
        assert got.ttl is None
        assert target.served(target.owner, "TLSA").rdatas == frozenset()

    # -- adding ------------------------------------------------------------------------------

    def test_add_records(self, target: Target) -> None:
        self.apply(target, self.change(target, add={R1, R2}))
        got = target.provider.read(target.zone, target.owner, "TLSA")
        assert got.rdatas == {R1, R2}
        assert got.ttl == 300
        served = target.served(target.owner, "TLSA")
        assert served.rdatas == {R1, R2}
        assert served.ttl == 300

    def test_add_to_existing_keeps_existing(self, target: Target) -> None:
        self.apply(target, self.change(target, add={R1}))
        self.apply(target, self.change(target, add={R2}))
        assert target.served(target.owner, "TLSA").rdatas == {R1, R2}

    def test_reapply_is_idempotent(self, target: Target) -> None:
        change = self.change(target, add={R1, R2})
        self.apply(target, change)
        first = target.served(target.owner, "TLSA")
        self.apply(target, change)  # no error
        self.apply(target, change)
        assert target.served(target.owner, "TLSA") == first
        assert target.provider.read(target.zone, target.owner, "TLSA").rdatas == {R1, R2}

    def test_removing_absent_rdata_is_a_no_op(self, target: Target) -> None:
        self.apply(target, self.change(target, add={R1}))
        self.apply(target, self.change(target, remove={R2}))
        assert target.served(target.owner, "TLSA").rdatas == {R1}

    def test_reapplied_removal_is_idempotent(self, target: Target) -> None:
        self.apply(target, self.change(target, add={R1, R2}))
        removal = self.change(target, remove={R1})
        self.apply(target, removal)
        self.apply(target, removal)
        assert target.served(target.owner, "TLSA").rdatas == {R2}

    # -- removing ----------------------------------------------------------------------------

    def test_remove_only_named_rdata(self, target: Target) -> None:
        self.apply(target, self.change(target, add={R1, R2}))
        target.meddle(target.owner, "TLSA", 300, [FOREIGN])
        self.apply(target, self.change(target, remove={R1}))
        assert target.served(target.owner, "TLSA").rdatas == {R2, FOREIGN}

    def test_swap_in_one_change(self, target: Target) -> None:
        self.apply(target, self.change(target, add={R1, R2}))
        self.apply(target, self.change(target, add={R3}, remove={R1}))
        assert target.served(target.owner, "TLSA").rdatas == {R2, R3}

    def test_refuses_to_leave_tlsa_rrset_empty(self, target: Target) -> None:
        self.apply(target, self.change(target, add={R1, R2}))
        with pytest.raises(ProviderError) as err:
            self.apply(target, self.change(target, remove={R1, R2}))
        assert "empty" in self.assert_refused(err)
        assert target.served(target.owner, "TLSA").rdatas == {R1, R2}

    # -- compare-and-swap --------------------------------------------------------------------

    def test_expect_matching_current_applies(self, target: Target) -> None:
        self.apply(target, self.change(target, add={R1}, expect=set()))
        self.apply(target, self.change(target, add={R2}, expect={R1}))
        assert target.served(target.owner, "TLSA").rdatas == {R1, R2}

    def test_concurrent_change_is_refused_not_overwritten(self, target: Target) -> None:
        self.apply(target, self.change(target, add={R1}))
        seen = target.provider.read(target.zone, target.owner, "TLSA").rdatas
        change = self.change(target, add={R2}, remove={R1}, expect=seen)
        target.meddle(target.owner, "TLSA", 300, [FOREIGN])  # someone else, between read and apply
        with pytest.raises(ProviderError) as err:
            self.apply(target, change)
        self.assert_refused(err)
        assert target.served(target.owner, "TLSA").rdatas == {R1, FOREIGN}

    def test_concurrent_creation_is_refused(self, target: Target) -> None:
        change = self.change(target, add={R1}, expect=set())
        target.meddle(target.owner, "TLSA", 300, [FOREIGN])
        with pytest.raises(ProviderError):
            self.apply(target, change)
        assert target.served(target.owner, "TLSA").rdatas == {FOREIGN}

    # -- TTL -----------------------------------------------------------------------------------

    def test_ttl_is_set(self, target: Target) -> None:
        self.apply(target, self.change(target, ttl=3600, add={R1}))
        assert target.served(target.owner, "TLSA").ttl == 3600
        assert target.provider.read(target.zone, target.owner, "TLSA").ttl == 3600

    def test_ttl_change_applies_to_whole_rrset(self, target: Target) -> None:
        self.apply(target, self.change(target, ttl=300, add={R1}))
        self.apply(target, self.change(target, ttl=600, add={R2}))
        served = target.served(target.owner, "TLSA")
        assert served.rdatas == {R1, R2}
        assert served.ttl == 600

    def test_ttl_only_change(self, target: Target) -> None:
        self.apply(target, self.change(target, ttl=300, add={R1, R2}))
        self.apply(target, self.change(target, ttl=1800))
        served = target.served(target.owner, "TLSA")
        assert served.rdatas == {R1, R2}
        assert served.ttl == 1800

    # -- TXT (ACME DNS-01) -------------------------------------------------------------------

    def test_txt_acme_dns01_cycle(self, target: Target) -> None:
        owner = "_acme-challenge." + target.owner.split("._tcp.", 1)[1]
        a, b = txt(acme_token("a" + owner)), txt(acme_token("b" + owner))
        self.apply(target, self.change(target, ttl=60, rtype="TXT", owner=owner, add={a}))
        self.apply(target, self.change(target, ttl=60, rtype="TXT", owner=owner, add={b}))
        assert target.served(owner, "TXT").rdatas == {a, b}
        assert target.provider.read(target.zone, owner, "TXT").rdatas == {a, b}
        self.apply(target, self.change(target, ttl=60, rtype="TXT", owner=owner, remove={a},
                                       allow_empty=True))
        assert target.served(owner, "TXT").rdatas == {b}
        self.apply(target, self.change(target, ttl=60, rtype="TXT", owner=owner, remove={b},
                                       allow_empty=True))
        assert target.served(owner, "TXT").rdatas == frozenset()
        assert target.provider.read(target.zone, owner, "TXT").ttl is None

    def test_txt_cleanup_without_allow_empty_is_refused(self, target: Target) -> None:
        owner = "_acme-challenge." + target.owner.split("._tcp.", 1)[1]
        a = txt(acme_token(owner))
        self.apply(target, self.change(target, ttl=60, rtype="TXT", owner=owner, add={a}))
        with pytest.raises(ProviderError):
            self.apply(target, self.change(target, ttl=60, rtype="TXT", owner=owner, remove={a}))
        assert target.served(owner, "TXT").rdatas == {a}

    # -- TLSA rdata text -----------------------------------------------------------------------

    @pytest.mark.parametrize("usage,selector,mtype", [(3, 1, 1), (2, 1, 1), (3, 1, 2)])
    def test_tlsa_canonical_round_trip(
        self, target: Target, usage: int, selector: int, mtype: int
    ) -> None:
        record = tlsa(usage, selector, mtype, f"round trip {usage}{selector}{mtype}")
        self.apply(target, self.change(target, add={record}))
        assert target.provider.read(target.zone, target.owner, "TLSA").rdatas == {record}
        assert target.served(target.owner, "TLSA").rdatas == {record}

    def test_tlsa_non_canonical_input_is_stored_canonically(self, target: Target) -> None:
        u, s, m, digest = R1.split()
        spaced = f"{u} {s} {m} {digest[:32].upper()} {digest[32:].upper()}"
        self.apply(target, self.change(target, add={spaced}))
        assert target.served(target.owner, "TLSA").rdatas == {R1}
        # the same record in canonical form is already there: expect and re-apply agree
        self.apply(target, self.change(target, add={R1}, expect={spaced}))
        assert target.served(target.owner, "TLSA").rdatas == {R1}

    # -- failures --------------------------------------------------------------------------------

    def test_bad_rdata_is_provider_error_and_changes_nothing(self, target: Target) -> None:
        self.apply(target, self.change(target, add={R1}))
        with pytest.raises(ProviderError) as err:
            self.apply(target, self.change(target, add={"3 1 1 not-hex"}))
        self.assert_refused(err)
        assert target.served(target.owner, "TLSA").rdatas == {R1}

    def test_owner_outside_zone_is_provider_error(self, target: Target) -> None:
        outside = f"_25._tcp.mail.not-{target.zone}"
        with pytest.raises(ProviderError) as err:
            self.apply(target, self.change(target, owner=outside, add={R1}))
        self.assert_refused(err)
        assert err.value.permanent  # a config problem: retrying cannot heal it
        with pytest.raises(ProviderError):
            target.provider.read(target.zone, outside, "TLSA")
