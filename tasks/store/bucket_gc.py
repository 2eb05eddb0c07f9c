"""Garbage collection of a bucket root (``tfpipe gc`` on ``s3://bucket/prefix``). No Luigi, no TensorFlow.

The policy is the local one (tasks/store/gc.py). Kept: the artifacts the last N recorded runs of each name
list (``runs/<name>/*.json``), the freeze artifact of every published version (``published/<name>/<version>/
publish.json``: ``freeze_artifact``, a relative prefix ``freeze/Freeze-<key>`` or a local path), what live
leases name (``.leases/``), and every artifact those read, transitively (manifest ``upstream`` keys).
Removed:

- every other artifact: its ``MANIFEST.json`` and all its upload folders;
- in a kept artifact, every upload folder its manifest does not name (a killed upload, or a commit race's
  loser);
- an artifact folder without a manifest whose newest object is older than ``grace_s`` (a killed upload;
  a younger one may be an upload in progress) and that no lease names;
- what the cache sweepers name (the feature cache's unused packs: tasks/features/bucket_packs.py), unless
  a run holds a lease (its new packs are named by no manifest yet).

``published/``, ``runs/``, ``.leases/`` and anything that is not ``<stage>/<Family>-<key>/...`` are left alone.

Requests: one recursive listing of the root (one request per 1,000 objects); one read per run record kept
(the last N of each name), per lease, per publish record and per kept artifact's manifest; then the deletions,
in batches of 1,000: manifests (and feature-pack keys) first, the files after, so a gc killed halfway leaves
upload folders no manifest names (the next gc sweeps them), never a manifest naming deleted files.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from tasks.store.artifacts import MANIFEST_NAME
from tasks.store.layout import LEASES_DIR, NOT_STAGES, PUBLISH_RECORD_FILE, PUBLISHED_DIR, RUNS_DIR
from tasks.store.mirror import UPLOAD_FIELD
from tasks.store.runlog import bucket_leases

if TYPE_CHECKING:
    from tasks.store.bucket import Bucket, ObjectInfo
    from tasks.store.mirror import BucketArtifacts

# An artifact folder without a manifest (or a feature pack without keys) younger than this may be an upload in
# progress on another host: left for a later gc. ``tfpipe gc --grace-hours`` changes it.
UNFINISHED_GRACE_S = 24 * 3600


@dataclass
class BucketRemoval:
    """Objects that go together: ``first`` are deleted before ``rest`` (a manifest before its files)."""

    what: str  # "artifact", "stray upload", "unfinished upload", "feature pack"
    prefix: str  # relative to the root: an artifact, one of its upload folders, a pack
    first: list[str] = field(default_factory=list)
    rest: list[str] = field(default_factory=list)
    size: int = 0

    @property
    def objects(self) -> list[str]:
        return self.first + self.rest


@dataclass
class BucketGcPlan:
    remove: list[BucketRemoval] = field(default_factory=list)
    kept: int = 0
    packs_skipped_reason: str = ""
    requests: int = 0  # made while planning

    def freed_bytes(self) -> int:
        return sum(removal.size for removal in self.remove)

    def removed_artifacts(self) -> list[str]:
        return [removal.prefix for removal in self.remove if removal.what == "artifact"]


# What a cache outside the artifacts no longer needs, given the root's listing, the manifests of the kept
# artifacts, the time and the grace for unfinished uploads.
BucketCacheSweeper = Callable[[Mapping[str, "ObjectInfo"], Sequence[Mapping[str, Any]], float, float],
                              list[BucketRemoval]]


def artifact_prefix(name: str) -> str | None:
    """``<stage>/<Family>-<key>`` of what a run record, lease or publish record names an artifact by: that
    prefix itself, a local path or a URL ending in it; None for anything else."""
    parts = PurePosixPath(str(name).rstrip("/")).parts
    if len(parts) < 2 or "-" not in parts[-1]:
        return None
    return f"{parts[-2]}/{parts[-1]}"


@dataclass
class _Listing:
    """The root's one listing, sorted by kind."""

    objects: Mapping[str, ObjectInfo]
    artifacts: dict[str, dict[str, ObjectInfo]] = field(default_factory=dict)  # prefix -> {inner path: info}
    runs: dict[str, list[str]] = field(default_factory=dict)  # name -> run objects, oldest first
    leases: list[str] = field(default_factory=list)
    publish_records: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for relative, info in self.objects.items():
            parts = relative.split("/")
            top = parts[0]
            if top == RUNS_DIR and len(parts) == 3:
                self.runs.setdefault(parts[1], []).append(relative)
            elif top == LEASES_DIR and len(parts) == 2:
                self.leases.append(relative)
            elif top == PUBLISHED_DIR and len(parts) == 4 and parts[3] == PUBLISH_RECORD_FILE:
                self.publish_records.append(relative)
            elif top not in NOT_STAGES and not top.startswith(".") and len(parts) >= 3 and "-" in parts[1]:
                self.artifacts.setdefault(f"{top}/{parts[1]}", {})["/".join(parts[2:])] = info
        for objects in self.runs.values():
            objects.sort()  # run objects are named by their UTC time first


def _read_json(bucket: Bucket, relative: str) -> dict[str, Any] | None:
    with contextlib.suppress(ValueError, TypeError):
        value = json.loads(bucket.read(relative) or b"")
        return value if isinstance(value, dict) else None
    return None


