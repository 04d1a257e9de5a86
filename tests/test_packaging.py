"""The wheel ships providers/ and hooks/ inside the package, never as top-level modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_has_no_top_level_providers_or_hooks(tmp_path: Path) -> None:
    src = tmp_path / "src"  # build from a copy: a build writes egg-info next to the sources
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info",
                                                             "build", "tests"))
    out = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(out.glob("rollover-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert "providers" not in tops and "hooks" not in tops
    assert "rollover/providers/rfc2136.py" in names
    assert "rollover/providers/base.py" in names
    assert "rollover/hooks/postfix.py" in names
    # every subpackage of rollover/ ships (a package missing from pyproject's list would not)
    for init in sorted((REPO / "rollover").glob("*/__init__.py")):
        assert f"rollover/{init.parent.name}/__init__.py" in names, init
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "rollover = rollover.cli.main:entry" in text
    assert "rfc2136 = rollover.providers.rfc2136:RFC2136Provider" in text
    assert "rollover/sources/files.py" in names and "rollover/config/registry.py" in names
    for group in ("[rollover.providers]", "[rollover.installers]", "[rollover.sources]"):
        assert group in text
    assert "postfix = rollover.hooks.postfix:PostfixInstaller" in text
    assert "acme = rollover.sources.acme:AcmeSource" in text
