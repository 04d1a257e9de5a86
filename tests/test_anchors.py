"""Trust anchors: the default is the real root key (dns-root-data, else built in), a file in
zone-file lines can name another zone (the lab's `test.`), and a bad file is one line."""

from __future__ import annotations

from pathlib import Path

import dns.dnssec
import dns.name
import pytest

from rollover.errors import InputError, MissingInputError
from rollover.monitor import anchors

ROOT_KSK_2017 = 20326


def test_default_is_the_root_ksk() -> None:
    a = anchors.load()
    assert a.zone == dns.name.root
    tags = {d.key_tag for d in a.ds} | {dns.dnssec.key_id(k) for k in a.dnskey}
    assert ROOT_KSK_2017 in tags


def test_builtin_matches_the_debian_file_when_present() -> None:
    builtin = anchors.parse(anchors.BUILTIN_ROOT, "built-in")
    debian = Path("/usr/share/dns/root.ds")
    if not debian.exists():
        pytest.skip("dns-root-data not installed")
    # a root KSK roll changes the Debian file: the built-in copy must be updated with it
    assert set(anchors.parse(debian.read_text(), str(debian)).ds) == set(builtin.ds)


def test_file_with_dnskey_and_comments(tmp_path: Path) -> None:
    f = tmp_path / "a"
    f.write_text("; the lab\n\ntest. 3600 IN DNSKEY 257 3 13 "
                 "24a7ZphS164A+HsW5tM7tL26XDTP60vfJsnoSHyVRLNNZCwyq2p0VuFb97HVa2WX8+rM51fwqm6y"
                 "WndE2SoI5Q== ; key\n")
    a = anchors.load(str(f))
    assert str(a.zone) == "test." and len(a.dnskey) == 1 and not a.ds
    assert a.describe().startswith("trust anchor test. (1 DNSKEY from ")


@pytest.mark.parametrize(("text", "needle"), [
    ("test. IN A 192.0.2.1\n", ":1: not a DS or DNSKEY record"),
    ("test. IN DS 1 13 2 zz\n", ":1: bad DS record"),
    ("a. IN DS 1 13 2 " + "ab" * 32 + "\nb. IN DS 1 13 2 " + "ab" * 32 + "\n", ":2: anchor for b."),
    ("; nothing\n", "holds no DS or DNSKEY record"),
])
def test_bad_files_are_one_line(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad"
    f.write_text(text)
    with pytest.raises(InputError) as exc:
        anchors.load(str(f))
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError):
        anchors.load(str(tmp_path / "nope"))
