"""Fault injection (issue 13, item 1): for every stage of every pipeline, ``kill -9`` at three points (the build's
start, mid-write, just before the commit) and SIGTERM once mid-stage; then a rerun must finish and rebuild files
equal to an uninterrupted run's (sha256, or by content for the files that carry times: faults/compare.py), with
nothing marked done that was not.

A scenario starts from a copy of the pipeline's reference root without the stage and what follows it, so only
that stage builds; the armed run is the real CLI in a subprocess (tests/reliability/inject.py), and so is the
rerun. The fast subset (CIFAR-10's data stages, one point each) runs in the default suite; the rest is slow.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.store.artifacts import TEMP_PREFIX, is_valid_artifact, verify_artifact
from tests.helpers.http import LoopbackServer
from tests.reliability.conftest import Record
from tests.reliability.faults.compare import compare_trees, sha256
from tests.reliability.faults.pipelines import (
    CODE,
    NO_WRITES,
    PIPELINES,
    STAGES,
    TIMEOUT_S,
    Reference,
    base_env,
    build_reference,
    copy_without,
    downstream,
    mnist_mirror,
    tfpipe_command,
)

POINTS = ("early", "mid_write", "pre_commit", "sigterm")
FAST = {("cifar10", "download", "early"), ("cifar10", "decode", "mid_write"),
        ("cifar10", "imagedirs", "pre_commit"), ("cifar10", "tfrecords", "sigterm")}
DATA_STAGES = STAGES[:4]


def scenarios() -> Iterator[object]:
    for name in PIPELINES:
        for stage in STAGES:
            for point in POINTS:
                if point == "mid_write" and (name, stage) in NO_WRITES:
                    continue
                marks = () if (name, stage, point) in FAST else (pytest.mark.slow,)
                yield pytest.param(name, stage, point, id=f"{name}-{stage}-{point}", marks=marks)


# ---- references, one per pipeline and session --------------------------------------------------------------
@pytest.fixture(scope="session")
def mnist_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A loopback server for mnist's official files (written lazily by the mnist reference)."""
    directory = tmp_path_factory.mktemp("mnist-source")
    (directory / "www").mkdir()
    with LoopbackServer(directory / "www") as server:
        yield server.url, directory


class References:
    """Reference runs made on first use: full ones, or up to tfrecords only (no TensorFlow) for the fast subset."""

    def __init__(self, factory: pytest.TempPathFactory, mnist: tuple[str, Path]) -> None:
        self.factory, self.mnist, self.made = factory, mnist, {}

    def get(self, name: str, until: str = "") -> Reference:
        full = self.made.get((name, ""))
        if full is not None or until == "":
            return full or self._make(name, "")
        return self.made.get((name, until)) or self._make(name, until)

    def _make(self, name: str, until: str) -> Reference:
        pipeline = PIPELINES[name]
        directory = self.mnist[1] if name == "mnist" else self.factory.mktemp(f"{name}-source")
        args = pipeline.make(directory)
        mirror = mnist_mirror(self.mnist[0], directory) if name == "mnist" else None
        reference = build_reference(pipeline, self.factory.mktemp(f"{name}-ref-{until or 'all'}"), args, mirror,
                                    until)
        self.made[(name, until)] = reference
        return reference


@pytest.fixture(scope="session")
def references(tmp_path_factory: pytest.TempPathFactory, mnist_server: tuple[str, Path]) -> References:
    return References(tmp_path_factory, mnist_server)


# ---- one scenario --------------------------------------------------------------------------------------------
@dataclass
class Armed:
    returncode: int
    stderr: str


