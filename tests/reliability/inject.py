"""In-subprocess fault injection: ``python -m tests.reliability.inject ARGS...`` runs the real ``tfpipe`` command
(``pipelines.cli.main(ARGS)``) after arming, in this process only, one fault chosen by environment variables.

Nothing here touches product code on disk: the hooks are monkeypatches of this one process.

``TFPIPE_FAULT_STAGE``  the artifact stage (directory name under the root: ``download``, ``generate``, ``decode``...)
``TFPIPE_FAULT_POINT``  what to do in that stage's build:
    ``early``       SIGKILL this process as the build starts (its temporary directory exists, empty);
    ``mid_write``   let write event number ``TFPIPE_FAULT_NTH`` start, SIGKILL once its first bytes are on disk
                    (or at the next write event, or when the build returns, whichever comes first);
    ``pre_commit``  SIGKILL after the build returned and the manifest was written, just before the store's rename;
    ``pause``       at write event ``TFPIPE_FAULT_NTH`` (0: the build's start) create ``TFPIPE_FAULT_READY`` and wait
                    until ``TFPIPE_FAULT_GO`` exists, so the test can signal or disturb the process mid-stage.
``TFPIPE_FAULT_TRACE``  a file: append one JSON line per build of any stage with its number of write events
                        (reference runs use it to choose the middle write event of each stage).
``TFPIPE_FAULT_ROOT``   the artifact root: only writes below it count as the stage's write events.
``TFPIPE_FAULT_MIRROR`` JSON ``{dataset: {role: [url, checksum]}}``: re-point a dataset's official sources (a
                        loopback server of the test), as the pipeline tests do with monkeypatch in-process.

A write event is: opening a file for writing (``open``/``io.open``, so pathlib, zipfile, tarfile, numpy and PIL
writes), opening an HDF5 file for writing (Keras checkpoints and weights), or ``os.replace``/``os.rename``.
Writes by C++ code (TensorBoard's event writer) are not seen; the stages' other outputs are.
"""

from __future__ import annotations

import builtins
import dataclasses
import io
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAIN_PID = os.getpid()
WRITE_MODES = frozenset("wax+")
# Write events are counted across this process and its forked workers (imagedirs and captcha generation write
# their PNGs from a process pool): shared memory, inherited by fork.
EVENTS = multiprocessing.Value("i", 0)


@dataclasses.dataclass
class Fault:
    """The armed fault and its counters (one per process)."""

    stage: str
    point: str
    nth: int
    root: Path | None
    ready: Path | None
    go: Path | None
    trace: Path | None
    active_stage: str = ""  # the stage whose build is running in this process ('' = none)
    pending: bool = False  # mid_write: the chosen write has started; kill at the first sign of its bytes

    @classmethod
    def from_env(cls) -> Fault:
        def path(name: str) -> Path | None:
            value = os.environ.get(name, "")
            return Path(value) if value else None

        return cls(stage=os.environ.get("TFPIPE_FAULT_STAGE", ""), point=os.environ.get("TFPIPE_FAULT_POINT", ""),
                   nth=int(os.environ.get("TFPIPE_FAULT_NTH", "1") or 1), root=path("TFPIPE_FAULT_ROOT"),
                   ready=path("TFPIPE_FAULT_READY"), go=path("TFPIPE_FAULT_GO"), trace=path("TFPIPE_FAULT_TRACE"))

    @property
    def armed(self) -> bool:
        return bool(self.stage and self.point) and self.active_stage == self.stage


FAULT = Fault.from_env()