def plan_bucket_gc(bucket: Bucket, keep: int, cache_sweepers: Sequence[BucketCacheSweeper] = (), *,
                   grace_s: float = UNFINISHED_GRACE_S, now: float | None = None) -> BucketGcPlan:
    """What ``tfpipe gc --keep`` removes from ``bucket``."""
    if keep < 1:
        raise ValueError(f"--keep must be >= 1, got {keep}")
    with bucket.counting() as made:
        plan = _plan(bucket, keep, cache_sweepers, grace_s, time.time() if now is None else now)
    plan.requests = made[0]
    return plan


def _plan(bucket: Bucket, keep: int, cache_sweepers: Sequence[BucketCacheSweeper], grace_s: float,
          now: float) -> BucketGcPlan:
    listing = _Listing(bucket.entries(""))
    committed = {prefix for prefix, inner in listing.artifacts.items() if MANIFEST_NAME in inner}
    index = {prefix.rsplit("-", 1)[-1]: prefix for prefix in committed}
    recent = [name for runs in listing.runs.values() for relative in runs[-keep:]
              for name in (_read_json(bucket, relative) or {}).get("artifacts", [])]
    published = [(_read_json(bucket, relative) or {}).get("freeze_artifact", "")
                 for relative in listing.publish_records]
    leased = {prefix for name in bucket_leases(bucket, now, listing.leases)
              if (prefix := artifact_prefix(name.as_posix())) is not None}
    roots = {prefix for name in [*recent, *published] if (prefix := artifact_prefix(name)) is not None} | leased

    # Kept: the roots and what they read, transitively; a kept artifact's manifest is read once.
    kept: set[str] = set()
    manifests: dict[str, dict[str, Any] | None] = {}
    pending = sorted(roots)
    while pending:
        prefix = pending.pop()
        if prefix in kept:
            continue
        kept.add(prefix)
        if prefix not in committed:
            continue
        manifest = manifests[prefix] = _read_json(bucket, f"{prefix}/{MANIFEST_NAME}")
        for role, key in (manifest or {}).get("upstream", {}).items():
            if not role.startswith("source:") and key in index:
                pending.append(index[key])

    plan = BucketGcPlan(kept=len(kept & committed))
    for prefix, inner in sorted(listing.artifacts.items()):
        plan.remove.extend(_artifact_removals(prefix, inner, kept=prefix in kept, manifest=manifests.get(prefix),
                                              leased=prefix in leased, now=now, grace_s=grace_s))
    if leased:
        plan.packs_skipped_reason = "a run in progress holds a lease: feature-cache packs left alone"
    else:
        kept_manifests = [m for m in manifests.values() if m is not None]
        for sweep in cache_sweepers:
            plan.remove.extend(sweep(listing.objects, kept_manifests, now, grace_s))
    return plan


def _artifact_removals(prefix: str, inner: Mapping[str, ObjectInfo], *, kept: bool, manifest: dict[str, Any] | None,
                       leased: bool, now: float, grace_s: float) -> list[BucketRemoval]:
    objects = sorted(inner)
    size = sum(info.size for info in inner.values())
    if MANIFEST_NAME not in inner:
        newest = max(info.modified for info in inner.values())
        if leased or now - newest < grace_s:
            return []  # an upload in progress (a run's lease names it, or it is recent)
        return [BucketRemoval("unfinished upload", prefix, rest=[f"{prefix}/{o}" for o in objects], size=size)]
    if not kept:
        return [BucketRemoval("artifact", prefix, first=[f"{prefix}/{MANIFEST_NAME}"],
                              rest=[f"{prefix}/{o}" for o in objects if o != MANIFEST_NAME], size=size)]
    upload = (manifest or {}).get(UPLOAD_FIELD)
    if not upload:
        return []  # a kept artifact whose manifest cannot be read: left whole
    strays: dict[str, BucketRemoval] = {}
    for inner_path in objects:
        folder = inner_path.split("/", 1)[0]
        if inner_path == MANIFEST_NAME or folder == upload:
            continue
        removal = strays.setdefault(folder, BucketRemoval("stray upload", f"{prefix}/{folder}"))
        removal.rest.append(f"{prefix}/{inner_path}")
        removal.size += inner[inner_path].size
    return list(strays.values())


def apply_bucket_gc(plan: BucketGcPlan, bucket: Bucket, artifacts: BucketArtifacts | None = None) -> int:
    """Delete what ``plan`` names (manifests and pack keys first); returns the requests made. A removed
    artifact is forgotten by ``artifacts`` (its memo of committed manifests)."""
    with bucket.counting() as made:
        for batch in ([o for r in plan.remove for o in r.first], [o for r in plan.remove for o in r.rest]):
            bucket.delete(batch)
    if artifacts is not None:
        artifacts.forget(plan.removed_artifacts())
    return made[0]


def described(removals: Iterable[BucketRemoval], bucket: Bucket) -> list[str]:
    """One line per removal: size, URL, what it is."""
    return [f"{removal.size / 2**20:9.1f} MiB  {bucket.url(removal.prefix)} ({removal.what}, "
            f"{len(removal.objects)} object{'s' if len(removal.objects) != 1 else ''})" for removal in removals]
