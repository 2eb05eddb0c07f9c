"""Garbage collection of the artifact root. No Luigi, no TensorFlow.

Kept: the artifacts of the last N recorded runs of each pipeline (``runs/<name>.jsonl``), the freeze artifact
of every published version, everything a live lease names (runs in progress), and every artifact those read,
transitively (manifest ``upstream`` keys). Removed: every other artifact directory, stale temporary build
directories, and feature-cache packs no kept bottleneck artifact used (not while a run holds a lease: its
new packs are not recorded yet). Published versions are never removed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tasks import store
from tasks.ops.feature_cache import FEATURES_SUFFIX, KEYS_SUFFIX, cache_root
from tasks.ops.runlog import LEASES_DIR, RUNS_DIR, leased_directories, read_runs, run_names

NOT_STAGES = {RUNS_DIR, LEASES_DIR, ".cache", "published"}


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
    for stage_dir in sorted(p for p in Path(root).iterdir() if p.is_dir() and p.name not in NOT_STAGES):
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
    for record in (Path(root) / "published").glob("*/*/publish.json"):
        try:
            found.add(Path(json.loads(record.read_text())["freeze_artifact"]))
        except (OSError, ValueError, KeyError):
            continue
    return found


def plan_gc(root: Path, keep: int) -> GcPlan:
    if keep < 1:
        raise ValueError(f"--keep must be >= 1, got {keep}")
    root = Path(root)
    index = artifact_index(root)
    recent = {Path(d) for name in run_names(root) for run in read_runs(root, name)[-keep:]
              for d in run.get("artifacts", [])}
    leased = leased_directories(root)
    kept = with_upstream(recent | published_freezes(root) | leased, index)
    plan = GcPlan(kept=len(kept))
    plan.remove = sorted(path for path in index.values() if path not in kept)
    for stage_dir in (p for p in root.iterdir() if p.is_dir() and p.name not in NOT_STAGES):
        plan.remove.extend(sorted(p for p in stage_dir.glob(f"{store.TEMP_PREFIX}*") if store.is_stale_temp(p)))
    if leased:
        plan.packs_skipped_reason = "a run in progress holds a lease: feature-cache packs left alone"
    else:
        plan.remove.extend(unused_packs(root, kept))
    return plan


def unused_packs(root: Path, kept: set[Path]) -> list[Path]:
    used = set()
    for path in kept:
        manifest = store.read_manifest(path) or {}
        used.update(manifest.get("cache_packs", []))
    found = []
    for keys in sorted(cache_root(root).glob(f"*/*{KEYS_SUFFIX}")):
        pack = f"{keys.parent.name}/{keys.name[: -len(KEYS_SUFFIX)]}"
        if pack not in used:
            found.extend([keys, keys.with_name(keys.name[: -len(KEYS_SUFFIX)] + FEATURES_SUFFIX)])
    return [p for p in found if p.exists()]


def apply_gc(plan: GcPlan) -> None:
    for path in plan.remove:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
