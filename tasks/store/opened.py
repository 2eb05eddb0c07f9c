"""The artifact root a process works on, opened once: a local folder, or a bucket with this host's mirror.
No Luigi (the task module hands it ``[ArtifactStore]``'s values), no TensorFlow; s3fs only for a bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.store.roots import RootLocation, default_cache_dir, parse_root

if TYPE_CHECKING:
    from tasks.store.bucket import Bucket
    from tasks.store.mirror import BucketArtifacts

GIB = 2**30


@dataclass(frozen=True)
class OpenRoot:
    """``local`` is where this host reads and writes files: the root itself, or a bucket root's mirror."""

    location: RootLocation
    local: Path
    artifacts: BucketArtifacts | None = None

    @property
    def bucket(self) -> Bucket | None:
        return None if self.artifacts is None else self.artifacts.bucket

    def place(self, local_path: Path) -> str:
        """Where a file under ``local`` lives for users: itself, or its URL on the bucket."""
        if self.artifacts is None:
            return str(local_path)
        relative = Path(local_path).resolve().relative_to(self.local.resolve()).as_posix()
        return self.artifacts.bucket.url(relative)


_OPENED: dict[tuple[str, str, float], OpenRoot] = {}


def open_root(root: str, cache: str = "", cache_max_gb: float = 50.0) -> OpenRoot:
    """The root ``root`` names (``[ArtifactStore] root``), opened once per process and settings."""
    settings = (root, cache, cache_max_gb)
    if settings not in _OPENED:
        location = parse_root(root)
        if not location.is_bucket:
            _OPENED[settings] = OpenRoot(location, Path(location.path))
        else:
            from tasks.store.bucket import Bucket
            from tasks.store.mirror import BucketArtifacts

            mirror = location.mirror(Path(cache).expanduser() if cache else default_cache_dir())
            artifacts = BucketArtifacts(Bucket(location), mirror, max_bytes=int(cache_max_gb * GIB))
            _OPENED[settings] = OpenRoot(location, mirror, artifacts)
    return _OPENED[settings]


def forget_opened() -> None:
    """Open roots afresh (tests that restart a server or change credentials)."""
    _OPENED.clear()
