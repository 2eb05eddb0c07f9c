"""Artifacts on a bucket, and this host's local mirror of them. No Luigi, no TensorFlow.

An object store has no rename, so a commit there is: upload the built files under a folder of their own,
``<stage>/<Family>-<key>/<upload>/<file>``, then create ``<stage>/<Family>-<key>/MANIFEST.json`` with a
conditional create (``If-None-Match: *``). The manifest is the commit: it names the upload (``upload``) and
every file's size and sha256, and only an artifact whose manifest exists and names its key counts as done.
Of two workers racing to commit one artifact exactly one manifest is created; the other deletes its upload
and adopts the winner's artifact. A killed upload leaves files no manifest names, which ``tfpipe gc``
sweeps.

A stage reads local files (TensorFlow has no ``s3://`` file system here), so before it runs, the artifacts
it reads are pulled into the mirror (``<cache>/s3/<bucket>/<prefix>/<stage>/<Family>-<key>/``), each file
verified against the manifest's sha256, and reused while the bucket's manifest names the same upload. The
mirror is bounded: after a pull, the least recently used artifacts beyond ``max_bytes`` are removed.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.store.artifacts import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    TEMP_PREFIX,
    ArtifactIdentity,
    host_name,
    read_manifest,
    sha256_file,
)
from tasks.store.bucket import Bucket
from tasks.store.layout import NOT_STAGES

UPLOAD_FIELD = "upload"  # manifest field on a bucket: the folder of the artifact holding this commit's files
USED_MARK = ".used"  # in a mirrored artifact: touched when a stage reads it (least recently used goes first)


class NotBuiltError(FileNotFoundError):
    """A stage asked for an artifact the bucket does not hold (yet)."""


@dataclass
class BucketArtifacts:
    """The artifacts of one bucket root, and this host's mirror of them under ``mirror``."""

    bucket: Bucket
    mirror: Path
    max_bytes: int = 50 * 2**30
    # Committed manifests seen by this process: a commit never changes, so one request answers each key once
    # per process (a removed artifact, by ``tfpipe gc``, is forgotten by `forget`).
    committed: dict[str, dict[str, Any]] = field(default_factory=dict)

    # ---- naming ------------------------------------------------------------------------------------------
    @staticmethod
    def prefix(identity: ArtifactIdentity) -> str:
        return f"{identity.stage}/{identity.family}-{identity.key}"

    def url(self, identity: ArtifactIdentity) -> str:
        return self.bucket.url(self.prefix(identity))

    def file_url(self, identity: ArtifactIdentity, manifest: dict[str, Any], relative: str) -> str:
        """The URL of a file a committed artifact's manifest names, relative to the artifact (it may point into
        another artifact, as ``../../evaluate/Evaluate-<key>/report.html`` does): files live in their commit's
        upload folder."""
        prefix = self.prefix(identity)
        target = posixpath.normpath(f"{prefix}/{relative}")
        owner, upload = prefix, manifest[UPLOAD_FIELD]
        if target != prefix and not target.startswith(prefix + "/"):
            owner = "/".join(target.split("/")[:2])
            other = self._read_manifest(owner)
            upload = other[UPLOAD_FIELD] if other else "<not built>"
        inner = target[len(owner):].lstrip("/")
        return self.bucket.url(f"{owner}/{upload}" + (f"/{inner}" if inner else ""))

    # ---- completion: one request ---------------------------------------------------------------------------
    def manifest(self, identity: ArtifactIdentity) -> dict[str, Any] | None:
        """The bucket's manifest of ``identity`` when it is a finished commit of exactly this key, else None."""
        manifest = self._read_manifest(self.prefix(identity))
        return manifest if manifest is not None and manifest.get("key") == identity.key else None

    def _read_manifest(self, prefix: str) -> dict[str, Any] | None:
        """The committed manifest at ``<prefix>/MANIFEST.json`` (remembered once seen), or None."""
        known = self.committed.get(prefix)
        if known is not None:
            return known
        data = self.bucket.read(f"{prefix}/{MANIFEST_NAME}")
        if data is None:
            return None
        try:
            manifest = json.loads(data)
        except ValueError:
            return None
        if (not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT
                or not manifest.get(UPLOAD_FIELD) or prefix.rsplit("-", 1)[-1] != manifest.get("key")):
            return None
        self.committed[prefix] = manifest
        return manifest

    def find(self, stage: str, family: str) -> list[tuple[str, dict[str, Any]]]:
        """The committed artifacts of one family (any key), newest first, as (URL, manifest): for ``tfpipe
        explain``. One listing of ``<stage>/<family>-*``, then one read per manifest not seen yet."""
        found = []
        for relative in self.bucket.entries(stage, starting=f"{family}-"):
            parts = relative.split("/")
            if len(parts) == 3 and parts[2] == MANIFEST_NAME:
                manifest = self._read_manifest(f"{parts[0]}/{parts[1]}")
                if manifest is not None and manifest.get("family") == family:
                    found.append((self.bucket.url(f"{parts[0]}/{parts[1]}"), manifest))
        found.sort(key=lambda item: item[1].get("finished_at", ""), reverse=True)
        return found

    def forget(self, prefixes: list[str]) -> None:
        for prefix in prefixes:
            self.committed.pop(prefix, None)

    # ---- commit --------------------------------------------------------------------------------------------
    def push(self, identity: ArtifactIdentity, local: Path) -> dict[str, Any]:
        """Commit the mirrored build at ``local`` to the bucket; returns the manifest that won (ours, or the one
        another worker committed first, which then replaces ours in the mirror)."""
        manifest = read_manifest(local)
        if manifest is None:
            raise NotBuiltError(f"{local}: no {MANIFEST_NAME} to push")
        upload = f"{host_name()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        prefix = self.prefix(identity)
        pairs = [(local / relative, f"{prefix}/{upload}/{relative}") for relative in sorted(manifest.get("files", {}))]
        uploaded = [relative for _, relative in pairs]
        self.bucket.upload_many(pairs)
        committed = {**manifest, UPLOAD_FIELD: upload}
        if self.bucket.create(f"{prefix}/{MANIFEST_NAME}", _manifest_bytes(committed)):
            _write_manifest(local, committed)
            self.committed[prefix] = committed
            return committed
        self.bucket.delete(uploaded)  # another worker committed first: adopt its artifact
        winner = self.manifest(identity)
        if winner is None:
            raise NotBuiltError(f"{self.url(identity)}: its manifest exists but is not a commit of this key")
        self._download(identity, winner)
        return winner

    # ---- the mirror ----------------------------------------------------------------------------------------
    def pull(self, identity: ArtifactIdentity) -> Path:
        """The artifact in the mirror, downloaded (and verified) unless the mirror holds the bucket's commit."""
        manifest = self.manifest(identity)
        if manifest is None:
            raise NotBuiltError(f"{self.url(identity)}: not built (no {MANIFEST_NAME} for key {identity.key})")
        local = identity.directory(self.mirror)
        held = read_manifest(local)
        if held is None or held.get(UPLOAD_FIELD) != manifest[UPLOAD_FIELD] or not _sizes_match(local, manifest):
            self._download(identity, manifest)
            self.evict(keep={local})
        (local / USED_MARK).touch()
        return local

    def _download(self, identity: ArtifactIdentity, manifest: dict[str, Any]) -> Path:
        final = identity.directory(self.mirror)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.parent / f"{TEMP_PREFIX}{final.name}.{host_name()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        try:
            files = sorted(manifest.get("files", {}).items())
            source = f"{self.prefix(identity)}/{manifest[UPLOAD_FIELD]}"
            self.bucket.download_many([(f"{source}/{relative}", temp / relative) for relative, _ in files])
            for relative, entry in files:
                target = temp / relative
                if target.stat().st_size != entry["size"] or sha256_file(target) != entry["sha256"]:
                    raise OSError(f"{self.url(identity)}/{manifest[UPLOAD_FIELD]}/{relative}: its bytes differ "
                                  f"from the manifest's sha256")
            temp.mkdir(parents=True, exist_ok=True)
            _write_manifest(temp, manifest)
            _replace(temp, final)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        return final

    def evict(self, keep: set[Path]) -> list[Path]:
        """Remove the least recently used mirrored artifacts until the mirror holds at most ``max_bytes``."""
        artifacts = []
        for stage_dir in (p for p in self.mirror.iterdir() if p.is_dir() and p.name not in NOT_STAGES):
            for path in stage_dir.iterdir():
                if path.is_dir() and not path.name.startswith(".") and path not in keep:
                    mark = path / USED_MARK
                    used = mark.stat().st_mtime if mark.exists() else path.stat().st_mtime
                    artifacts.append((used, path, _size(path)))
        total = sum(size for _, _, size in artifacts) + sum(_size(path) for path in keep if path.is_dir())
        removed = []
        for _, path, size in sorted(artifacts):
            if total <= self.max_bytes:
                break
            shutil.rmtree(path, ignore_errors=True)
            total -= size
            removed.append(path)
        return removed


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    temp = directory / f"{MANIFEST_NAME}.{uuid.uuid4().hex[:8]}"
    temp.write_bytes(_manifest_bytes(manifest))
    os.replace(temp, directory / MANIFEST_NAME)


def _sizes_match(directory: Path, manifest: dict[str, Any]) -> bool:
    try:
        return all((directory / rel).stat().st_size == entry["size"] for rel, entry in manifest["files"].items())
    except (OSError, KeyError, TypeError):
        return False


def _replace(temp: Path, final: Path) -> None:
    """Put ``temp`` at ``final``, replacing what is there (a stale or losing copy in the mirror)."""
    if final.exists():
        doomed = final.with_name(f"{TEMP_PREFIX}replaced-{final.name}.{uuid.uuid4().hex[:8]}.{int(time.time())}")
        os.rename(final, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    os.rename(temp, final)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