def die() -> None:
    """SIGKILL the tfpipe process (and this one, if it is a forked child of it): no cleanup of any kind runs."""
    sys.stderr.write(f"inject: SIGKILL at {FAULT.point} of {FAULT.stage} (write event {EVENTS.value})\n")
    sys.stderr.flush()
    os.kill(MAIN_PID, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def pause() -> None:
    """Tell the test we are mid-stage (READY), then wait for it (GO) or for its signal."""
    if FAULT.ready is not None:
        FAULT.ready.write_text(str(os.getpid()))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not (FAULT.go is not None and FAULT.go.exists()):
        time.sleep(0.02)


def _below_root(path: object) -> bool:
    if FAULT.root is None or isinstance(path, int):
        return FAULT.root is None
    try:
        return Path(os.fsdecode(path)).resolve().is_relative_to(FAULT.root.resolve())
    except (TypeError, ValueError, OSError):
        return False


def _watch_bytes(path: Path) -> None:
    """mid_write: kill as soon as the file being written holds any bytes."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if path.stat().st_size > 0:
                die()
        except OSError:
            pass
        time.sleep(0.0005)


def write_event(path: object, *, renamed: bool = False) -> None:
    """Called before each write of the running build: counts it and fires the armed fault at its number."""
    if not FAULT.active_stage or not _below_root(path):
        return
    with EVENTS.get_lock():
        EVENTS.value += 1
        number = EVENTS.value
    if not FAULT.armed:
        return
    if FAULT.pending:
        die()  # the chosen write is over and the build goes on writing: its bytes are on disk
    if FAULT.point == "pause" and number == FAULT.nth:
        pause()
    elif FAULT.point == "mid_write" and number == FAULT.nth:
        FAULT.pending = True
        if not renamed and not isinstance(path, int):
            threading.Thread(target=_watch_bytes, args=(Path(os.fsdecode(path)),), daemon=True).start()


def _after_rename() -> None:
    if FAULT.armed and FAULT.pending:
        die()  # a rename is written all at once


def _is_write_mode(mode: object) -> bool:
    return isinstance(mode, str) and bool(WRITE_MODES & set(mode))


def _hook_open() -> None:
    real_open = io.open

    def open_hook(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if _is_write_mode(mode):
            write_event(file)
        return real_open(file, mode, *args, **kwargs)

    builtins.open = open_hook
    io.open = open_hook


def _hook_renames() -> None:
    for name in ("replace", "rename"):
        real: Callable[..., None] = getattr(os, name)

        def hooked(src: Any, dst: Any, *args: Any, _real: Callable[..., None] = real, **kwargs: Any) -> None:
            write_event(dst, renamed=True)
            _real(src, dst, *args, **kwargs)
            if _below_root(dst):
                _after_rename()

        setattr(os, name, hooked)


def _hook_h5py() -> None:
    """Keras writes checkpoints and weights through h5py's own (C) file driver: count the opening for writing."""
    try:
        import h5py
    except ImportError:
        return
    real_init = h5py.File.__init__

    def init(self: Any, name: Any, mode: str = "r", *args: Any, **kwargs: Any) -> None:
        if _is_write_mode(mode) and not isinstance(name, io.IOBase):
            write_event(name)
        real_init(self, name, mode, *args, **kwargs)

    h5py.File.__init__ = init


def _hook_builds() -> None:
    """Every stage's build runs through ``ArtifactTask.run``: wrap it to know which stage is building."""
    from tasks.store.task import ArtifactTask

    real_run = ArtifactTask.run

    def run(self: ArtifactTask) -> None:
        real_build = self.build

        def build(out_dir: Path) -> dict[str, Any] | None:
            FAULT.active_stage, FAULT.pending = self.stage, False
            EVENTS.value = 0
            if FAULT.armed and FAULT.point == "early":
                die()
            if FAULT.armed and FAULT.point == "pause" and FAULT.nth == 0:
                pause()
            try:
                return real_build(out_dir)
            finally:
                if FAULT.armed and FAULT.pending:
                    die()  # the chosen write was the build's last: its bytes are written by now
                record_trace(self.stage, self.task_family)
                FAULT.active_stage = ""

        self.build = build  # type: ignore[method-assign] - this instance only
        real_run(self)

    ArtifactTask.run = run  # type: ignore[method-assign]


def _hook_commit() -> None:
    """``pre_commit``: the build returned and ``MANIFEST.json`` is written; die before the rename into place."""
    from tasks.store import artifacts as store

    real_move = store._move_into_place

    def move_into_place(temp: Path, final: Path, key: str) -> None:
        if FAULT.point == "pre_commit" and final.parent.name == FAULT.stage:
            if not (temp / store.MANIFEST_NAME).is_file():
                raise AssertionError("inject: the manifest should be written before the commit")
            FAULT.active_stage = FAULT.stage
            die()
        real_move(temp, final, key)

    store._move_into_place = move_into_place


def record_trace(stage: str, family: str) -> None:
    if FAULT.trace is None:
        return
    with FAULT.trace.open("a") as handle:  # a write outside the root: not an event
        handle.write(json.dumps({"stage": stage, "family": family, "events": EVENTS.value}) + "\n")


def mirror_sources() -> None:
    """``TFPIPE_FAULT_MIRROR``: point datasets' official sources at the test's loopback server."""
    text = os.environ.get("TFPIPE_FAULT_MIRROR", "")
    if not text:
        return
    from pipelines.registry import DATASETS

    for name, roles in json.loads(text).items():
        entry = DATASETS[name]
        sources = tuple(dataclasses.replace(src, url=roles[src.role][0], checksum=roles[src.role][1])
                        for src in entry.sources)
        DATASETS[name] = dataclasses.replace(entry, sources=sources)


def arm() -> None:
    _hook_builds()
    _hook_commit()
    _hook_open()
    _hook_renames()
    _hook_h5py()
    mirror_sources()


def main(argv: list[str]) -> int:
    from pipelines import cli

    arm()
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