def run_armed(reference: Reference, root: Path, stage: str, point: str, work: Path) -> Armed:
    """The armed run: dies at ``point`` of ``stage`` (SIGKILL from inside; SIGTERM from here, mid-stage)."""
    directory = reference.pipeline.directory(stage)
    events = reference.events.get(directory, 0)
    env = {**base_env(root, reference.mirror), "TFPIPE_FAULT_STAGE": directory,
           "TFPIPE_FAULT_POINT": "pause" if point == "sigterm" else point,
           "TFPIPE_FAULT_NTH": str((events + 1) // 2), "TFPIPE_FAULT_READY": str(work / "ready"),
           "TFPIPE_FAULT_GO": str(work / "go")}
    command = tfpipe_command("run", reference.pipeline.name, reference.args, root, stage)
    # stderr to a file, not a pipe: pool workers orphaned by the kill hold their copy of it open for ever.
    with open(work / "armed.stderr", "w") as stderr:
        process = subprocess.Popen(command, cwd=CODE, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                   stderr=stderr)
    try:
        if point == "sigterm":
            wait_for(work / "ready", process)
            process.send_signal(signal.SIGTERM)  # `kill PID`: the tfpipe process, mid-stage
        process.wait(timeout=TIMEOUT_S)
    finally:
        stop_group(process)
    return Armed(process.returncode, (work / "armed.stderr").read_text())


def wait_for(path: Path, process: subprocess.Popen, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.poll() is None, f"the run ended (code {process.returncode}) before reaching the stage"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout_s} s"
        time.sleep(0.02)


def stop_group(process: subprocess.Popen) -> None:
    """Kill what is left of the run's own process group, and reap it. A SIGKILLed tfpipe leaves its process-pool
    workers (imagedirs, captcha generation) blocked for ever on their task pipe: see the report."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait(timeout=60)


def done_artifacts(root: Path) -> dict[str, Path]:
    """Every directory under ``root`` that counts as done, by ``stage/name``."""
    found = {}
    for stage_dir in (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in stage_dir.iterdir():
            key = path.name.rpartition("-")[2]
            if path.is_dir() and not path.name.startswith(".") and is_valid_artifact(path, key):
                found[f"{stage_dir.name}/{path.name}"] = path
    return found


def status_lines(reference: Reference, root: Path, stage: str) -> dict[str, str]:
    """``tfpipe status`` of the scenario's root: ``stage -> 'done'|'to-do'``."""
    command = tfpipe_command("status", reference.pipeline.name, reference.args, root, stage)
    shown = subprocess.run(command, cwd=CODE, env=base_env(root, reference.mirror), capture_output=True, text=True,
                           timeout=TIMEOUT_S)
    assert shown.returncode == 0, shown.stderr[-2000:]
    lines = [line.split() for line in shown.stdout.splitlines() if line.startswith(("done", "to-do"))]
    return {parts[1]: parts[0] for parts in lines}


def assert_nothing_falsely_done(reference: Reference, root: Path, stage: str) -> None:
    """After the fault: exactly the copied upstream artifacts count as done, untouched; ``stage`` is to-do."""
    rebuilt = {reference.pipeline.directory(s) for s in downstream(stage)}
    expected = {rel for rel in done_artifacts(reference.root) if rel.split("/")[0] not in rebuilt}
    found = done_artifacts(root)
    assert sorted(found) == sorted(expected), "the killed run left something counted as done, or broke an input"
    for rel, path in found.items():
        assert verify_artifact(path) == [], rel
    status = status_lines(reference, root, stage)  # by stage directory name (captcha's source: generate)
    assert status.get(reference.pipeline.directory(stage)) == "to-do", status
    assert all(state == "done" for name, state in status.items() if name not in rebuilt), status


def assert_rebuilt_as_reference(reference: Reference, root: Path, stage: str) -> None:
    directory = reference.pipeline.directory(stage)
    expected = {rel: p for rel, p in done_artifacts(reference.root).items() if rel.startswith(f"{directory}/")}
    found = {rel: p for rel, p in done_artifacts(root).items() if rel.startswith(f"{directory}/")}
    assert sorted(found) == sorted(expected)
    for rel in expected:
        assert verify_artifact(found[rel]) == [], rel
        problems = compare_trees(expected[rel], found[rel])
        assert problems == [], f"{rel} differs from the uninterrupted run: {problems}"
    leftovers = sorted(p.name for p in (root / directory).glob(f"{TEMP_PREFIX}*"))
    assert leftovers == [], f"temporary directories left after the rerun: {leftovers}"


def run_scenario(reference: Reference, stage: str, point: str, work: Path) -> Armed:
    root = work / "artifacts"
    copy_without(reference, root, stage)
    armed = run_armed(reference, root, stage, point, work)
    if point == "sigterm":
        assert armed.returncode != 0, "SIGTERM mid-stage and the run says it succeeded"
    else:
        assert armed.returncode == -signal.SIGKILL, f"no fault fired ({armed.returncode}): {armed.stderr[-2000:]}"
        assert f"inject: SIGKILL at {point} of {reference.pipeline.directory(stage)}" in armed.stderr
    assert_nothing_falsely_done(reference, root, stage)
    rerun = subprocess.run(tfpipe_command("run", reference.pipeline.name, reference.args, root, stage), cwd=CODE,
                           env=base_env(root, reference.mirror), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert rerun.returncode == 0, f"the rerun failed:\n{rerun.stdout[-2000:]}{rerun.stderr[-3000:]}"
    assert_rebuilt_as_reference(reference, root, stage)
    return armed


@pytest.mark.parametrize(("pipeline", "stage", "point"), list(scenarios()))
def test_fault_then_rerun_rebuilds_the_reference(pipeline: str, stage: str, point: str, references: References,
                                                tmp_path: Path, figures: Record) -> None:
    reference = references.get(pipeline, "tfrecords" if stage in DATA_STAGES else "")
    started = time.monotonic()
    try:
        armed = run_scenario(reference, stage, point, tmp_path)
    except BaseException:
        figures("fault", "lost", pipeline=pipeline, stage=stage, point=point)
        raise
    figures("fault", "survived", pipeline=pipeline, stage=stage, point=point, killed_by=-armed.returncode,
            seconds=round(time.monotonic() - started, 1))


# ---- the environment fails: disk full, read-only root, another file system, the scheduler dies ---------------
def mount_tmpfs(target: Path, size_kib: int) -> None:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(target)],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root and CAP_SYS_ADMIN needed): {done.stderr.strip()}")


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points a test made; unmounted (lazily, if busy) at its end."""
    made: list[Path] = []
    yield made
    for target in reversed(made):
        subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=60)


def tree_kib(path: Path) -> int:
    return sum(-(-p.stat().st_size // 4096) * 4 for p in path.rglob("*") if p.is_file()) + 4 * sum(
        1 for p in path.rglob("*") if p.is_dir())


def rerun(reference: Reference, root: Path, until: str, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess:
    return subprocess.run(tfpipe_command("run", reference.pipeline.name, reference.args, root, until), cwd=CODE,
                          env=env or base_env(root, reference.mirror), capture_output=True, text=True,
                          timeout=TIMEOUT_S)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["decode", "imagedirs", "tfrecords"])
def test_disk_full_fails_clearly_and_a_rerun_after_freeing_space_matches(
        stage: str, references: References, tmp_path: Path, mounts: list[Path], figures: Record) -> None:
    reference = references.get("cifar10", "tfrecords")
    staging = tmp_path / "staging"
    copy_without(reference, staging, stage)
    root = tmp_path / "small"
    # Room for the inputs and a little more: the stage's own output does not fit.
    mount_tmpfs(root, tree_kib(staging) + 64)
    mounts.append(root)
    subprocess.run(["cp", "-a", f"{staging}/.", str(root)], check=True, timeout=120)
    full = rerun(reference, root, stage)
    lost = full.returncode == 0
    try:
        assert full.returncode != 0, "the stage cannot fit, yet the run succeeded"
        assert "No space left on device" in full.stderr, full.stderr[-3000:]
        assert "Traceback" not in full.stderr, full.stderr[-3000:]
        assert_nothing_falsely_done(reference, root, stage)
        assert not list((root / stage).glob(f"{TEMP_PREFIX}*")), "the failed build's temporary dir is left"
        subprocess.run(["mount", "-o", "remount,size=262144k", str(root)], check=True, timeout=60)  # space freed
        again = rerun(reference, root, stage)
        assert again.returncode == 0, again.stderr[-3000:]
        assert_rebuilt_as_reference(reference, root, stage)
    except BaseException:
        figures("fault", "lost", pipeline="cifar10", stage=stage, point="disk_full")
        raise
    figures("fault", "survived" if not lost else "lost", pipeline="cifar10", stage=stage, point="disk_full")


def bind_read_only(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for command in (["mount", "--bind", str(source), str(target)],
                    ["mount", "-o", "remount,bind,ro", str(target)]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            pytest.skip(f"cannot make a read-only bind mount here: {done.stderr.strip()}")


@pytest.mark.slow
@pytest.mark.parametrize("state", ["empty", "half_built", "complete"])
def test_read_only_artifact_root_fails_clearly_and_changes_nothing(
        state: str, references: References, tmp_path: Path, mounts: list[Path], figures: Record) -> None:
    reference = references.get("cifar10", "tfrecords")
    source = tmp_path / "source-root"
    if state == "empty":
        source.mkdir()
    else:
        copy_without(reference, source, "imagedirs" if state == "half_built" else "tfrecords")
        if state == "complete":
            shutil.copytree(reference.root / "tfrecords", source / "tfrecords")
    before = {rel: p for rel, p in done_artifacts(source).items()}
    root = tmp_path / "read-only"
    bind_read_only(source, root)
    mounts.append(root)
    done = rerun(reference, root, "tfrecords")
    try:
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        if state == "complete":
            # Nothing to build: the run may say so, but if it records the run it must say why it cannot.
            assert done.returncode == 0 or "Read-only file system" in done.stderr, done.stderr[-3000:]
        else:
            assert done.returncode != 0, "nothing can be built on a read-only root, yet the run succeeded"
            assert "Read-only file system" in done.stderr, done.stderr[-3000:]
        assert sorted(done_artifacts(root)) == sorted(before)
        for rel, path in before.items():
            assert compare_trees(path, root / rel) == [], rel
    except BaseException:
        figures("fault", "lost", pipeline="cifar10", stage="tfrecords", point=f"read_only_{state}")
        raise
    figures("fault", "survived", pipeline="cifar10", stage="tfrecords", point=f"read_only_{state}")


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["cifar10", "hwdb", "images", "captcha"])
@pytest.mark.parametrize("layout", ["tmpdir_on_tmpfs", "root_on_tmpfs"])
def test_artifact_root_and_temporary_directory_on_different_file_systems(
        pipeline: str, layout: str, references: References, tmp_path: Path, mounts: list[Path],
        figures: Record) -> None:
    """Every data stage built from nothing with TMPDIR and the root on two file systems: same artifacts."""
    reference = references.get(pipeline, "tfrecords")
    tmpfs = tmp_path / "tmpfs"
    mount_tmpfs(tmpfs, 262144)
    mounts.append(tmpfs)
    disk = tmp_path / "disk"
    disk.mkdir()
    root, tmpdir = (disk / "artifacts", tmpfs) if layout == "tmpdir_on_tmpfs" else (tmpfs / "artifacts", disk)
    env = {**base_env(root, reference.mirror), "TMPDIR": str(tmpdir)}
    done = rerun(reference, root, "tfrecords", env)
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        for stage in DATA_STAGES:
            directory = reference.pipeline.directory(stage)
            expected = {r: p for r, p in done_artifacts(reference.root).items() if r.startswith(f"{directory}/")}
            found = {r: p for r, p in done_artifacts(root).items() if r.startswith(f"{directory}/")}
            assert sorted(found) == sorted(expected), stage
            for rel in expected:
                assert compare_trees(expected[rel], found[rel]) == [], rel
    except BaseException:
        figures("fault", "lost", pipeline=pipeline, stage="all", point=layout)
        raise
    figures("fault", "survived", pipeline=pipeline, stage="all", point=layout)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_luigid(port: int, state: Path) -> subprocess.Popen:
    """luigid on 127.0.0.1:``port``, answering within 30 s."""
    import sys
    import urllib.request

    (state / "logs").mkdir(parents=True, exist_ok=True)
    luigid = subprocess.Popen([str(Path(sys.executable).with_name("luigid")), "--address", "127.0.0.1", "--port",
                               str(port), "--state-path", str(state / "luigid.pickle"), "--logdir",
                               str(state / "logs")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/graph", timeout=1).close()
            return luigid
        except OSError:
            assert luigid.poll() is None, f"luigid exited with {luigid.returncode}"
            assert time.monotonic() < deadline, "luigid did not answer in 30 s"
            time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["imagedirs", "train"])
def test_luigid_killed_and_restarted_mid_stage(stage: str, references: References, tmp_path: Path,
                                               figures: Record) -> None:
    """The central scheduler is SIGKILLed while a worker builds ``stage`` and restarted on the same port. Either
    the run finishes, or it fails with a message; a rerun then finishes; the artifact equals the reference."""
    reference = references.get("cifar10", "tfrecords" if stage in DATA_STAGES else "")
    root = tmp_path / "artifacts"
    copy_without(reference, root, stage)
    port = free_port()
    url = ["--scheduler-url", f"http://127.0.0.1:{port}", "--workers", "1"]
    env = {**base_env(root, reference.mirror), "TFPIPE_FAULT_STAGE": stage, "TFPIPE_FAULT_POINT": "pause",
           "TFPIPE_FAULT_NTH": str((reference.events[stage] + 1) // 2),
           "TFPIPE_FAULT_READY": str(tmp_path / "ready"), "TFPIPE_FAULT_GO": str(tmp_path / "go")}
    luigid = start_luigid(port, tmp_path / "luigid")
    with open(tmp_path / "run.out", "w") as out_file, open(tmp_path / "run.err", "w") as err_file:
        run = subprocess.Popen([*tfpipe_command("run", "cifar10", reference.args, root, stage), *url], cwd=CODE,
                               env=env, start_new_session=True, stdout=out_file, stderr=err_file)
    try:
        wait_for(tmp_path / "ready", run)
        stop(luigid)  # SIGKILL: no state saved
        luigid = start_luigid(port, tmp_path / "luigid")
        (tmp_path / "go").touch()
        first = run.wait(timeout=TIMEOUT_S)
        out, err = (tmp_path / "run.out").read_text(), (tmp_path / "run.err").read_text()
        # Whatever the first run did, nothing it left counts as done unless it is right.
        for rel, path in done_artifacts(root).items():
            assert verify_artifact(path) == [], rel
            assert compare_trees(reference.root / rel, path) == [], rel
        if first != 0:
            assert err.strip() or out.strip(), "the run failed without a word"
        again = subprocess.run([*tfpipe_command("run", "cifar10", reference.args, root, stage), *url], cwd=CODE,
                               env=base_env(root, reference.mirror), capture_output=True, text=True,
                               timeout=TIMEOUT_S)
        assert again.returncode == 0, again.stderr[-3000:]
        assert_rebuilt_as_reference(reference, root, stage)
    except BaseException:
        figures("fault", "lost", pipeline="cifar10", stage=stage, point="luigid_restart")
        raise
    finally:
        stop_group(run)
        stop(luigid)
    figures("fault", "survived", pipeline="cifar10", stage=stage, point="luigid_restart", first_run_exit=first)


@pytest.mark.slow
def test_freeze_rebuilt_alone_gives_the_same_saved_model_bytes(references: References, tmp_path: Path) -> None:
    """A freeze rebuilt in a process of its own (after a kill, or any rerun of freeze alone) writes the SavedModel
    of the uninterrupted run byte for byte. The SavedModel records names TensorFlow numbers per process (traced
    functions) and Keras too (seed generators, whose states are also variables): Freeze exports in a fresh,
    seeded process so that they do not depend on what the worker built before."""
    reference = references.get("mnist")
    root = tmp_path / "artifacts"
    copy_without(reference, root, "freeze")
    done = rerun(reference, root, "freeze")
    assert done.returncode == 0, done.stderr[-3000:]
    [expected] = [p for r, p in done_artifacts(reference.root).items() if r.startswith("freeze/")]
    rebuilt = root / "freeze" / expected.name
    for rel in ("saved_model/variables/variables.data-00000-of-00001", "saved_model/saved_model.pb"):
        assert sha256(expected / rel) == sha256(rebuilt / rel), f"{rel}: not byte-reproducible"
