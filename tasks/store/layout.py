"""The artifact root's layout: every sub-folder that is not a stage's, declared once. Plain Python.

``<root>/<stage>/<Family>-<key>/`` holds the artifacts (the stage names are the tasks' ``stage``); beside
them live the folders below. A stage never names another one's folder: it imports the constant from here.
"""

from __future__ import annotations

from pathlib import Path

RUNS_DIR = "runs"  # runs/<pipeline>.jsonl: one line per finished run (tasks/store/runlog.py)
LEASES_DIR = ".leases"  # one file per run in progress, naming the artifacts it uses (gc keeps them)
CACHE_DIR = ".cache"  # caches that outlive any one artifact
LOCKS_DIR = f"{CACHE_DIR}/locks"  # per-artifact build locks (tasks/store/artifacts.py)
FEATURES_CACHE_DIR = f"{CACHE_DIR}/features"  # the per-image feature cache (tasks/features/cache.py)
CLUSTER_DIR = ".cluster"  # rendezvous files of distributed training (tasks/training/cluster.py)
PUBLISHED_DIR = "published"  # published/<name>/<version>/ and published/<name>/current (tasks/export)
REPORTS_DIR = "reports"  # reports/<stage>/<Family>-<key>/: what a stage that failed its checks found (datacheck)
DAILY_DIR = "daily"  # daily/<pipeline>/<date>.json: what a scheduled day's run built (pipelines/schedule.py)
# Each published version's record (version, metric, value, its freeze artifact). Written by the publish stage
# (tasks/export/files.py re-exports it); declared here, a lower room, because gc reads it to keep that artifact.
PUBLISH_RECORD_FILE = "publish.json"

# Folders directly under the root that hold no stage's artifacts.
NOT_STAGES = frozenset({RUNS_DIR, LEASES_DIR, CACHE_DIR, CLUSTER_DIR, PUBLISHED_DIR, DAILY_DIR, REPORTS_DIR})


def stage_dirs(root: Path) -> list[Path]:
    """The stage folders under ``root`` (``decode``, ``train``, ...), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name not in NOT_STAGES)
