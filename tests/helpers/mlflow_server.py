"""A real MLflow tracking server for the tracking tests: ``mlflow server`` (from the ``mlflow`` package of the test
extra) on 127.0.0.1 and a free port, its backend store a sqlite file and its artifacts a folder, both in a folder
the test gives. Telemetry and the server's job runner are off; start-up is bounded by a timeout, and the server
with every process it started is stopped when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.processes import free_ports, wait_until_answering

START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 15
# For the server and for every client the tests start: no usage reports leave this machine.
NO_TELEMETRY = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def mlflow_binary() -> str | None:
    """The ``mlflow`` command beside this Python (the venv's bin), or on PATH."""
    beside = Path(sys.executable).with_name("mlflow")
    return str(beside) if beside.is_file() else shutil.which("mlflow")


class MlflowServer:
    """``mlflow server`` on loopback; ``url`` is its tracking URI."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.folder / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = mlflow_binary()
        if binary is None:
            raise RuntimeError("no mlflow command: pip install mlflow")
        self.folder.mkdir(parents=True, exist_ok=True)
        [self.port] = free_ports(1)
        command = [binary, "server", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
                   "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1",
                   "--port", str(self.port), "--workers", "1"]
        env = {**os.environ, **NO_TELEMETRY, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with self.log.open("ab") as log:
            # A session of its own: the server's workers are stopped with it, as one process group.
            self.process = subprocess.Popen(command, cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        try:
            wait_until_answering(self.process, self._answers, what="mlflow server",
                                 log=self.log, timeout_s=START_TIMEOUT_S, poll_s=0.3)
        except RuntimeError:
            self.stop()
            raise

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        for signal_number in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal_number)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
                break
            except subprocess.TimeoutExpired:
                continue
        # Workers that outlived the server's own process are in its group too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None


@contextlib.contextmanager
def mlflow_server(folder: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
