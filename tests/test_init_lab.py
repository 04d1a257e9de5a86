"""`rollover init` against the lab: a mail domain whose MX host is a CNAME to the real Postfix,
with a TLSA record that matches only the ECDSA key in service. init follows the CNAME, finds the
zone, its three nameservers and the primary, sees both algorithms and which one the TLSA
matches, reads the Postfix TLS settings with `postconf -c`, writes a commented 0600 YAML that
`rollover plan` accepts, prints the Postfix snippet and the how-to's outbound settings, and
never overwrites a file."""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

import pytest
import yaml

from rollover.cli.main import main

from lab.dns import DnsLab
from lab.dovecot import DovecotLab
from lab.exim import EximLab
from lab.postfix import PostfixLab
from lab.proc import wait_for
from lab.tlsclient import served_spki

pytestmark = pytest.mark.lab


def init_args(dns_lab: DnsLab, postfix: PostfixLab, domain: str, out: Path) -> list[str]:
    return ["init", "--domain", domain, "--output", str(out),
            "--resolver", dns_lab.primary.address, "--timeout", "2",
            "--postfix-config", str(postfix.config_dir), "--tls-dir", str(postfix.tls_dir),
            "--state-dir", str(out.parent / "state"), "--ttl", str(dns_lab.ttl),
            "--tsig-key-name", dns_lab.tsig_name, "--tsig-algorithm", dns_lab.tsig_algorithm,
            "--tsig-secret-file", str(dns_lab.tsig_secret_file)]


