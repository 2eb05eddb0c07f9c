"""Whole tfpipe processes on one bucket (SeaweedFS): killed uploads, a server stopped mid-run, racing workers, and
two simulated hosts (own caches, own working directories) sharing only the bucket and a luigid.

Each case runs real pipelines in subprocesses: ``slow`` (the default suite keeps tests/store/test_bucket.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.helpers.processes import luigid

pytestmark = pytest.mark.slow

GENERATE = ("--until", "generate", "--set", "GenerateCaptchas.count=3000")
TFRECORDS = ("--until", "tfrecords", "--set", "GenerateCaptchas.count=200")
TIMEOUT_S = 600


def _host(tmp_path: Path, name: str) -> tuple[Path, dict[str, str]]:
    """A simulated host: its own working directory and its own cache (the bucket's mirror)."""
    home = tmp_path / name
    (home / "work").mkdir(parents=True, exist_ok=True)
    return home / "work", {"XDG_CACHE_HOME": str(home / "cache")}


def _start(server: Any, cwd: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    full = {**os.environ, **server.env, **env, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _run(server: Any, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    process = _start(server, cwd, env, *args)
    out, err = process.communicate(timeout=TIMEOUT_S)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _keys(server: Any, prefix: str) -> list[str]:
    client = server.client()
    keys, token = [], None
    while True:
        page = client.list_objects_v2(Bucket=server.bucket, Prefix=prefix, **({"ContinuationToken": token}
                                                                             if token else {}))
        keys += [item["Key"] for item in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            return keys


def _manifests(server: Any, prefix: str) -> dict[str, dict[str, Any]]:
    import json

    client = server.client()
    found = {}
    for key in _keys(server, prefix):
        if key.endswith("/MANIFEST.json"):
            manifest = json.loads(client.get_object(Bucket=server.bucket, Key=key)["Body"].read())
            found[key[len(prefix):]] = manifest
    return found


def test_a_killed_upload_then_a_rerun_equals_a_clean_run_byte_for_byte(bucket_env: Any, tmp_path: Path) -> None:
    cwd, env = _host(tmp_path, "host")
    killed = _start(bucket_env, cwd, env, "run", "captcha", "--artifacts", f"s3://{bucket_env.bucket}/k", *GENERATE)
    deadline = time.monotonic() + TIMEOUT_S
    while not any("/images/" in key for key in _keys(bucket_env, "k/generate/")):
        assert killed.poll() is None and time.monotonic() < deadline, killed.communicate()
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)  # mid-upload: some images are on the bucket, no manifest
    killed.wait(30)
    assert _manifests(bucket_env, "k/") == {}, "a killed upload counts as nothing"

    rerun = _run(bucket_env, cwd, env, "run", "captcha", "--artifacts", f"s3://{bucket_env.bucket}/k", *GENERATE)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    clean_cwd, clean_env = _host(tmp_path, "clean")
    clean = _run(bucket_env, clean_cwd, clean_env, "run", "captcha", "--artifacts", f"s3://{bucket_env.bucket}/c",
                 *GENERATE)
    assert clean.returncode == 0, clean.stderr[-2000:]
    [(name, after_kill)] = _manifests(bucket_env, "k/").items()
    assert after_kill["files"] == _manifests(bucket_env, "c/")[name]["files"], "same files, same sha256"


def test_a_server_stopped_mid_run_is_one_clear_error_and_a_rerun_after_restart_finishes(bucket_env: Any,
                                                                                       tmp_path: Path) -> None:
    cwd, env = _host(tmp_path, "host")
    root = f"s3://{bucket_env.bucket}/stopped"
    process = _start(bucket_env, cwd, env, "run", "captcha", "--artifacts", root, *TFRECORDS)
    deadline = time.monotonic() + TIMEOUT_S
    while not any(key.endswith("MANIFEST.json") for key in _keys(bucket_env, "stopped/generate/")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    bucket_env.stop()
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    finally:
        bucket_env.start()
    assert process.returncode != 0
    assert bucket_env.endpoint in err and "cannot reach the server" in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    done = _manifests(bucket_env, "stopped/")
    assert "tfrecords" not in {name.split("/")[0] for name in done}, "the stop cut the run short"
    # What committed before the server went away (generate, and decode when it was quicker than the stop) is whole:
    # every file its manifest lists is on the bucket; an upload the stop cut short has no manifest.
    for name, manifest in done.items():
        upload = f"stopped/{name.rsplit('/', 1)[0]}/{manifest['upload']}/"
        assert {upload + relative for relative in manifest["files"]} <= set(_keys(bucket_env, upload)), name
    rerun = _run(bucket_env, cwd, env, "run", "captcha", "--artifacts", root, *TFRECORDS)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert {name.split("/")[0] for name in _manifests(bucket_env, "stopped/")} == {
        "generate", "decode", "imagedirs", "tfrecords"}


def test_two_processes_racing_on_one_task_commit_one_artifact(bucket_env: Any, tmp_path: Path) -> None:
    root = f"s3://{bucket_env.bucket}/race"
    hosts = [_host(tmp_path, f"host{i}") for i in range(2)]
    processes = [_start(bucket_env, cwd, env, "run", "captcha", "--artifacts", root, *GENERATE)
                 for cwd, env in hosts]
    results = [process.communicate(timeout=TIMEOUT_S) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err[-2000:] for _, err in results]
    [(name, manifest)] = _manifests(bucket_env, "race/").items()
    uploads = {key.split("/")[3] for key in _keys(bucket_env, "race/generate/") if not key.endswith("MANIFEST.json")}
    assert uploads == {manifest["upload"]}, "the losing upload is deleted"
    for _, env in hosts:
        mirrored = Path(env["XDG_CACHE_HOME"]) / "tfpipe" / "s3" / bucket_env.bucket / "race" / name
        assert mirrored.read_text(encoding="utf-8").count(manifest["upload"]) == 1


def test_two_hosts_one_luigid_one_bucket_run_every_task_once(bucket_env: Any, tmp_path: Path) -> None:
    root = f"s3://{bucket_env.bucket}/hosts"
    with luigid(tmp_path / "luigid", config=REPO / "luigi.cfg") as url:
        hosts = [_host(tmp_path, f"host{i}") for i in range(2)]
        processes = [_start(bucket_env, cwd, env, "run", "captcha", "--artifacts", root, "--scheduler-url", url,
                            *TFRECORDS) for cwd, env in hosts]
        results = [process.communicate(timeout=TIMEOUT_S) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err[-2000:] for _, err in results]
    manifests = _manifests(bucket_env, "hosts/")
    assert {name.split("/")[0] for name in manifests} == {"generate", "decode", "imagedirs", "tfrecords"}
    for name, manifest in manifests.items():
        folder = "hosts/" + name.rsplit("/", 1)[0] + "/"
        uploads = {key[len(folder):].split("/")[0] for key in _keys(bucket_env, folder)
                   if not key.endswith("MANIFEST.json")}
        assert uploads == {manifest["upload"]}, f"{name} was built more than once: {uploads}"
