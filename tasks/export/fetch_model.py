"""A model on a bucket root, fetched into this host's cache for ``tfpipe predict``. Plain Python: no Luigi, no
TensorFlow (TensorFlow reads local files).

The URLs taken, with ``<root>`` = ``s3://bucket/prefix``:

- ``<root>/published/<name>`` (or ``<root>/published/<name>/current``): the version ``current`` names;
- ``<root>/published/<name>/<version>``: that version, once whole (its ``saved_model.pb`` is uploaded last);
- ``<root>/<stage>/<Family>-<key>``: an artifact, a freeze artifact for predict (also with its upload folder
  after it, ``<root>/freeze/Freeze-<key>/<upload>``, the ``model:`` URL ``tfpipe run`` prints).

Everything lands in the root's local mirror (tasks/store/opened.py: ``[ArtifactStore] cache``, by default
``$XDG_CACHE_HOME/tfpipe/s3/<bucket>/<prefix>/``). A published version goes to
``published/<name>/<version>/`` there, each file verified against the size and sha256 its ``publish.json``
names (a record without ``files`` is copied as listed, unverified), the record written last; it is reused
without a download while the bucket's record equals the local one and every file has its size. An artifact is
pulled as a stage pulls its inputs (`BucketArtifacts.pull`: verified by its manifest, reused while the
bucket's manifest names the same upload).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.export.files import CURRENT_LINK, PUBLISH_RECORD_FILE, SAVED_MODEL_FILE
from tasks.export.publish_bucket import FILES_FIELD, current_object, read_current, read_record, version_prefix
from tasks.store.artifacts import TEMP_PREFIX, ArtifactIdentity, host_name, sha256_file
from tasks.store.layout import PUBLISHED_DIR
from tasks.store.opened import open_root
from tasks.store.roots import parse_root

if TYPE_CHECKING:
    from tasks.store.bucket import Bucket

# <Family>-<key>: an artifact's folder (tasks/store/artifacts.py: 12 hex digits of sha256)
_ARTIFACT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*-[0-9a-f]{12}$")
TAKEN = ("s3://bucket/prefix/published/<name>[/<version>] or a freeze artifact "
         "s3://bucket/prefix/freeze/Freeze-<key>")


@dataclass(frozen=True)
class ModelUrl:
    """A model URL split: the root's URL, and a published ``name`` (``version`` None: ``current``) or an
    artifact (``stage``, ``folder`` = ``<Family>-<key>``)."""

    url: str
    root: str
    name: str = ""
    version: int | None = None
    stage: str = ""
    folder: str = ""


def is_url(text: str) -> bool:
    """Whether a model argument is a URL rather than a local folder."""
    return "://" in str(text)


def parse_model_url(url: str) -> ModelUrl:
    """Split ``url``; a one-line `ValueError` for a URL that names no model (or is no ``s3://`` URL)."""
    location = parse_root(url)
    if not location.is_bucket:
        raise ValueError(f"{url}: not a bucket URL; give {TAKEN}")
    parts = location.prefix.split("/") if location.prefix else []

    def root(count: int) -> str:
        return "/".join([f"{location.scheme}://{location.bucket}", *parts[:count]])

    n = len(parts)
    if n >= 3 and parts[-3] == PUBLISHED_DIR and parts[-1] == CURRENT_LINK:
        return ModelUrl(location.url, root(n - 3), name=parts[-2])
    if n >= 3 and parts[-3] == PUBLISHED_DIR and parts[-1].isdigit():
        return ModelUrl(location.url, root(n - 3), name=parts[-2], version=int(parts[-1]))
    if n >= 2 and parts[-2] == PUBLISHED_DIR:
        return ModelUrl(location.url, root(n - 2), name=parts[-1])
    if n >= 2 and _ARTIFACT.match(parts[-1]):
        return ModelUrl(location.url, root(n - 2), stage=parts[-2], folder=parts[-1])
    if n >= 3 and _ARTIFACT.match(parts[-2]):
        return ModelUrl(location.url, root(n - 3), stage=parts[-3], folder=parts[-2])
    raise ValueError(f"{location.url}: names no model; give {TAKEN}")


def fetch_model(url: str, cache: str = "", cache_max_gb: float = 50.0) -> Path:
    """This host's folder holding the model ``url`` names, downloaded (and verified) unless the cache holds it.
    ``cache`` and ``cache_max_gb`` are ``[ArtifactStore]``'s (the mirror's folder and bound)."""
    target = parse_model_url(url)
    opened = open_root(target.root, cache, cache_max_gb)
    if opened.artifacts is None:  # parse_model_url takes bucket URLs only
        raise ValueError(f"{url}: not a bucket URL; give {TAKEN}")
    if target.folder:
        family, key = target.folder.rsplit("-", 1)
        return opened.artifacts.pull(ArtifactIdentity(family, target.stage, key, 0, {}, {}))
    bucket = opened.artifacts.bucket
    if target.version is None:
        current = read_current(bucket, target.name)
        if current is None:
            raise FileNotFoundError(f"{target.url}: nothing published under {target.name!r} "
                                    f"(no {bucket.url(current_object(target.name))})")
        version, record = current.version, current.record
    else:
        version = target.version
        found = read_record(bucket, target.name, version)
        if found is None:
            raise FileNotFoundError(f"{target.url}: no such published version "
                                    f"(no {bucket.url(version_prefix(target.name, version))}/{PUBLISH_RECORD_FILE})")
        record = found
    return fetch_published(bucket, target.name, version, record, opened.local)


def fetch_published(bucket: Bucket, name: str, version: int, record: dict[str, Any], mirror: Path) -> Path:
    """Version ``version`` of ``name`` (its ``publish.json`` is ``record``) in the root's local ``mirror``, at
    ``published/<name>/<version>/``: as `fetch_version` keeps or downloads it. The publish gate reads the version
    it compares with through here too."""
    local = Path(mirror) / PUBLISHED_DIR / name / str(version)
    return fetch_version(bucket, version_prefix(name, version), record, local)


def fetch_version(bucket: Bucket, prefix: str, record: dict[str, Any], local: Path) -> Path:
    """The published version at ``prefix`` (its ``publish.json`` is ``record``) in ``local``: kept when it holds
    this very record and every file has its size, else downloaded into a sibling and put in place."""
    files = record.get(FILES_FIELD)
    if _holds(local, record):
        return local
    if not isinstance(files, dict):  # a record without a file list (not written by tfpipe's bucket publish)
        files = {relative[len(prefix) + 1:]: {} for relative in bucket.list(prefix)
                 if relative[len(prefix) + 1:] != PUBLISH_RECORD_FILE}
    local.parent.mkdir(parents=True, exist_ok=True)
    temp = local.parent / f"{TEMP_PREFIX}{local.name}.{host_name()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        # saved_model.pb first: it is uploaded last, so when it is there every other file is
        for relative in sorted(files, key=lambda rel: (rel != SAVED_MODEL_FILE, rel)):
            target = temp / relative
            try:
                bucket.download(f"{prefix}/{relative}", target)
            except FileNotFoundError:
                whole = relative != SAVED_MODEL_FILE
                raise FileNotFoundError(f"{bucket.url(prefix)}: " + (
                    f"{relative} is missing" if whole else
                    f"not a whole version: no {SAVED_MODEL_FILE} (still being uploaded, or withdrawn)")) from None
            entry = files[relative]
            if entry and (target.stat().st_size != entry.get("size") or sha256_file(target) != entry.get("sha256")):
                raise OSError(f"{bucket.url(prefix)}/{relative}: its bytes differ from the sha256 its "
                              f"{PUBLISH_RECORD_FILE} names")
        (temp / PUBLISH_RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
        _put_in_place(temp, local, record)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return local


def _holds(local: Path, record: dict[str, Any]) -> bool:
    """``local`` holds the version ``record`` describes: the same record, every file of its size."""
    try:
        if json.loads((local / PUBLISH_RECORD_FILE).read_text()) != record:
            return False
    except (OSError, ValueError):
        return False
    files = record.get(FILES_FIELD)
    if not isinstance(files, dict):
        return (local / SAVED_MODEL_FILE).is_file()
    try:
        return all((local / rel).stat().st_size == entry["size"] for rel, entry in files.items())
    except (OSError, KeyError, TypeError):
        return False


def _put_in_place(temp: Path, local: Path, record: dict[str, Any]) -> None:
    """Rename ``temp`` to ``local``, replacing a stale copy; another process that put the same version there
    first wins (``temp`` is then removed by the caller)."""
    if local.exists():
        if _holds(local, record):
            return
        doomed = local.with_name(f"{TEMP_PREFIX}replaced-{local.name}.{uuid.uuid4().hex[:8]}")
        try:
            os.rename(local, doomed)
        except FileNotFoundError:
            pass
        else:
            shutil.rmtree(doomed, ignore_errors=True)
    try:
        os.rename(temp, local)
    except OSError:
        if not _holds(local, record):
            raise
