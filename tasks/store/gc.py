"""Garbage collection of the artifact root. No Luigi, no TensorFlow.

Kept: the artifacts of the last N recorded runs of each pipeline (``runs/<name>.jsonl``), the freeze artifact
of every published version, everything a live lease names (runs in progress), and every artifact those read,
transitively (manifest ``upstream`` keys). Removed: every other artifact directory, stale temporary build
directories, and feature-cache packs no kept bottleneck artifact used (not while a run holds a lease: its
new packs are not recorded yet). Published versions are never removed. A bucket root has its own
(tasks/store/bucket_gc.py): the same policy over one listing of the root.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tasks.store import artifacts as store
from tasks.store.layout import PUBLISH_RECORD_FILE, PUBLISHED_DIR, stage_dirs
from tasks.store.runlog import leased_directories, read_runs, run_names

# Files a cache outside the artifacts no longer needs, given the root and the artifact directories kept.
CacheSweeper = Callable[[Path, set[Path]], list[Path]]


@dataclass
class GcPlan:
    remove: list[Path] = field(default_factory=list)
    kept: int = 0
    packs_skipped_reason: str = ""

    def freed_bytes(self) -> int:
        return sum(size_of(path) for path in self.remove)


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def artifact_index(root: Path) -> dict[str, Path]:
    """Artifact key -> its directory, over every finished artifact under ``root``."""
    index: dict[str, Path] = {}
    for stage_dir in stage_dirs(root):
        for path in stage_dir.iterdir():
            if path.is_dir() and not path.name.startswith(".") and (path / store.MANIFEST_NAME).is_file():
                index[path.name.rsplit("-", 1)[-1]] = path.resolve()
    return index


def with_upstream(roots: Iterable[Path], index: dict[str, Path]) -> set[Path]:
    """``roots`` and every artifact they read, transitively."""
    kept: set[Path] = set()
    pending = [Path(p).resolve() for p in roots]
    while pending:
        path = pending.pop()
        if path in kept or not path.is_dir():
            continue
        kept.add(path)
        manifest = store.read_manifest(path) or {}
        for role, key in manifest.get("upstream", {}).items():
            if not role.startswith("source:") and key in index:
                pending.append(index[key])
    return kept


def published_freezes(root: Path) -> set[Path]:
    found = set()
    for record in (Path(root) / PUBLISHED_DIR).glob(f"*/*/{PUBLISH_RECORD_FILE}"):
        try:
            found.add(Path(json.loads(record.read_text())["freeze_artifact"]))
        except (OSError, ValueError, KeyError):
            continue
    return found


def by_key(recorded: Iterable[Path], index: dict[str, Path]) -> set[Path]:
    """Recorded artifact folders as they are under this root, found by their key (``<Family>-<key>``): a root
    moved or mounted at another path keeps what its run log and publish records name."""
    return {index.get(Path(path).name.rsplit("-", 1)[-1], Path(path)) for path in recorded}


def plan_gc(root: Path, keep: int, cache_sweepers: Sequence[CacheSweeper] = ()) -> GcPlan:
    """What ``tfpipe gc --keep`` removes; each of ``cache_sweepers`` names the files of its cache no kept
    artifact uses (left alone while a run holds a lease: its new files are not recorded yet)."""
    if keep < 1:
        raise ValueError(f"--keep must be >= 1, got {keep}")
    root = Path(root)
    index = artifact_index(root)
    recent = {Path(d) for name in run_names(root) for run in read_runs(root, name)[-keep:]
              for d in run.get("artifacts", [])}
    leased = leased_directories(root)
    kept = with_upstream(by_key(recent | published_freezes(root) | leased, index), index)
    plan = GcPlan(kept=len(kept))
    plan.remove = sorted(path for path in index.values() if path not in kept)
    for stage_dir in stage_dirs(root):
        plan.remove.extend(sorted(p for p in stage_dir.glob(f"{store.TEMP_PREFIX}*") if store.is_stale_temp(p)))
    if leased:
        plan.packs_skipped_reason = "a run in progress holds a lease: feature-cache packs left alone"
    else:
        for sweep in cache_sweepers:
            plan.remove.extend(sweep(root, kept))
    return plan


def apply_gc(plan: GcPlan) -> None:
    for path in plan.remove:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
