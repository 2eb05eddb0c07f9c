"""Processes the distributed tests start: free loopback ports, a luigid, tfpipe commands with a TF_CONFIG.

Everything listens on 127.0.0.1, is bounded by a timeout and is killed when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now (held open together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(cluster: dict[str, list[str]], job: str, index: int) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": job, "index": index}})


def tfpipe_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def tfpipe(args: Sequence[str], log: Path, **env: str) -> subprocess.Popen:
    """``python -m pipelines.cli ARGS`` in the background, its stdout and stderr in ``log``."""
    handle = open(log, "w")  # noqa: SIM115 - closed with the process by ``stop``
    process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, env=tfpipe_env(**env),
                               stdout=handle, stderr=subprocess.STDOUT)
    process.log_handle = handle  # type: ignore[attr-defined]
    return process


def finish(process: subprocess.Popen, timeout_s: float) -> int:
    """The exit code, or the process killed and TimeoutError after ``timeout_s``."""
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop(process)
        raise TimeoutError(f"{process.args} still running after {timeout_s} s") from None


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=30)
    process.log_handle.close()  # type: ignore[attr-defined]


@contextlib.contextmanager
def stopped_at_exit(*processes: subprocess.Popen) -> Iterator[list[subprocess.Popen]]:
    running = list(processes)
    try:
        yield running
    finally:
        for process in running:
            stop(process)


@contextlib.contextmanager
def luigid(workdir: Path, config: Path | None = None, timeout_s: float = 30) -> Iterator[str]:
    """A central scheduler on a free loopback port (reading ``config``, e.g. the project's luigi.cfg for its
    [resources]); yields its URL."""
    [port] = free_ports(1)
    (workdir / "luigid-logs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **({"LUIGI_CONFIG_PATH": str(config)} if config else {})}
    process = subprocess.Popen([str(Path(sys.executable).with_name("luigid")), "--address", "127.0.0.1", "--port",
                                str(port), "--state-path", str(workdir / "luigid.pickle"), "--logdir",
                                str(workdir / "luigid-logs")], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/graph", timeout=1).close()
                break
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(f"luigid exited with {process.returncode} before answering") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_answering(process: subprocess.Popen | None, answers: Callable[[], bool], *, what: str, log: Path,
                         timeout_s: float, poll_s: float = 0.2) -> None:
    """Return once ``answers()`` is true; RuntimeError (naming ``log``) if ``process`` exits or ``timeout_s`` passes
    first. The caller stops the process on error."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: see {log}")
        if answers():
            return
        time.sleep(poll_s)
    raise RuntimeError(f"{what} did not answer within {timeout_s} s: see {log}")
