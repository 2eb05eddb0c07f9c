"""The artifact store: content-keyed directories, atomic commits, manifests. No Luigi in here.

Contract: every task instance owns ``<root>/<stage>/<Family>-<key>/``. The key hashes the
family, its significant parameters, its code version and the keys of the artifacts it reads. A build
happens in a temporary sibling directory that is renamed into place when done; ``MANIFEST.json`` is the
last file written, and only a directory with a valid manifest counts as done.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.store.layout import LOCKS_DIR

MANIFEST_NAME = "MANIFEST.json"  # in every artifact: key, params, upstream keys, its files, the stage's own fields
TEMP_PREFIX = ".tmp-"
MANIFEST_FORMAT = 1
# A temporary directory from another host cannot be checked for a live owner; past this age it is swept.
FOREIGN_TEMP_MAX_AGE_S = 24 * 3600
# Build locks of this host's processes (empty files; ``flock`` is released when its holder dies).


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def artifact_key(family: str, params: Mapping[str, str], version: int, upstream: Mapping[str, str]) -> str:
    """First 12 hex digits of sha256 over the canonical JSON of what identifies an artifact."""
    identity = {"family": family, "params": dict(params), "version": version, "upstream": dict(upstream)}
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:12]


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def list_files(directory: Path) -> list[Path]:
    """Every regular file below ``directory`` (relative paths, sorted), the manifest excluded."""
    files = [p.relative_to(directory) for p in directory.rglob("*") if p.is_file()]
    return sorted(p for p in files if p.as_posix() != MANIFEST_NAME)


def describe_files(directory: Path) -> dict[str, dict[str, Any]]:
    return {
        rel.as_posix(): {"size": (directory / rel).stat().st_size, "sha256": sha256_file(directory / rel)}
        for rel in list_files(directory)
    }


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape output bytes; TensorFlow only if this process imported it."""
    versions = {"python": sys.version.split()[0]}
    for name in ("numpy", "luigi", "cv2", "PIL", "tensorflow", "keras", "captcha"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = str(getattr(module, "__version__", "unknown"))
    return versions


def read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def is_valid_artifact(directory: Path, key: str) -> bool:
    """True when the manifest parses, names this key, and every listed file exists with its size.

    Sizes are checked (cheap ``stat``), hashes are not: completion checks run on every scheduling pass.
    ``verify_artifact`` re-hashes for an audit.
    """
    manifest = read_manifest(directory)
    if not manifest or manifest.get("key") != key or manifest.get("format") != MANIFEST_FORMAT:
        return False
    for rel, entry in manifest.get("files", {}).items():
        try:
            if (directory / rel).stat().st_size != entry["size"]:
                return False
        except (OSError, KeyError, TypeError):
            return False
    return True


def verify_artifact(directory: Path) -> list[str]:
    """Re-hash every file in a finished artifact; returns the problems found (empty when intact)."""
    manifest = read_manifest(directory)
    if manifest is None:
        return [f"{directory}: no readable {MANIFEST_NAME}"]
    problems = []
    for rel, entry in manifest.get("files", {}).items():
        path = directory / rel
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != entry.get("sha256"):
            problems.append(f"{path}: sha256 differs from the manifest")
    return problems


@dataclass(frozen=True)
class ArtifactIdentity:
    family: str
    stage: str
    key: str
    version: int
    params: dict[str, str]
    upstream: dict[str, str]

    def directory(self, root: Path) -> Path:
        return Path(root) / self.stage / f"{self.family}-{self.key}"


def host_name() -> str:
    """This host's name as one path component (dots would split the names built from it)."""
    return socket.gethostname().replace(".", "_").replace("/", "_") or "localhost"


def _temp_dir_name(identity: ArtifactIdentity) -> str:
    return f"{TEMP_PREFIX}{identity.family}-{identity.key}.{host_name()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale_temp(path: Path, now: float | None = None) -> bool:
    """A temporary build directory whose owner is gone (same host, dead pid) or that is very old."""
    parts = path.name[len(TEMP_PREFIX):].split(".")
    if len(parts) < 4 or not parts[-2].isdigit():
        return True
    host, pid = parts[-3], int(parts[-2])
    if host == host_name():
        return not pid_alive(pid)
    age = (now or time.time()) - path.stat().st_mtime
    return age > FOREIGN_TEMP_MAX_AGE_S


def sweep_stale_temps(stage_dir: Path) -> list[Path]:
    """Remove leftover temporary directories of killed builds; returns what was removed."""
    removed: list[Path] = []
    if not stage_dir.is_dir():
        return removed
    for path in stage_dir.glob(f"{TEMP_PREFIX}*"):
        if path.is_dir() and is_stale_temp(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


RESERVED_FIELDS = frozenset({"format", "family", "stage", "key", "version", "params", "upstream", "files",
                             "libraries"})


def write_manifest(directory: Path, identity: ArtifactIdentity, extra: Mapping[str, Any]) -> dict[str, Any]:
    clashing = sorted(RESERVED_FIELDS & set(extra))
    if clashing:
        raise ValueError(f"{identity.family}: manifest fields {clashing} are the store's own; name them otherwise")
    manifest = {
        "format": MANIFEST_FORMAT,
        "family": identity.family,
        "stage": identity.stage,
        "key": identity.key,
        "version": identity.version,
        "params": identity.params,
        "upstream": identity.upstream,
        "files": describe_files(directory),
        "libraries": library_versions(),
        **extra,
    }
    path = directory / MANIFEST_NAME
    with open(path, "w") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    return manifest


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _move_into_place(temp: Path, final: Path, key: str) -> None:
    """Rename ``temp`` to ``final``. A valid artifact already there (another worker won) is kept."""
    if final.exists():
        if is_valid_artifact(final, key):
            shutil.rmtree(temp, ignore_errors=True)
            return
        doomed = final.with_name(f"{TEMP_PREFIX}invalid-{final.name}.{uuid.uuid4().hex[:8]}")
        os.rename(final, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    try:
        os.rename(temp, final)
    except OSError:
        # Another process committed between the check above and this rename (ENOTEMPTY): keep its artifact.
        if not is_valid_artifact(final, key):
            raise
        shutil.rmtree(temp, ignore_errors=True)
        return
    _fsync_directory(final.parent)


@contextlib.contextmanager
def build_lock(root: Path, identity: ArtifactIdentity) -> Iterator[None]:
    """Hold this host's exclusive lock on building one artifact, waiting for a holder to finish.

    Without a central scheduler two tfpipe processes on one root would build the same artifact at once and share
    what lives outside their temporary directories (a download's partial file, a training's work folder).
    Processes on other hosts are not excluded (a central luigid does that); the commit stays safe for them.
    """
    folder = Path(root) / LOCKS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{identity.family}-{identity.key}.lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the file is closed, or its holder dies
        yield


@contextlib.contextmanager
def building(root: Path, identity: ArtifactIdentity) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Yield ``(temp_dir, manifest_extra)``; on clean exit write the manifest and commit atomically.

    The caller fills ``manifest_extra`` (record counts, metrics). On an exception the temporary
    directory is removed and nothing that counts as done is left behind.
    """
    final = identity.directory(root)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(final.parent)
    temp = final.parent / _temp_dir_name(identity)
    temp.mkdir()
    extra: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        yield temp, extra
        extra["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_manifest(temp, identity, extra)
        _move_into_place(temp, final, identity.key)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def find_artifacts(root: Path, stage: str, family: str) -> list[tuple[Path, dict[str, Any]]]:
    """Finished artifacts of one family (any key), newest first: for ``tfpipe explain``."""
    stage_dir = Path(root) / stage
    found = []
    for path in stage_dir.glob(f"{family}-*"):
        manifest = read_manifest(path)
        if manifest and manifest.get("family") == family:
            found.append((path, manifest))
    found.sort(key=lambda item: item[1].get("finished_at", ""), reverse=True)
    return found
