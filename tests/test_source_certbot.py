"""`source: certbot` config (FILE:LINE errors) and the hook's contract without a lab: exit 0 and
one line whatever happens, nothing written when nothing matches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rollover.config.load import load_config
from rollover.errors import ConfigError
from rollover.model import Algorithm, SlotId
from rollover.sources import CertSourceError, NoCertYet
from rollover.sources.certbot import CertbotOptions, CertbotSource

from certgen import make_chain, pem, write_key

HOST = "mail.example.test"
REPO = Path(__file__).resolve().parent.parent


def config(tmp_path: Path, certificate: dict[str, object],
           algorithms: tuple[str, ...] = ("ecdsa-p256",)) -> Path:
    (tmp_path / "resolv.conf").write_text("")
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps({
        "state_dir": str(tmp_path / "state"),
        "resolver": ["127.0.0.1"],
        "providers": {"p": {"type": "rfc2136", "server": "127.0.0.11"}},
        "endpoints": [{"host": HOST, "provider": "p", "algorithms": list(algorithms),
                       "certificate": certificate}],
    }, indent=1))
    return path


def problems(tmp_path: Path, certificate: dict[str, object],
             algorithms: tuple[str, ...] = ("ecdsa-p256",)) -> str:
    path = config(tmp_path, certificate, algorithms)
    with pytest.raises(ConfigError) as err:
        load_config(path, resolv_conf=tmp_path / "resolv.conf")
    return str(err.value)


def test_lineage_name_path_and_per_algorithm(tmp_path: Path) -> None:
    path = config(tmp_path, {"source": "certbot", "lineage": "mx",
                             "certbot_config_dir": str(tmp_path / "le")})
    opts = load_config(path, resolv_conf=tmp_path / "resolv.conf").endpoints[0].certificate
    assert opts is not None and isinstance(opts.options, CertbotOptions)
    assert opts.options.lineages[Algorithm.ECDSA_P256] == tmp_path / "le" / "live" / "mx"
    assert opts.key_paths() == (tmp_path / "le" / "live" / "mx" / "privkey.pem",)
    assert opts.options.serves(str(tmp_path / "le" / "live" / "mx") + "/")
    assert not opts.options.serves(str(tmp_path / "le" / "live" / "other"))
    path = config(tmp_path, {"source": "certbot", "lineage": {
        "ecdsa-p256": "/etc/letsencrypt/live/mx-ec", "rsa2048": "mx-rsa"}},
        ("ecdsa-p256", "rsa2048"))
    opts = load_config(path, resolv_conf=tmp_path / "resolv.conf").endpoints[0].certificate
    assert opts is not None
    assert opts.options.lineages[Algorithm.RSA2048] == Path("/etc/letsencrypt/live/mx-rsa")


def test_bad_lineages_are_refused_with_file_and_line(tmp_path: Path) -> None:
    text = problems(tmp_path, {"source": "certbot"})
    assert "r.yaml:" in text and "lineage: missing (required)" in text
    text = problems(tmp_path, {"source": "certbot", "lineage": "/etc/letsencrypt/archive/mx/x"})
    assert "is not a certbot lineage (CONFIG_DIR/live/NAME)" in text
    text = problems(tmp_path, {"source": "certbot", "lineage": "mx"}, ("ecdsa-p256", "rsa2048"))
    assert "certbot makes one key type per lineage" in text
    text = problems(tmp_path, {"source": "certbot", "lineage": "/srv/le/live/mx",
                               "certbot_config_dir": "/etc/letsencrypt"})
    assert "is not under certbot_config_dir /etc/letsencrypt/live" in text
    text = problems(tmp_path, {"source": "certbot", "lineage": {"ecdsa-p256": "a",
                                                                "rsa2048": "a"}},
                    ("ecdsa-p256", "rsa2048"))
    assert "also the lineage of another algorithm" in text
    text = problems(tmp_path, {"source": "certbot", "lineage": "mx", "reuse_key": True})
    assert "reuse_key" in text and "unknown" in text.lower()


def lineage(tmp_path: Path, versions: int = 2) -> Path:
    """The layout certbot writes (archive versions, relative live/ links), for the reader's
    edge cases; the lab tests read lineages written by certbot itself."""
    archive, live = tmp_path / "le" / "archive" / "mx", tmp_path / "le" / "live" / "mx"
    archive.mkdir(parents=True)
    live.mkdir(parents=True)
    for n in range(1, versions + 1):
        chain = make_chain(sans=(HOST,))
        (archive / f"fullchain{n}.pem").write_bytes(pem(*chain.served()))
        write_key(archive / f"privkey{n}.pem", chain.leaf.key)
    for kind in ("fullchain", "privkey"):
        os.symlink(f"../../archive/mx/{kind}{versions}.pem", live / f"{kind}.pem")
    return live


def source(live: Path) -> CertbotSource:
    return CertbotSource(CertbotOptions({Algorithm.ECDSA_P256: live}, live.parent.parent))


SLOT = SlotId(HOST, 25, Algorithm.ECDSA_P256)


def test_reader_follows_links_to_one_archive_version(tmp_path: Path) -> None:
    live = lineage(tmp_path)
    snap = source(live).latest(SLOT)
    assert snap.chain_pem == (live.parent.parent / "archive/mx/fullchain2.pem").read_bytes()
    with pytest.raises(NoCertYet, match="certbot certonly has not run"):
        source(tmp_path / "le" / "live" / "none").latest(SLOT)
    os.unlink(live / "privkey.pem")  # certbot relinks one file after the other
    os.symlink("../../archive/mx/privkey1.pem", live / "privkey.pem")
    with pytest.raises(CertSourceError, match=r"fullchain\.pem is version 2, privkey\.pem "
                                              r"version 1"):
        source(live).latest(SLOT)
    os.unlink(live / "privkey.pem")
    with pytest.raises(CertSourceError, match=r"is missing \(certbot is updating"):
        source(live).latest(SLOT)


def hook(tmp_path: Path, cfg: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rollover", "certbot-hook", "--config",
                           str(cfg)], env={**os.environ, "PYTHONPATH": str(REPO), **env},
                          capture_output=True, text=True, timeout=30)


def test_hook_outside_certbot_or_for_another_lineage_changes_nothing(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"source": "certbot", "lineage": "mx",
                            "certbot_config_dir": str(tmp_path / "le")})
    done = hook(tmp_path, cfg)
    assert done.returncode == 0 and "RENEWED_LINEAGE is not set" in done.stderr
    done = hook(tmp_path, cfg, RENEWED_LINEAGE=str(tmp_path / "le/live/other"))
    assert done.returncode == 0 and "no endpoint of" in done.stderr
    assert not (tmp_path / "state").exists()
    done = hook(tmp_path, cfg, RENEWED_LINEAGE=str(tmp_path / "le/live/mx"),
                RENEWED_DOMAINS=HOST)
    assert done.returncode == 0 and f"noted for {HOST}" in done.stderr
    note = json.loads((tmp_path / "state/spool/mail.example.test_25.json").read_text())
    assert note["lineage"] == str(tmp_path / "le/live/mx") and note["domains"] == [HOST]
    assert os.stat(tmp_path / "state/spool").st_mode & 0o077 == 0
    done = hook(tmp_path, tmp_path / "missing.yaml", RENEWED_LINEAGE="/x/live/mx")
    assert done.returncode == 0 and len(done.stderr.splitlines()) == 1


def test_the_examples_load(tmp_path: Path) -> None:
    import yaml

    example = yaml.safe_load((REPO / "examples/certbot/endpoint.yaml").read_text())
    (tmp_path / "resolv.conf").write_text("")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "resolver": ["127.0.0.1"],
        "providers": {"primary": {"type": "rfc2136", "server": "127.0.0.11"}},
        "installers": {"postfix": {"type": "postfix", "directory": str(tmp_path)}},
        **example}))
    ep = load_config(path, resolv_conf=tmp_path / "resolv.conf").endpoints[0]
    assert ep.certificate is not None and ep.certificate.source == "certbot"
    renewal = (REPO / "examples/certbot/renewal-NAME.conf").read_text()
    assert "\ndeploy_hook = rollover certbot-hook\n" in renewal
    dropin = (REPO / "examples/certbot/certbot.service.d-rollover.conf").read_text()
    assert "\n[Service]\nExecStartPost=-" in dropin and dropin.rstrip().endswith("rollover run")


def test_hook_with_arguments_it_does_not_know_still_exits_0(
        capsys: pytest.CaptureFixture[str]) -> None:
    from rollover.cli.main import main

    assert main(["certbot-hook", "--no-such-option"]) == 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
