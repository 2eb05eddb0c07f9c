"""A content-addressed cache of feature vectors that outlives any one artifact. No Luigi, no TensorFlow.

Entries are keyed by (image content key ``image/sha256``, namespace); a namespace is one backbone digest
with one preprocessing (image shape, augmented view, seed), so a changed backbone file or preprocessing finds
nothing and computes everything, and adding images to a set computes only the new ones.

Layout under ``<artifact root>/.cache/features/<namespace>/``: packs, each a pair of ``.npy`` files written
by one extraction run: ``<pack>.features.npy`` (N, D) float32, then ``<pack>.keys.npy`` (N,) ``S32`` raw
digests. Each file is written to a temporary name and renamed into place, keys last, and a reader only
counts packs whose keys file exists: concurrent workers never see or leave a half-written entry, and two
workers computing the same image write two packs holding the same vector (harmless; ``compact`` keeps one).

On a bucket root the packs are shared through the bucket, at the same path below it (tasks/features/
bucket_packs.py): a host's cache is its mirror's folder, filled from the bucket before an extraction.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.features.files import FEATURES_SUFFIX, KEYS_SUFFIX
from tasks.formats.errors import FormatError
from tasks.store.artifacts import read_manifest
from tasks.store.layout import FEATURES_CACHE_DIR

DIGEST_BYTES = 32


def namespace(backbone_digest: str, preprocessing: dict[str, Any]) -> str:
    """The cache namespace of one backbone and one preprocessing: 16 hex digits of their sha256."""
    text = json.dumps({"backbone": backbone_digest, "preprocessing": preprocessing}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_root(artifact_root: Path) -> Path:
    return Path(artifact_root) / FEATURES_CACHE_DIR


@dataclass
class FeatureCache:
    """The packs of one namespace; ``lookup`` finds cached rows, ``add`` writes a new pack."""

    directory: Path

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self._index: dict[bytes, tuple[str, int]] | None = None
        self._loaded: dict[str, np.ndarray] = {}

    def packs(self) -> list[str]:
        """Names of the complete packs, oldest name first (keys file present)."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name[: -len(KEYS_SUFFIX)] for p in self.directory.glob(f"*{KEYS_SUFFIX}")
                      if not p.name.startswith("."))

    def index(self) -> dict[bytes, tuple[str, int]]:
        """content key -> (pack, row) over every complete pack."""
        if self._index is None:
            self._index = {}
            for pack in self.packs():
                keys = self._read(self.directory / f"{pack}{KEYS_SUFFIX}", np.dtype(f"S{DIGEST_BYTES}"))
                for row, key in enumerate(keys.tolist()):
                    self._index.setdefault(key.ljust(DIGEST_BYTES, b"\0"), (pack, row))
        return self._index

    def forget_index(self) -> None:
        """Read the packs afresh on the next lookup (packs were added from outside: another host's, fetched)."""
        self._index = None

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(found mask (N,), features of the found rows in order, or None when none is found)."""
        index = self.index()
        found = np.asarray([bytes(k).ljust(DIGEST_BYTES, b"\0") in index for k in keys], dtype=bool)
        if not found.any():
            return found, None
        rows = [self._row(*index[bytes(k).ljust(DIGEST_BYTES, b"\0")]) for k, hit in zip(keys, found, strict=True)
                if hit]
        return found, np.stack(rows).astype(np.float32, copy=False)

    def add(self, keys: np.ndarray, features: np.ndarray) -> str | None:
        """Write one pack of ``features`` (N, D) under their content ``keys``; returns its name (None if empty)."""
        keys = np.asarray(keys, dtype=f"S{DIGEST_BYTES}")
        features = np.ascontiguousarray(features, dtype=np.float32)
        if len(keys) != len(features):
            raise ValueError(f"{len(keys)} keys for {len(features)} feature rows")
        if not len(keys):
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        pack = f"pack-{uuid.uuid4().hex}"
        _write_atomically(self.directory / f"{pack}{FEATURES_SUFFIX}", features)
        _write_atomically(self.directory / f"{pack}{KEYS_SUFFIX}", keys)  # last: the pack now counts
        if self._index is not None:
            for row, key in enumerate(keys.tolist()):
                self._index.setdefault(key.ljust(DIGEST_BYTES, b"\0"), (pack, row))
        return pack

    def _row(self, pack: str, row: int) -> np.ndarray:
        if pack not in self._loaded:
            path = self.directory / f"{pack}{FEATURES_SUFFIX}"
            try:
                self._loaded[pack] = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as error:
                raise FormatError(f"unreadable feature pack ({error})", path=path) from error
        return np.asarray(self._loaded[pack][row])

    @staticmethod
    def _read(path: Path, dtype: np.dtype) -> np.ndarray:
        try:
            keys = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise FormatError(f"unreadable feature-cache keys ({error})", path=path) from error
        return keys.astype(dtype, copy=False)


def _write_atomically(path: Path, array: np.ndarray) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(temp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def packs_used(cache: FeatureCache, keys: Iterable[bytes]) -> list[str]:
    """The packs the given content keys were read from (what an artifact records it used, for gc)."""
    index = cache.index()
    return sorted({index[bytes(k).ljust(DIGEST_BYTES, b"\0")][0] for k in keys
                   if bytes(k).ljust(DIGEST_BYTES, b"\0") in index})


def unused_packs(root: Path, kept: set[Path]) -> list[Path]:
    """The packs no artifact in ``kept`` records in its manifest (``cache_packs``): for ``tfpipe gc``."""
    used = set()
    for path in kept:
        manifest = read_manifest(path) or {}
        used.update(manifest.get("cache_packs", []))
    found = []
    for keys in sorted(cache_root(root).glob(f"*/*{KEYS_SUFFIX}")):
        pack = f"{keys.parent.name}/{keys.name[: -len(KEYS_SUFFIX)]}"
        if pack not in used:
            found.extend([keys, keys.with_name(keys.name[: -len(KEYS_SUFFIX)] + FEATURES_SUFFIX)])
    return [p for p in found if p.exists()]
