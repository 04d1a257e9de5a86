"""fileio: atomic writes with exact modes, private-file checks, one-line secrets."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rollover.errors import ConfigError, StateError
from rollover.fileio import (
    atomic_write,
    check_private,
    create_exclusive,
    is_temp_name,
    read_secret,
    remove_temp_files,
)

SECRET = "c2VjcmV0LWZvci10ZXN0cy1vbmx5"


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "mode"), [(0, 0o600), (0o077, 0o600), (0o022, 0o644), (0, 0o640)])
def test_atomic_write_sets_exactly_the_mode(tmp_path: Path, mask: int, mode: int) -> None:
    path = tmp_path / "f"
    path.write_text("old")
    path.chmod(0o666)
    with umask(mask):
        atomic_write(path, b"new", mode)
    assert path.read_bytes() == b"new"
    assert mode_of(path) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_atomic_write_failure_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("old")
    with pytest.raises(TypeError):
        atomic_write(path, "not bytes", 0o600)  # type: ignore[arg-type]
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_create_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    with umask(0):
        assert create_exclusive(path, b"one", 0o600) is True
    assert mode_of(path) == 0o600
    assert create_exclusive(path, b"two", 0o600) is False
    assert path.read_bytes() == b"one"
    assert [p.name for p in tmp_path.iterdir()] == ["k.pem"]


def test_remove_temp_files(tmp_path: Path) -> None:
    (tmp_path / ".state.json.tmp-abc").write_text("x")
    (tmp_path / "state.json").write_text("{}")
    (tmp_path / ".hidden").write_text("x")
    assert is_temp_name(".state.json.tmp-abc") and not is_temp_name("state.json")
    assert [p.name for p in remove_temp_files(tmp_path)] == [".state.json.tmp-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "state.json"]
    assert remove_temp_files(tmp_path / "missing") == []


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o610])
def test_check_private_refuses_group_or_other(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET)
    path.chmod(mode)
    with pytest.raises(StateError, match=rf"key file .* \(mode {mode:04o}\); run: chmod go-rwx"):
        check_private(path, "key file")
    with pytest.raises(ConfigError):
        check_private(path, "TSIG secret file", ConfigError)


def test_check_private_accepts_0600_and_0400(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET)
    for mode in (0o600, 0o400):
        path.chmod(mode)
        check_private(path, "key file")


def test_read_secret(tmp_path: Path) -> None:
    path = tmp_path / "tsig.key"
    path.write_text(f"  {SECRET}  \n\n")
    path.chmod(0o600)
    assert read_secret(path, "TSIG secret file") == SECRET


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (f"{SECRET}\n", 0o644, "accessible by group/other"),
        (f"{SECRET}\n{SECRET}x\n", 0o600, "must hold the secret on one line"),
        ("\n  \n", 0o600, "is empty"),
        (None, 0o600, "does not exist"),
    ],
)
def test_read_secret_errors_never_show_the_content(
    tmp_path: Path, content: str | None, mode: int, message: str
) -> None:
    path = tmp_path / "tsig.key"
    if content is not None:
        path.write_text(content)
        path.chmod(mode)
    with pytest.raises(ConfigError, match=message) as info:
        read_secret(path, "TSIG secret file")
    assert SECRET not in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_read_secret_not_utf8_and_directory(tmp_path: Path) -> None:
    path = tmp_path / "bin.key"
    path.write_bytes(b"\xff\xfe" + SECRET.encode())
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        read_secret(path, "TSIG secret file")
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="is a directory, not a regular file"):
        read_secret(d, "TSIG secret file")