def test_init_writes_a_config_that_plan_accepts(
        dns_lab: DnsLab, postfix_lab: PostfixLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    tag = secrets.token_hex(3)
    domain, alias, host = f"d{tag}.example.test", f"mx{tag}.example.test", f"smtp{tag}.example.test"
    ec = served_spki(postfix_lab.address, 25, "ecdsa-p256", "smtp")
    dns_lab.update(host, "A", dns_lab.ttl, [postfix_lab.address])
    dns_lab.update(alias, "CNAME", dns_lab.ttl, [f"{host}."])
    dns_lab.update(domain, "MX", dns_lab.ttl, [f"10 {alias}."])
    dns_lab.update(f"_25._tcp.{host}", "TLSA", dns_lab.ttl, [f"3 1 1 {ec}"])
    dns_lab.wait_all(f"_25._tcp.{host}", "TLSA", [f"3 1 1 {ec}"])
    tmp_path.chmod(0o700)
    out = tmp_path / "rollover.yaml"
    capsys.readouterr()
    assert main(init_args(dns_lab, postfix_lab, domain, out)) == 0
    printed = capsys.readouterr()
    text = out.read_text()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    doc = yaml.safe_load(text)
    ep = doc["endpoints"][0]
    assert ep["host"] == host and ep["zone"] == "example.test"  # the CNAME's target
    assert ep["algorithms"] == ["ecdsa-p256", "rsa2048"]
    assert doc["providers"]["dns"]["server"] == dns_lab.primary.address  # SOA MNAME
    assert doc["installers"]["postfix"]["directory"] == str(postfix_lab.tls_dir.resolve())
    assert f"# MX 10 {alias} (a CNAME for {host}" in text
    for srv in dns_lab.servers:
        assert f"{srv.name.rstrip('.')} {srv.address}" in text
    assert f"ecdsa-p256: presents 3 1 1 {ec[:16]}… (matches the published TLSA)" in text
    assert "rsa2048: presents 3 1 1" in text and "DOES NOT MATCH the published TLSA" in text
    assert f"smtpd_tls_chain_files = {postfix_lab.chain_files['ecdsa-p256']}" in text  # today
    assert "before `rollover plan`" not in printed.out
    assert f"smtpd_tls_chain_files = {postfix_lab.tls_dir.resolve()}/{host}.ecdsa-p256.pem, " \
        in printed.out
    assert "smtp_tls_security_level = dane" in printed.out
    assert "smtp_dns_support_level = dnssec" in printed.out
    assert "do not match" in printed.err
    assert "PRIVATE" not in printed.out + text

    assert main(["plan", "--config", str(out)]) == 0
    assert not (tmp_path / "state" / "state.json").exists()  # plan changed nothing

    before = out.read_bytes()
    capsys.readouterr()
    assert main(init_args(dns_lab, postfix_lab, domain, out)) == 64
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists; not overwriting it" in err
    assert out.read_bytes() == before


def test_init_bad_input_is_one_line_and_writes_nothing(
        dns_lab: DnsLab, postfix_lab: PostfixLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rollover.yaml"
    args = init_args(dns_lab, postfix_lab, f"nomx{secrets.token_hex(3)}.example.test", out)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no MX records" in err and not out.exists()
    bad = init_args(dns_lab, postfix_lab, "example.test", out)
    bad[bad.index("--postfix-config") + 1] = str(tmp_path / "no-such-dir")
    assert main(bad) == 78
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "postconf -c" in err and not out.exists()


def test_init_for_exim_and_dovecot_reads_their_tls_settings(
        dns_lab: DnsLab, exim_lab: EximLab, dovecot_lab: DovecotLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    tag = secrets.token_hex(3)
    for mta, address, conf, tls_dir, port in (
            ("exim", exim_lab.address, exim_lab.config, exim_lab.tls_dir, 25),
            ("dovecot", dovecot_lab.address, dovecot_lab.config, dovecot_lab.tls_dir, 993)):
        domain, host = f"{mta}{tag}.example.test", f"mx-{mta}{tag}.example.test"
        dns_lab.update(host, "A", dns_lab.ttl, [address])
        dns_lab.update(domain, "MX", dns_lab.ttl, [f"5 {host}."])
        mx = frozenset({f"5 {host}."})
        wait_for(lambda d=domain, mx=mx: all(dns_lab.query(s, d, "MX").records == mx
                                             for s in dns_lab.servers), 10, f"MX of {domain}")
        out = tmp_path / f"{mta}.yaml"
        capsys.readouterr()
        assert main(["init", "--domain", domain, "--output", str(out), "--mta", mta,
                     f"--{mta}-config", str(conf), "--tls-dir", str(tls_dir),
                     "--resolver", dns_lab.primary.address, "--timeout", "2",
                     "--state-dir", str(tmp_path / "state")]) == 0
        printed = capsys.readouterr().out
        assert f"before `rollover plan`, fix:\n{out}:" in printed  # no TSIG given
        assert "needs tsig_key_name and tsig_secret_file" in printed
        text = out.read_text()
        ep = yaml.safe_load(text)["endpoints"][0]
        assert (ep["host"], ep["port"], ep["installer"]) == (host, port, mta)
        assert ep["algorithms"] == ["ecdsa-p256", "rsa2048"]  # both seen on the wire
        assert "no TLSA records yet" in text
        files = [f"{tls_dir.resolve()}/{host}.{a}.pem" for a in ("ecdsa-p256", "rsa2048")]
        if mta == "exim":
            assert "#   tls_certificate = " + str(exim_lab.chain_files["ecdsa-p256"]) in text
            assert f"tls_certificate = {files[0]} : {files[1]}" in printed
            assert "dns_dnssec_ok = 1" in printed and "hosts_try_dane = *" in printed
        else:
            assert f"#   ssl_alt_cert = <{dovecot_lab.chain_files['rsa2048']}" in text
            assert f"ssl_cert = <{files[0]}" in printed
            assert f"ssl_alt_key = <{files[1]}" in printed
        doc = yaml.safe_load(text)
        doc["providers"]["dns"].update(tsig_key_name=dns_lab.tsig_name,
                                       tsig_secret_file=str(dns_lab.tsig_secret_file))
        out.write_text(yaml.safe_dump(doc))
        assert main(["plan", "--config", str(out)]) == 0


def test_init_manages_only_the_mx_hosts_this_machine_serves(
        dns_lab: DnsLab, postfix_lab: PostfixLab, exim_lab: EximLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    tag = secrets.token_hex(3)
    domain = f"two{tag}.example.test"
    pf, ex = f"pf{tag}.example.test", f"ex{tag}.example.test"
    dns_lab.update(pf, "A", dns_lab.ttl, [postfix_lab.address])
    dns_lab.update(ex, "A", dns_lab.ttl, [exim_lab.address])
    dns_lab.update(domain, "MX", dns_lab.ttl, [f"10 {pf}.", f"20 {ex}."])
    mx = frozenset({f"10 {pf}.", f"20 {ex}."})
    wait_for(lambda: all(dns_lab.query(s, domain, "MX").records == mx for s in dns_lab.servers),
             10, f"MX of {domain}")
    out = tmp_path / "exim.yaml"
    base = ["init", "--domain", domain, "--output", str(out), "--mta", "exim",
            "--tls-dir", str(exim_lab.tls_dir), "--resolver", dns_lab.primary.address,
            "--timeout", "2"]
    assert main([*base, "--host", "nowhere.example.test"]) == 64
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"not an MX host of {domain}" in err and not out.exists()
    assert main([*base, "--host", ex]) == 0
    text = out.read_text()
    eps = yaml.safe_load(text)["endpoints"]
    assert [e["host"] for e in eps] == [ex]
    assert f"# MX 10 {pf}: not managed here" in text
    assert f"{exim_lab.address} ecdsa-p256: presents" in text
    assert postfix_lab.address not in text  # the other machine was not probed
