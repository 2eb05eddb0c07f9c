"""The run log and the leases of running runs, under the artifact root. No Luigi, no TensorFlow.

- ``<root>/runs/<name>.jsonl``: one JSON line per ``tfpipe run`` of a pipeline (``name`` = the pipeline, or
  its published name): when, the source fingerprints, the stages that ran, the artifact of every stage, the
  evaluation metric, whether it was published. ``tfpipe history`` reads it; ``tfpipe gc`` keeps the
  artifacts of the last N runs of each name.
- ``<root>/.leases/<host>.<pid>.<id>.json``: the artifact directories a run in progress uses. ``gc`` never
  removes what a live lease names (same host and a live pid; another host's lease for a day).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tasks.store.artifacts import host_name, pid_alive
from tasks.store.layout import LEASES_DIR, RUNS_DIR

FOREIGN_LEASE_MAX_AGE_S = 24 * 3600


def append_run(root: Path, name: str, record: dict[str, Any]) -> None:
    """Append one run's record (one line, written with a single ``write`` so concurrent runs don't interleave)."""
    path = Path(root) / RUNS_DIR / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)


def read_runs(root: Path, name: str) -> list[dict[str, Any]]:
    """Every recorded run of ``name``, oldest first; a torn last line (a killed writer) is skipped."""
    path = Path(root) / RUNS_DIR / f"{name}.jsonl"
    if not path.is_file():
        return []
    runs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            runs.append(json.loads(line))
    return runs


def run_names(root: Path) -> list[str]:
    folder = Path(root) / RUNS_DIR
    return sorted(p.stem for p in folder.glob("*.jsonl")) if folder.is_dir() else []


@contextlib.contextmanager
def lease(root: Path, directories: Sequence[Path]) -> Iterator[Path]:
    """Hold a lease on ``directories`` for the duration of a run."""
    folder = Path(root) / LEASES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{host_name()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps({"directories": [str(Path(d).resolve()) for d in directories],
                                "started": time.time()}))
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def leased_directories(root: Path, now: float | None = None) -> set[Path]:
    """The directories live leases name (stale leases of dead local runs are ignored)."""
    folder = Path(root) / LEASES_DIR
    held: set[Path] = set()
    if not folder.is_dir():
        return held
    for path in folder.glob("*.json"):
        parts = path.name.split(".")
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if len(parts) >= 4 and parts[0] == host_name() and parts[1].isdigit():
            if not pid_alive(int(parts[1])):
                continue
        elif (now or time.time()) - float(record.get("started", 0)) > FOREIGN_LEASE_MAX_AGE_S:
            continue
        held.update(Path(d) for d in record.get("directories", []))
    return held
