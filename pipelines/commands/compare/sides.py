"""What one side of ``tfpipe compare`` knows, as a plain dict: a recorded run (found by its id, or a unique prefix
of it, in every run log under the root) or an evaluate artifact folder. Read through the store: manifests of a
local root's folders, or of a bucket root's commits (their files through this host's verified mirror).

A side (the input of `pipelines.commands.compare.diff.compare_sides`) holds:
``label``, ``kind`` ("run" or "evaluate artifact"), ``run_id``, ``name`` (its run log), ``pipeline``, ``time``,
``exit_code``, ``published``, ``source_location``, ``sources`` ({role: fingerprint}), ``artifacts``
({stage: "Family-key"}), ``gone`` (recorded artifacts no longer under the root, as "stage/Family-key"),
``params`` ({"Family.param": value}, the significant parameters in the manifests), ``data_summary`` (the data
check's, tasks/datacheck/drift.py), ``data_warnings``, ``metrics`` ({name: number}), ``dataset_metric``,
``per_class`` (metrics.json's rows, or None), ``health`` (the model-health warnings, or None when unknown).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from pipelines.commands.compare.diff import ARTIFACT_KIND
from tasks.datacheck.task import DataCheck
from tasks.evaluation.files import METRICS_FILE
from tasks.evaluation.task import Evaluate
from tasks.store.artifacts import MANIFEST_NAME, ArtifactIdentity, read_manifest
from tasks.store.gc import artifact_index
from tasks.store.runlog import read_runs, run_names
from tasks.store.task import opened_root

if TYPE_CHECKING:
    from tasks.store.bucket import Bucket
    from tasks.store.mirror import BucketArtifacts

SOURCE_ROLE = "source:"  # upstream roles naming a file fingerprint rather than an artifact key
MANIFEST_OBJECT_DEPTH = 2  # <stage>/<Family>-<key>/MANIFEST.json: two slashes in a bucket object's name
CANDIDATES_SHOWN = 5  # run ids an error line names at most
Located = tuple[str, dict[str, Any]]  # (where an artifact is: its folder, or its path on the bucket; its manifest)
Record = tuple[str, dict[str, Any]]  # (the run log name, one run's record)


class ArtifactReader(Protocol):
    """Finds the artifacts of one root by what a run record names, or by key, and reads their JSON files."""

    def locate(self, recorded: str) -> Located | None: ...

    def by_key(self, key: str) -> Located | None: ...

    def read_json(self, where: str, name: str) -> Any: ...


def key_of(recorded: str) -> str:
    """``<stage>/<Family>-<key>`` (a folder, or a path on a bucket) -> ``key``."""
    return PurePosixPath(recorded).name.rsplit("-", 1)[-1]


def short_name(recorded: str) -> str:
    """``<stage>/<Family>-<key>`` of a recorded artifact folder (absolute) or bucket path (relative)."""
    parts = PurePosixPath(recorded).parts
    return "/".join(parts[-2:])


def read_json_file(path: Path) -> Any:
    """The file's JSON, or None when it cannot be read (a side then shows what its manifests know)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class LocalArtifacts:
    """Artifacts under a local root, found by key (a root moved since the run was recorded still serves)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._index: dict[str, Path] | None = None

    def index(self) -> dict[str, Path]:
        if self._index is None:
            self._index = artifact_index(self.root) if self.root.is_dir() else {}
        return self._index

    def _at(self, path: Path, key: str) -> Located | None:
        manifest = read_manifest(path)
        return (str(path), manifest) if manifest and manifest.get("key") == key else None

    def locate(self, recorded: str) -> Located | None:
        key = key_of(recorded)
        return self._at(self.index().get(key, Path(recorded)), key)

    def by_key(self, key: str) -> Located | None:
        path = self.index().get(key)
        return None if path is None else self._at(path, key)

    def read_json(self, where: str, name: str) -> Any:
        return read_json_file(Path(where) / name)


def bucket_identity(prefix: str) -> ArtifactIdentity:
    """The identity the store names ``<stage>/<Family>-<key>`` by (only those three parts matter to it)."""
    stage, _, name = prefix.partition("/")
    family, _, key = name.rpartition("-")
    return ArtifactIdentity(family=family, stage=stage, key=key, version=0, params={}, upstream={})


class BucketArtifactReader:
    """Artifacts on a bucket root: committed manifests (one read each), files through this host's mirror."""

    def __init__(self, artifacts: BucketArtifacts) -> None:
        self.artifacts = artifacts
        self._index: dict[str, str] | None = None

    def locate(self, recorded: str) -> Located | None:
        prefix = short_name(recorded)
        manifest = self.artifacts.manifest(bucket_identity(prefix))
        return None if manifest is None else (prefix, manifest)

    def index(self) -> dict[str, str]:
        """Key -> ``<stage>/<Family>-<key>`` of every committed artifact: one listing of the root (as gc makes)."""
        if self._index is None:
            objects = self.artifacts.bucket.entries()
            self._index = {key_of(name.rsplit("/", 1)[0]): name.rsplit("/", 1)[0] for name in objects
                           if name.endswith("/" + MANIFEST_NAME) and name.count("/") == MANIFEST_OBJECT_DEPTH}
        return self._index

    def by_key(self, key: str) -> Located | None:
        prefix = self.index().get(key)
        return None if prefix is None else self.locate(prefix)

    def read_json(self, where: str, name: str) -> Any:
        return read_json_file(self.artifacts.pull(bucket_identity(where)) / name)


