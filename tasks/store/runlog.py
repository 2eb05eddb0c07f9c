"""The run log and the leases of running runs, under the artifact root. No Luigi, no TensorFlow.

- ``<root>/runs/<name>.jsonl``: one JSON line per ``tfpipe run`` of a pipeline (``name`` = the pipeline, or
  its published name): when, the source fingerprints, the stages that ran, the artifact of every stage, the
  evaluation metric, whether it was published. ``tfpipe history`` reads it; ``tfpipe gc`` keeps the
  artifacts of the last N runs of each name.
- ``<root>/.leases/<host>.<pid>.<id>.json``: the artifact directories a run in progress uses. ``gc`` never
  removes what a live lease names (same host and a live pid; another host's lease for a day).

On a bucket root (``root`` is a `Bucket`) an object cannot be appended to: each run is one object,
``runs/<name>/<time>-<host>-<pid>-<id>.json``, and a lease is ``.leases/<host>.<pid>.<id>.json`` naming the
artifacts' bucket paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.store.artifacts import host_name, pid_alive
from tasks.store.layout import LEASES_DIR, RUNS_DIR

if TYPE_CHECKING:
    from tasks.store.bucket import Bucket

FOREIGN_LEASE_MAX_AGE_S = 24 * 3600


def _run_object(name: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"{RUNS_DIR}/{name}/{stamp}-{host_name()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"


def _lease_name() -> str:
    return f"{host_name()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.json"


def append_run(root: Path | Bucket, name: str, record: dict[str, Any]) -> None:
    """Append one run's record (one line, written with a single ``write`` so concurrent runs don't interleave)."""
    if not isinstance(root, Path | str):
        root.write(_run_object(name), json.dumps(record, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        return
    path = Path(root) / RUNS_DIR / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)


def read_runs(root: Path | Bucket, name: str) -> list[dict[str, Any]]:
    """Every recorded run of ``name``, oldest first; a torn last line (a killed writer) is skipped."""
    if not isinstance(root, Path | str):
        return _read_bucket_runs(root, name)
    path = Path(root) / RUNS_DIR / f"{name}.jsonl"
    if not path.is_file():
        return []
    runs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            runs.append(json.loads(line))
    return runs


def runs_newest_first(root: Path | Bucket, name: str) -> Iterator[dict[str, Any]]:
    """The recorded runs of ``name``, newest first; on a bucket each run's object is read only when reached (a caller
    looking for the last run of some kind reads one or two objects, not the whole history)."""
    if isinstance(root, Path | str):
        yield from reversed(read_runs(root, name))
        return
    for relative in reversed(root.list(f"{RUNS_DIR}/{name}")):
        with contextlib.suppress(ValueError, TypeError):
            yield json.loads(root.read(relative) or b"")


def _read_bucket_runs(bucket: Bucket, name: str) -> list[dict[str, Any]]:
    runs = []
    for relative in bucket.list(f"{RUNS_DIR}/{name}"):  # object names start with the UTC time: sorted = oldest first
        data = bucket.read(relative)
        with contextlib.suppress(ValueError, TypeError):
            runs.append(json.loads(data or b""))
    return runs


def run_names(root: Path | Bucket) -> list[str]:
    if not isinstance(root, Path | str):
        return sorted({relative.split("/")[1] for relative in root.list(RUNS_DIR) if relative.count("/") == 2})
    folder = Path(root) / RUNS_DIR
    return sorted(p.stem for p in folder.glob("*.jsonl")) if folder.is_dir() else []


@contextlib.contextmanager
def lease(root: Path | Bucket, directories: Sequence[Path | str]) -> Iterator[Path | str]:
    """Hold a lease on ``directories`` (on a bucket: artifact paths relative to the root) for a run."""
    if not isinstance(root, Path | str):
        relative = f"{LEASES_DIR}/{_lease_name()}"
        root.write(relative, json.dumps({"directories": [str(d) for d in directories],
                                         "started": time.time()}).encode("utf-8"))
        try:
            yield relative
        finally:
            root.delete([relative])
        return
    folder = Path(root) / LEASES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / _lease_name()
    path.write_text(json.dumps({"directories": [str(Path(d).resolve()) for d in directories],
                                "started": time.time()}))
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def leased_directories(root: Path | Bucket, now: float | None = None) -> set[Path]:
    """The directories live leases name (stale leases of dead local runs are ignored). On a bucket: the
    artifact paths relative to the root, as Paths."""
    if not isinstance(root, Path | str):
        return bucket_leases(root, now)
    folder = Path(root) / LEASES_DIR
    held: set[Path] = set()
    if not folder.is_dir():
        return held
    for path in folder.glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        held.update(_live_lease_directories(path.name, record, now))
    return held


def bucket_leases(bucket: Bucket, now: float | None = None, objects: Sequence[str] | None = None) -> set[Path]:
    """What the live leases on ``bucket`` name; ``objects``: the lease objects, when a listing already found them
    (``tfpipe gc`` lists the whole root once)."""
    held: set[Path] = set()
    for relative in bucket.list(LEASES_DIR) if objects is None else objects:
        try:
            record = json.loads(bucket.read(relative) or b"")
        except ValueError:
            continue
        held.update(_live_lease_directories(relative.rsplit("/", 1)[-1], record, now))
    return held


def _live_lease_directories(name: str, record: dict[str, Any], now: float | None) -> set[Path]:
    """What the lease ``name`` (``<host>.<pid>.<id>.json``) holding ``record`` names, if it is live: a lease of
    this host while its pid runs, another host's for a day."""
    parts = name.split(".")
    if len(parts) >= 4 and parts[0] == host_name() and parts[1].isdigit():
        if not pid_alive(int(parts[1])):
            return set()
    elif (now or time.time()) - float(record.get("started", 0)) > FOREIGN_LEASE_MAX_AGE_S:
        return set()
    return {Path(d) for d in record.get("directories", [])}
