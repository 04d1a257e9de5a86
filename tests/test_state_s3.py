"""Shared state on S3 against moto in server mode (started here, on the lab net): two hosts never
hold the lease at once, an expired lease is taken over, a lost compare-and-swap is refused."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rollover.clock import FakeClock
from rollover.errors import LockedError
from rollover.state.s3 import S3Location, S3StateStore, StateConflict

from lab.proc import lab_net, wait_for

BUCKET = "rollover-state"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    server = shutil.which("moto_server", path=os.path.dirname(sys.executable))
    if server is None:
        pytest.skip("moto[server] is not installed")
    host = f"{lab_net()}.201"
    port = _free_port(host)
    proc = subprocess.Popen([server, "-H", host, "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://{host}:{port}"

    def up() -> bool:
        with socket.socket() as s:
            return s.connect_ex((host, port)) == 0

    try:
        wait_for(up, 20, "moto_server listening")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def bucket(moto: str) -> Any:
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    names = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
    if BUCKET not in names:
        s3.create_bucket(Bucket=BUCKET)
    return s3


def host(tmp_path: Path, name: str, s3: Any, clock: FakeClock, prefix: str,
         lease: float = 60.0) -> S3StateStore:
    return S3StateStore(tmp_path / name, S3Location(BUCKET, prefix), clock=clock,
                        lease_seconds=lease, holder=name, client=s3)


DOC = {"slots": {}}


def test_second_host_cannot_take_a_live_lease(tmp_path: Path, bucket: Any) -> None:
    clock = FakeClock()
    a = host(tmp_path, "a", bucket, clock, "live/")
    b = host(tmp_path, "b", bucket, clock, "live/")
    with a.lock():
        a.save(DOC)
        with pytest.raises(LockedError, match="holds the lease"), b.lock():
            pass
    with b.lock():  # released: the next host gets it
        assert b.load() is not None


def test_expired_lease_of_a_killed_host_is_taken_over(tmp_path: Path, bucket: Any) -> None:
    clock = FakeClock()
    a = host(tmp_path, "a", bucket, clock, "expired/", lease=30)
    b = host(tmp_path, "b", bucket, clock, "expired/", lease=30)
    lease = a.lock()
    lease.__enter__()  # host a takes the lease and is then "killed": it never releases it
    a.load()
    a.save(DOC)
    clock.advance(31)
    with b.lock():
        assert b.load() == {**DOC, "schema": 1}
        b.save(DOC)
        with pytest.raises(StateConflict, match="took it over"):
            a.save(DOC)  # a wakes up: its lease is gone, it must not write


def test_lost_compare_and_swap_is_refused_then_a_reread_succeeds(tmp_path: Path,
                                                                 bucket: Any) -> None:
    clock = FakeClock()
    a = host(tmp_path, "a", bucket, clock, "cas/")
    with a.lock():
        assert a.load() is None
        a.save(DOC)
        # someone without the lease (an operator's hand, a buggy host) writes the object
        bucket.put_object(Bucket=BUCKET, Key="cas/state.json", Body=b'{"schema": 1, "slots": {}}')
        with pytest.raises(StateConflict, match="changed since it was read"):
            a.save(DOC)
        assert a.load() == {"schema": 1, "slots": {}}  # re-read ...
        a.save(DOC)  # ... and the write goes through


def test_lease_is_renewed_when_half_has_passed(tmp_path: Path, bucket: Any) -> None:
    clock = FakeClock()
    a = host(tmp_path, "a", bucket, clock, "renew/", lease=20)
    b = host(tmp_path, "b", bucket, clock, "renew/", lease=20)
    with a.lock():
        a.load()
        clock.advance(15)
        a.save(DOC)  # renews: 20 s from now
        clock.advance(10)  # 25 s after taking it: would have expired without the renewal
        with pytest.raises(LockedError), b.lock():
            pass
    assert clock.now() > FakeClock().now() + timedelta(seconds=20)