# ---- finding what the command line names ---------------------------------------------------------------------
def recorded_runs(holder: Path | Bucket) -> list[Record]:
    """Every recorded run under the root, of every run log name, oldest first within a name."""
    return [(name, record) for name in run_names(holder) for record in read_runs(holder, name)]


def describe_runs(runs: list[Record]) -> str:
    shown = ", ".join(f"{record['run_id']} ({name})" for name, record in runs[:CANDIDATES_SHOWN])
    return shown + (f" and {len(runs) - CANDIDATES_SHOWN} more" if len(runs) > CANDIDATES_SHOWN else "")


def find_run(text: str, runs: list[Record], root: str) -> Record:
    """The run whose id is ``text`` or starts with it; otherwise one line naming the candidates."""
    if not text:
        raise ValueError("compare: an empty run id; give one that `tfpipe history NAME` prints")
    with_ids = [(name, record) for name, record in runs if record.get("run_id")]
    exact = [(name, record) for name, record in with_ids if record["run_id"] == text]
    matches = exact or [(name, record) for name, record in with_ids if record["run_id"].startswith(text)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"compare: run id {text!r} is ambiguous under {root}: it starts {len(matches)} run ids, "
                         f"{describe_runs(matches)}; give more of it")
    if not with_ids:
        raise ValueError(f"compare: no run id {text!r} and no such evaluate artifact folder: no run under {root} "
                         "has an id (`tfpipe run` records one)")
    ids = [record["run_id"] for _, record in with_ids]
    close = set(difflib.get_close_matches(text, ids, n=CANDIDATES_SHOWN, cutoff=0.5))
    near = [(name, record) for name, record in with_ids if record["run_id"] in close]
    hint = f"closest: {describe_runs(near)}" if near else f"the newest: {describe_runs(with_ids[::-1])}"
    raise ValueError(f"compare: no run id {text!r} and no such evaluate artifact folder under {root}; {hint}")


def bucket_artifact_prefix(text: str, bucket: Bucket) -> str | None:
    """``<stage>/<Family>-<key>`` when ``text`` names an artifact on the bucket root (its URL or that path)."""
    root_url = bucket.url("").rstrip("/") + "/"
    relative = text[len(root_url):] if text.startswith(root_url) else text
    parts = relative.strip("/").split("/")
    return "/".join(parts) if len(parts) == MANIFEST_OBJECT_DEPTH and "-" in parts[1] else None


# ---- building a side ----------------------------------------------------------------------------------------
def empty_side(label: str, kind: str) -> dict[str, Any]:
    return {"label": label, "kind": kind, "run_id": None, "name": None, "pipeline": None, "time": None,
            "exit_code": None, "published": None, "source_location": None, "sources": {}, "artifacts": {},
            "gone": [], "params": {}, "data_summary": None, "data_warnings": [], "metrics": {},
            "dataset_metric": None, "per_class": None, "health": None}


def fill_from_manifests(side: dict[str, Any], found: list[Located], reader: ArtifactReader) -> None:
    """Parameters, sources, artifact names, the data check's summary and the evaluation, from the manifests."""
    for where, manifest in found:
        family = manifest.get("family", "")
        side["artifacts"].setdefault(manifest.get("stage", ""), f"{family}-{manifest.get('key', '')}")
        side["params"].update({f"{family}.{name}": value for name, value in manifest.get("params", {}).items()})
        side["sources"].update({role.removeprefix(SOURCE_ROLE): digest
                                for role, digest in manifest.get("upstream", {}).items()
                                if role.startswith(SOURCE_ROLE)})
        if manifest.get("stage") == DataCheck.stage:
            side["data_summary"] = manifest.get("data_summary")
            side["data_warnings"] = list(manifest.get("warnings", []))
        if manifest.get("stage") == Evaluate.stage:
            fill_evaluation(side, where, manifest, reader)


def fill_evaluation(side: dict[str, Any], where: str, manifest: dict[str, Any], reader: ArtifactReader) -> None:
    """The evaluation's numbers (metrics.json; the manifest's headline numbers if that cannot be read)."""
    metrics = reader.read_json(where, METRICS_FILE)
    if not isinstance(metrics, dict):
        metrics = dict(manifest.get("metrics", {}))
    side["metrics"] = {name: value for name, value in metrics.items()
                       if isinstance(value, int | float) and not isinstance(value, bool)}
    side["per_class"] = metrics.get("per_class")
    side["dataset_metric"] = manifest.get("params", {}).get("dataset_metric")
    side["health"] = list((manifest.get("health") or {}).get("warnings", []))


