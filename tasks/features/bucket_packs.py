"""The feature cache of a bucket root, shared by every host. No Luigi, no TensorFlow.

On a bucket root (``s3://bucket/prefix``) the packs live on the bucket, at the path they have under a local
root: ``.cache/features/<namespace>/<pack>.features.npy`` and ``<pack>.keys.npy``. A host's `FeatureCache`
reads its mirror's copy (``<mirror>/.cache/features/<namespace>/``), so around an extraction:

- `BucketPacks.fetch`: the namespace's packs on the bucket that the mirror lacks are downloaded (one listing of
  the namespace, then the files), features first and keys last, each to a temporary name renamed into place:
  the mirror counts a pack once its keys file is there, as for a local extraction.
- `BucketPacks.publish`: the packs the extraction used (those it wrote, and any it reused from this host's
  mirror that the bucket no longer holds) are uploaded, features first and keys last: a host counts only packs
  whose keys object exists, so no one reads a half-uploaded pack. The artifact's manifest names them
  (``cache_packs``), and ``tfpipe gc`` keeps what kept artifacts name (`unused_bucket_packs`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.features.cache import FeatureCache
from tasks.features.files import FEATURES_SUFFIX, KEYS_SUFFIX
from tasks.store.bucket_gc import BucketRemoval
from tasks.store.layout import FEATURES_CACHE_DIR

if TYPE_CHECKING:
    from tasks.store.bucket import Bucket, ObjectInfo


def namespace_prefix(namespace: str) -> str:
    """``.cache/features/<namespace>``, relative to the root."""
    return f"{FEATURES_CACHE_DIR}/{namespace}"


class BucketPacks:
    """The feature-cache packs on one bucket; each namespace is listed once per instance (a stage's run)."""

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket
        self._listed: dict[str, dict[str, int]] = {}  # namespace -> {file name: size}

    def files(self, namespace: str) -> dict[str, int]:
        """The namespace's objects on the bucket, by file name, with their sizes."""
        if namespace not in self._listed:
            prefix = namespace_prefix(namespace)
            self._listed[namespace] = {relative[len(prefix) + 1:]: info.size
                                       for relative, info in self.bucket.entries(prefix).items()
                                       if "/" not in relative[len(prefix) + 1:]}
        return self._listed[namespace]

    def packs(self, namespace: str) -> list[str]:
        """The complete packs of ``namespace`` on the bucket (its keys object exists), by name."""
        files = self.files(namespace)
        return sorted(name[: -len(KEYS_SUFFIX)] for name in files
                      if name.endswith(KEYS_SUFFIX) and name[: -len(KEYS_SUFFIX)] + FEATURES_SUFFIX in files)

    def fetch(self, cache: FeatureCache) -> list[str]:
        """Download the packs of ``cache``'s namespace the mirror lacks; returns their names."""
        namespace = cache.directory.name
        have = set(cache.packs())
        files = self.files(namespace)
        fetched = []
        for pack in self.packs(namespace):
            if pack in have:
                continue
            for suffix in (FEATURES_SUFFIX, KEYS_SUFFIX):  # keys last: the pack counts once they are there
                name = f"{pack}{suffix}"
                target = cache.directory / name
                if suffix == KEYS_SUFFIX or not _has_size(target, files[name]):
                    self._download(f"{namespace_prefix(namespace)}/{name}", target, files[name])
            fetched.append(pack)
        if fetched:
            cache.forget_index()
        return fetched

    def publish(self, cache: FeatureCache, packs: Iterable[str]) -> list[str]:
        """Upload those of ``packs`` (complete in ``cache``) the bucket lacks; returns their names."""
        namespace = cache.directory.name
        on_bucket = set(self.packs(namespace))
        files = self.files(namespace)
        uploaded = []
        for pack in sorted(set(packs) - on_bucket):
            for suffix in (FEATURES_SUFFIX, KEYS_SUFFIX):  # keys last: the pack counts once they are there
                local = cache.directory / f"{pack}{suffix}"
                self.bucket.upload(local, f"{namespace_prefix(namespace)}/{pack}{suffix}")
                files[f"{pack}{suffix}"] = local.stat().st_size
            uploaded.append(pack)
        return uploaded

    def _download(self, relative: str, target: Path, size: int) -> None:
        temp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            self.bucket.download(relative, temp)
            if temp.stat().st_size != size:
                raise OSError(f"{self.bucket.url(relative)}: downloaded {temp.stat().st_size} bytes of {size}")
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def unused_bucket_packs(objects: Mapping[str, ObjectInfo], kept: Sequence[Mapping[str, Any]], now: float,
                        grace_s: float) -> list[BucketRemoval]:
    """For ``tfpipe gc`` on a bucket (a `BucketCacheSweeper`): the packs no kept manifest names in
    ``cache_packs`` (keys deleted first), and features without keys older than ``grace_s`` (a killed upload)."""
    used = {pack for manifest in kept for pack in manifest.get("cache_packs", [])}
    packs: dict[str, dict[str, tuple[str, ObjectInfo]]] = {}  # "<namespace>/<pack>" -> {suffix: object}
    for relative, info in objects.items():
        parts = relative.split("/")
        if not relative.startswith(FEATURES_CACHE_DIR + "/") or len(parts) != FEATURES_CACHE_DIR.count("/") + 3:
            continue
        for suffix in (FEATURES_SUFFIX, KEYS_SUFFIX):
            if parts[-1].endswith(suffix):
                packs.setdefault(f"{parts[-2]}/{parts[-1][: -len(suffix)]}", {})[suffix] = (relative, info)
    removals = []
    for pack, found in sorted(packs.items()):
        size = sum(info.size for _, info in found.values())
        if KEYS_SUFFIX in found:
            if pack not in used:
                removals.append(BucketRemoval("feature pack", namespace_prefix(pack), first=[found[KEYS_SUFFIX][0]],
                                              rest=[r for s, (r, _) in found.items() if s != KEYS_SUFFIX], size=size))
        elif now - max(info.modified for _, info in found.values()) >= grace_s:
            removals.append(BucketRemoval("unfinished feature pack", namespace_prefix(pack),
                                          rest=[r for r, _ in found.values()], size=size))
    return removals
