"""moto in server mode: a real HTTP server process (`moto_server -H {net}.30 -p PORT`) that
speaks the Route 53 API, for the route53 provider's tests. It is the one non-real part of the
provider tests: Route 53 itself cannot be reached from here, so an emulation of its API stands
in (boto3 is real, the HTTP is real, the DNS answers are not served).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from lab.proc import Daemon, LabError, LoopbackAddresses, lab_net, tcp_open, wait_for

ENV = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-value",
       "AWS_DEFAULT_REGION": "us-east-1"}


def moto_server_binary() -> str | None:
    here = Path(sys.executable).parent / "moto_server"
    return str(here) if here.exists() else shutil.which("moto_server")


class MotoLab:
    def __init__(self, net: str | None = None, port: int = 5030) -> None:
        self.net = net or lab_net()
        self.address = f"{self.net}.30"
        self.port = port
        self.url = f"http://{self.address}:{port}"
        self._daemon: Daemon | None = None
        self._addresses = LoopbackAddresses()
        self.workdir = Path(tempfile.mkdtemp(prefix="rollover-moto-"))

    def start(self) -> None:
        binary = moto_server_binary()
        if binary is None:
            raise LabError("moto_server not found (pip install 'moto[server]')")
        self._addresses.ensure(self.address)
        if tcp_open(self.address, self.port):
            raise LabError(f"{self.address}:{self.port} is busy")
        self._daemon = Daemon("moto", [binary, "-H", self.address, "-p", str(self.port)],
                              self.workdir / "moto.log", env=dict(os.environ, **ENV),
                              cwd=self.workdir)
        self._daemon.start()
        daemon = self._daemon

        def up() -> bool:
            daemon.check_alive()
            return tcp_open(self.address, self.port)

        wait_for(up, 30.0, f"moto_server on {self.url}")

    def stop(self) -> None:
        if self._daemon is not None:
            self._daemon.stop()
            self._daemon = None
        self._addresses.remove_all()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("route53", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"])
