"""Publishing on a bucket root (``s3://bucket/prefix``), and reading what is published there. Plain Python: no
Luigi, no TensorFlow (the Publish stage calls `publish`; ``tfpipe predict`` reads through `read_current`).

An object store has no rename and no symlink, so a version is published in this order, with paths relative to
the root:

1. ``published/<name>/<version>/publish.json`` is *created* (``If-None-Match: *``): creating it claims the
   number (two publishers racing for one number: one gets it, the other takes the next). The record holds the
   version, the gate's metric and value, ``freeze_artifact`` (the freeze artifact on the same root as its
   relative prefix, ``freeze/Freeze-<key>``: what ``tfpipe gc`` keeps), ``published_at``, and ``files``: every
   file of the version with its size and sha256 (``tfpipe predict`` verifies its download by them).
2. The version's files are uploaded: the SavedModel's files at the top (``variables/...``, ``fingerprint.pb``,
   ``assets/...``), ``labels.txt``, ``frozen_graph.pb``, ``frozen_graph.json`` and the publisher's extra files
   (the content keys of the examples the model trained on, ``trained_on_sha256.txt``) beside them, and
   ``saved_model.pb`` **last**: a version is whole once its ``saved_model.pb`` exists, so a server polling
   ``published/<name>/`` (TF Serving's ``model_base_path``) never loads half a model.
3. ``published/<name>/current``, the version in service, is a small JSON object, ``{"version": 3}``, replaced
   only by a conditional write: ``If-Match`` the ETag read with the current version (the one the gate compared
   against), or ``If-None-Match: *`` before the first publish. When another publisher moved it meanwhile, the
   gate is judged again against its new version (the Publish stage fetches each version it compares with into
   the host's cache, tasks/export/fetch_model.py); a version that loses (the gate now
   refuses it, or a newer version is current already) is withdrawn, ``saved_model.pb`` deleted first, so every
   whole version on the bucket was ``current`` once.

A publisher killed between 1 and 3 leaves a version without ``saved_model.pb`` (or a whole one ``current`` never
named): no reader takes it, and the next publisher skips its number.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.export.files import (
    CURRENT_LINK,
    PUBLISH_RECORD_FILE,
    PUBLISHED_FILES,
    SAVED_MODEL_DIR,
    SAVED_MODEL_FILE,
)
from tasks.store.artifacts import sha256_file
from tasks.store.layout import PUBLISHED_DIR

if TYPE_CHECKING:
    from tasks.store.bucket import Bucket

POINTER_FIELD = "version"  # current's one field
FILES_FIELD = "files"  # publish.json on a bucket: {relative path: {"size": bytes, "sha256": hex}}
MAX_CLAIMS = 1000  # version numbers tried past the current one before giving up
MAX_MOVES = 20  # conditional writes of current tried before giving up


# ---- naming -----------------------------------------------------------------------------------------------
def name_prefix(name: str) -> str:
    """``published/<name>``, relative to the root."""
    return f"{PUBLISHED_DIR}/{name}"


def version_prefix(name: str, version: int) -> str:
    return f"{name_prefix(name)}/{version}"


def current_object(name: str) -> str:
    """``published/<name>/current``: the pointer object."""
    return f"{name_prefix(name)}/{CURRENT_LINK}"


def record_object(name: str, version: int) -> str:
    return f"{version_prefix(name, version)}/{PUBLISH_RECORD_FILE}"


# ---- the version's files ------------------------------------------------------------------------------------
def version_files(frozen: Path) -> dict[str, Path]:
    """A published version's files (relative path -> the freeze artifact's file): the SavedModel's files at
    the top, `PUBLISHED_FILES` beside them; as the local publish copies them (publish_task.copy_version)."""
    saved = Path(frozen) / SAVED_MODEL_DIR
    if not (saved / SAVED_MODEL_FILE).is_file():
        raise FileNotFoundError(f"{frozen}: no {SAVED_MODEL_DIR}/{SAVED_MODEL_FILE}: not a freeze artifact")
    files = {path.relative_to(saved).as_posix(): path for path in sorted(saved.rglob("*")) if path.is_file()}
    for name in PUBLISHED_FILES:
        if (Path(frozen) / name).is_file():
            files[name] = Path(frozen) / name
    return files


def upload_order(relatives: Iterable[str]) -> list[str]:
    """``relatives`` sorted, ``saved_model.pb`` last: the file whose presence makes a version whole."""
    return sorted(relatives, key=lambda relative: (relative == SAVED_MODEL_FILE, relative))


def file_entries(files: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    """The record's ``files``: each file's size and sha256."""
    return {relative: {"size": path.stat().st_size, "sha256": sha256_file(path)}
            for relative, path in sorted(files.items())}


# ---- reading ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Current:
    """The version ``current`` names, its ``publish.json``, and the ETag of ``current`` as read."""

    version: int
    record: dict[str, Any]
    tag: str

    @property
    def value(self) -> float:
        return float(self.record["value"])


def pointer_bytes(version: int) -> bytes:
    return json.dumps({POINTER_FIELD: version}).encode("utf-8")


def parse_pointer(data: bytes, where: str) -> int:
    """The version a ``current`` object names; a one-line `ValueError` for anything else."""
    try:
        version = json.loads(data)[POINTER_FIELD]
    except (ValueError, KeyError, TypeError):
        version = None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{where}: not a version pointer (expected {{\"{POINTER_FIELD}\": N}})")
    return version


def read_record(bucket: Bucket, name: str, version: int) -> dict[str, Any] | None:
    """``published/<name>/<version>/publish.json``, or None when there is none."""
    found = bucket.read_with_tag(record_object(name, version))  # one GET (``read`` adds a HEAD first)
    if found is None:
        return None
    data = found[0]
    try:
        record = json.loads(data)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise ValueError(f"{bucket.url(record_object(name, version))}: not a publish record")
    return record


def read_current(bucket: Bucket, name: str) -> Current | None:
    """The version in service of ``name`` and its record (what the gate compares against), or None before the
    first publish."""
    found = bucket.read_with_tag(current_object(name))
    if found is None:
        return None
    data, tag = found
    where = bucket.url(current_object(name))
    version = parse_pointer(data, where)
    record = read_record(bucket, name, version)
    if record is None or "value" not in record:
        raise ValueError(f"{where}: points at version {version}, which has no {PUBLISH_RECORD_FILE} with a value")
    return Current(version, record, tag)


# ---- publishing ---------------------------------------------------------------------------------------------
def publish(bucket: Bucket, name: str, frozen: Path, *, record: Mapping[str, Any],
            judge: Callable[[Current | None], str],
            extra_files: Callable[[int], Mapping[str, Path]] | None = None) -> dict[str, Any]:
    """Publish the freeze artifact at ``frozen`` (this host's copy) as the next version of ``name`` when
    ``judge(the current version, or None)`` returns '' (else its reason is the refusal).

    ``record`` holds the fields of ``publish.json`` besides version, time and files (metric, value,
    freeze_artifact); ``extra_files(version)``, called once the gate lets the model pass (again for another
    number if a racing publisher took that one), names further files of the version (relative path -> this
    host's file). Returns the decision: ``published``, ``published_version`` or
    ``reason``, and the ``current_version`` / ``current_value`` it was judged against.
    """
    current = read_current(bucket, name)
    decision = _judged(current, judge)
    if not decision["published"]:
        return decision
    model_files = version_files(frozen)

    def files_of(version: int) -> dict[str, Path]:
        return {**model_files, **(extra_files(version) if extra_files else {})}

    version, files = claim_version(bucket, name, (current.version if current else 0) + 1, record, files_of)
    upload_version(bucket, name, version, files)
    for _ in range(MAX_MOVES):
        if bucket.replace(current_object(name), pointer_bytes(version), current.tag if current else None):
            return {**decision, "published_version": version}
        current = read_current(bucket, name)  # another publisher moved it: judge against its version
        if current is None:
            decision = _judged(None, judge)
        elif current.version >= version:
            decision = {**_judged(current, lambda _: ""), "published": False,
                        "reason": f"version {current.version} was published meanwhile"}
        else:
            decision = _judged(current, judge)
        if not decision["published"]:
            withdraw_version(bucket, name, version, files)
            return decision
    raise OSError(f"{bucket.url(current_object(name))}: still changing after {MAX_MOVES} conditional writes; "
                  f"version {version} is uploaded but not current")


def _judged(current: Current | None, judge: Callable[[Current | None], str]) -> dict[str, Any]:
    value = current.value if current else None
    reason = judge(current)
    decision: dict[str, Any] = {"current_version": current.version if current else None, "current_value": value,
                                "published": not reason}
    if reason:
        decision["reason"] = reason
    return decision


def claim_version(bucket: Bucket, name: str, first: int, record: Mapping[str, Any],
                  files_of: Callable[[int], dict[str, Path]]) -> tuple[int, dict[str, Path]]:
    """The first free version number from ``first`` on, claimed by creating its ``publish.json`` (which lists the
    version's files, ``files_of(number)``: a model card names its version); the number and its files."""
    for version in range(first, first + MAX_CLAIMS):
        files = files_of(version)
        full = {**record, FILES_FIELD: file_entries(files), "version": version,
                "published_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if bucket.create(record_object(name, version), json.dumps(full, indent=2, sort_keys=True).encode("utf-8")):
            return version, files
    raise OSError(f"{bucket.url(name_prefix(name))}: versions {first} to {first + MAX_CLAIMS - 1} are all taken")


def upload_version(bucket: Bucket, name: str, version: int, files: Mapping[str, Path]) -> None:
    """Every file of the version, ``saved_model.pb`` last."""
    for relative in upload_order(files):
        bucket.upload(files[relative], f"{version_prefix(name, version)}/{relative}")


def withdraw_version(bucket: Bucket, name: str, version: int, files: Mapping[str, Path]) -> None:
    """Remove a version that lost the race for ``current``: ``saved_model.pb`` first (it is no longer whole),
    then its other files and its record (the number may be claimed again)."""
    prefix = version_prefix(name, version)
    bucket.delete([f"{prefix}/{SAVED_MODEL_FILE}"])
    bucket.delete([f"{prefix}/{relative}" for relative in upload_order(files) if relative != SAVED_MODEL_FILE]
                  + [record_object(name, version)])
