"""Pure tests of the provider interface: Change, check_change, provider lookup. No I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollover.errors import ExitStatus, ProviderError
from rollover.model import RRset
from rollover.providers.base import (
    Change,
    ProviderBase,
    Submission,
    Target,
    check_change,
    load_provider_class,
)

OWNER = "_25._tcp.mail.example.test."
A = "3 1 1 " + "aa" * 32
B = "3 1 1 " + "bb" * 32
C = "2 1 1 " + "cc" * 32


def change(**kw: object) -> Change:
    base: dict[str, object] = {"zone": "example.test.", "owner": OWNER, "rtype": "TLSA", "ttl": 300}
    base.update(kw)
    return Change(**base)  # type: ignore[arg-type]


def rrset(*rdatas: str, ttl: int | None = 300) -> RRset:
    return RRset(OWNER, "TLSA", ttl if rdatas else None, frozenset(rdatas))


def test_result_adds_and_removes() -> None:
    c = change(add=frozenset({B}), remove=frozenset({A}))
    assert c.result(frozenset({A, C})) == {B, C}


def test_result_add_wins_over_remove_of_same_rdata() -> None:
    c = change(add=frozenset({A}), remove=frozenset({A}))
    assert c.result(frozenset({A})) == {A}


def test_describe_lists_sorted_changes() -> None:
    c = change(add=frozenset({B, A}), remove=frozenset({C}))
    assert c.describe() == f"{OWNER} TLSA ttl 300: +{A} +{B} -{C}"
    assert change().describe() == f"{OWNER} TLSA ttl 300: no change"


def test_change_is_frozen_and_hashable() -> None:
    c = change(add=frozenset({A}))
    with pytest.raises(AttributeError):
        c.ttl = 5  # type: ignore[misc]
    assert hash(c) == hash(change(add=frozenset({A})))


def test_check_change_adds_to_empty() -> None:
    assert check_change(change(add=frozenset({A})), rrset()) == {A}


def test_check_change_no_op_on_empty_is_fine() -> None:
    assert check_change(change(), rrset()) == frozenset()


def test_check_change_expect_matches() -> None:
    c = change(add=frozenset({B}), expect=frozenset({A}))
    assert check_change(c, rrset(A)) == {A, B}


def test_check_change_expect_empty_matches_absent_rrset() -> None:
    c = change(add=frozenset({A}), expect=frozenset())
    assert check_change(c, rrset()) == {A}


@pytest.mark.parametrize("current", [(), (A, C), (B,)])
def test_check_change_expect_mismatch_is_concurrent_edit(current: tuple[str, ...]) -> None:
    c = change(add=frozenset({B}), expect=frozenset({A}))
    with pytest.raises(ProviderError) as err:
        check_change(c, rrset(*current))
    message = str(err.value)
    assert "changed under us" in message and OWNER in message
    assert "\n" not in message
    assert err.value.exit_status == ExitStatus.ERROR


def test_check_change_refuses_to_empty_tlsa() -> None:
    with pytest.raises(ProviderError, match=r"refusing to leave .* empty"):
        check_change(change(remove=frozenset({A})), rrset(A))


def test_check_change_refuses_remove_on_absent_rrset() -> None:
    with pytest.raises(ProviderError, match="empty"):
        check_change(change(remove=frozenset({A})), rrset())


def test_check_change_allow_empty_permits_cleanup() -> None:
    c = change(rtype="TXT", remove=frozenset({'"tok"'}), allow_empty=True)
    assert check_change(c, RRset(OWNER, "TXT", 60, frozenset({'"tok"'}))) == frozenset()


def test_check_change_keeps_foreign_rdata() -> None:
    assert check_change(change(remove=frozenset({A})), rrset(A, C)) == {C}


def test_load_builtin_rfc2136() -> None:
    from rollover.providers.rfc2136 import RFC2136Provider

    assert load_provider_class("rfc2136") is RFC2136Provider


def test_unknown_provider_type_is_provider_error() -> None:
    with pytest.raises(ProviderError, match=r"unknown provider type 'nope' \(known: .*rfc2136"):
        load_provider_class("nope")


RDATA = st.sampled_from([A, B, C, "3 1 2 " + "dd" * 64, "2 1 1 " + "ee" * 32])
SETS = st.frozensets(RDATA)


@given(current=SETS, add=SETS, remove=SETS, allow_empty=st.booleans())
def test_check_change_property(
    current: frozenset[str], add: frozenset[str], remove: frozenset[str], allow_empty: bool
) -> None:
    c = change(add=add, remove=remove, allow_empty=allow_empty)
    try:
        after = check_change(c, rrset(*current))
    except ProviderError:
        # Only refusal: the result would be empty, emptiness not allowed, and something existed
        # or was asked to be removed.
        assert not c.result(current) and not allow_empty and (current or remove)
        return
    assert after == (current - remove) | add
    assert add <= after
    assert not (after & (remove - add))
    assert after or allow_empty or (not current and not remove)


@given(current=SETS, expect=SETS)
def test_check_change_expect_property(current: frozenset[str], expect: frozenset[str]) -> None:
    c = change(add=frozenset({A}), expect=expect)
    if current == expect:
        assert A in check_change(c, rrset(*current))
    else:
        with pytest.raises(ProviderError, match="changed under us"):
            check_change(c, rrset(*current))


class _Failing(ProviderBase):
    TYPE = "failing"

    def __init__(self, permanent: bool) -> None:
        self.name = "f"
        self.permanent = permanent

    def _read(self, t: Target) -> tuple[int | None, list[str]]:
        raise ProviderError("secret-123 refused", permanent=self.permanent)

    def _secrets(self) -> list[str]:
        return ["secret-123"]


@pytest.mark.parametrize("permanent", [True, False])
def test_base_names_the_provider_keeps_permanence_and_scrubs(permanent: bool) -> None:
    with pytest.raises(ProviderError) as err:
        _Failing(permanent).read("example.test.", OWNER, "TLSA")
    assert str(err.value) == "provider f (failing): <secret> refused"
    assert err.value.permanent is permanent


def test_base_canonicalises_and_skips_a_no_op() -> None:
    submitted: list[Submission] = []

    class Memory(ProviderBase):
        TYPE = "memory"
        rrset: tuple[int | None, list[str]] = (300, ["3 1 1 " + "AA" * 16 + " " + "aa" * 16])

        def __init__(self) -> None:
            self.name = "m"

        def _read(self, t: Target) -> tuple[int | None, list[str]]:
            return self.rrset

        def _submit(self, sub: Submission) -> None:
            submitted.append(sub)
            self.rrset = (sub.ttl, sorted(sub.after))

    provider = Memory()
    assert provider.read("example.test.", OWNER, "TLSA").rdatas == {A}
    provider.apply(change(add=frozenset({A.upper()})))  # already there, in another spelling
    assert submitted == []
    provider.apply(change(add=frozenset({B})))
    assert submitted[0].before.rdatas == {A} and submitted[0].after == {A, B}
    assert submitted[0].add == {B} and not submitted[0].remove