def run_side(name: str, record: dict[str, Any], reader: ArtifactReader) -> dict[str, Any]:
    """What a recorded run knows: its record, and the manifests of its artifacts that are still there."""
    side = empty_side(record["run_id"], "run")
    found: list[Located] = []
    for recorded in record.get("artifacts", []):
        located = reader.locate(recorded)
        if located is None:
            side["gone"].append(short_name(recorded))
        else:
            found.append(located)
    fill_from_manifests(side, found, reader)
    side["artifacts"] = {short_name(r).split("/")[0]: short_name(r).split("/")[1] for r in record.get("artifacts", [])}
    side.update(run_id=record["run_id"], name=name, pipeline=record.get("pipeline"), time=record.get("time"),
                exit_code=record.get("exit_code"), source_location=record.get("source_location"),
                published=published_text(record))
    if not side["sources"] and record.get("source"):  # the raw-data artifact is gone: the record's fingerprints
        side["sources"] = {f"recorded {i + 1}": digest for i, digest in enumerate(record["source"])}
    if record.get("data_summary"):
        side["data_summary"] = record["data_summary"]
        side["data_warnings"] = list(record.get("data_warnings") or [])
    if not side["metrics"] and record.get("metrics"):  # the evaluation is gone: the recorded metric alone
        side["metrics"] = dict(record["metrics"])
        side["dataset_metric"] = next(iter(record["metrics"]))
    if side["health"] is None and record.get("health") is not None:
        side["health"] = list(record["health"].get("warnings", []))
    return side


def published_text(record: dict[str, Any]) -> str | None:
    if record.get("published"):
        return f"v{record.get('published_version')}"
    return "refused" if record.get("published") is False else None


def upstream_chain(start: Located, reader: ArtifactReader) -> list[Located]:
    """``start`` and every artifact it reads, transitively (those still under the root), dependencies first."""
    ordered: list[Located] = []
    seen = {start[1].get("key")}

    def visit(located: Located) -> None:
        for role, key in located[1].get("upstream", {}).items():
            if role.startswith(SOURCE_ROLE) or key in seen:
                continue
            seen.add(key)
            found = reader.by_key(key)
            if found is not None:
                visit(found)
        ordered.append(located)

    visit(start)
    return ordered


def artifact_side(label: str, start: Located, reader: ArtifactReader) -> dict[str, Any]:
    """What an evaluate artifact knows: its metrics, and the parameters and data of the artifacts it read."""
    where, manifest = start
    if manifest.get("stage") != Evaluate.stage:
        raise ValueError(f"compare: {label} is a {manifest.get('stage')} artifact ({manifest.get('family')}); "
                         f"give an {Evaluate.stage} artifact folder or a run id")
    side = empty_side(label, ARTIFACT_KIND)
    fill_from_manifests(side, upstream_chain(start, reader), reader)
    side.update(pipeline=manifest.get("params", {}).get("dataset"), time=manifest.get("finished_at"))
    return side


def local_artifact_side(folder: Path) -> dict[str, Any]:
    """An evaluate artifact folder on this host (under any root: its upstream is looked up beside it)."""
    folder = folder.resolve()
    manifest = read_manifest(folder)
    if manifest is None:
        raise ValueError(f"compare: {folder} is a folder without a readable artifact manifest; give an "
                         f"{Evaluate.stage} artifact folder or a run id")
    return artifact_side(str(folder), (str(folder), manifest), LocalArtifacts(folder.parent.parent))


class SideFinder:
    """Turns each command-line argument into a side, reading the root's run logs once."""

    def __init__(self, holder: Path | Bucket, reader: ArtifactReader, root: str,
                 bucket_prefix: Callable[[str], str | None], local_root: Path | None = None) -> None:
        self.holder, self.reader, self.root, self.bucket_prefix = holder, reader, root, bucket_prefix
        self.local_root = local_root  # a local root: ``<stage>/<Family>-<key>`` may be given relative to it
        self._runs: list[Record] | None = None

    def runs(self) -> list[Record]:
        if self._runs is None:
            self._runs = recorded_runs(self.holder)
        return self._runs

    def side(self, text: str) -> dict[str, Any]:
        folders = [Path(text).expanduser(), *([self.local_root / text] if self.local_root else [])]
        folder = next((f for f in folders if text and f.is_dir()), None)
        if folder is not None:
            return local_artifact_side(folder)
        prefix = self.bucket_prefix(text)
        if prefix is not None:
            located = self.reader.locate(prefix)
            if located is None:
                raise ValueError(f"compare: no committed artifact {prefix} under {self.root}")
            return artifact_side(prefix, located, self.reader)
        name, record = find_run(text, self.runs(), self.root)
        return run_side(name, record, self.reader)


def side_finder() -> SideFinder:
    """For the process's root: a local folder, or a bucket (run log objects, committed manifests)."""
    root = opened_root()
    if root.artifacts is None:
        return SideFinder(root.local, LocalArtifacts(root.local), root.location.url, lambda _text: None,
                          local_root=root.local)
    bucket = root.artifacts.bucket
    return SideFinder(bucket, BucketArtifactReader(root.artifacts), root.location.url,
                      lambda text: bucket_artifact_prefix(text, bucket))
