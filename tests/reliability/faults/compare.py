"""Is a rebuilt artifact the same as the reference one? Every file by sha256, except the few that carry wall-clock
times, process ids or memory addresses by nature; those are compared by their content with exactly those parts
left out (each comparator says which). No TensorFlow: protobufs are read at the wire level.

Files that differ between two uninterrupted runs of the same code on the same inputs (measured, see the report):
``MANIFEST.json`` (``started_at``, ``finished_at``, ``seconds``; and the sha256 of the files below),
``*.keras`` (``metadata.json``'s ``date_saved``; ``config.json``'s ``shared_object_id`` = a Python ``id()``),
``tensorboard/**/events.out.tfevents.<time>.<host>.<pid>.*`` (the name; each event's ``wall_time``),
``saved_model/fingerprint.pb`` (its random ``uuid``), ``frozen_graph.pb`` (TensorFlow's control-flow lowering
adds a varying number of ``unused_control_flow_input*`` placeholders, with varying shapes), and a published
version's ``publish.json`` (``published_at``).

The freeze stage's SavedModel (``saved_model.pb``, ``variables/*``) is compared byte for byte: Freeze exports
in a fresh process, so names TensorFlow and Keras number per process do not depend on what ran before it.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tasks.formats.tfrecord import read_records
from tasks.store.artifacts import MANIFEST_NAME

TIME_FIELDS = ("started_at", "finished_at", "seconds")
EVENTS_NAME = re.compile(r"events\.out\.tfevents\.\d+(\.\d+)?\..+")
UNUSED_INPUT = "unused_control_flow_input"
# An internal marker attribute TensorFlow sets on some lowered control-flow nodes, varying like the above.
MARKER_ATTR = b"_has_manual_control_dependencies"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def canonical_name(rel: str) -> str:
    """A TensorBoard event file's name carries its time, host and pid: keep only its folder."""
    parent, _, name = rel.rpartition("/")
    return f"{parent}/events.out.tfevents.*" if EVENTS_NAME.fullmatch(name) else rel


def files_of(directory: Path) -> dict[str, list[Path]]:
    """Every file below ``directory`` by canonical relative name (event files of one folder grouped)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        found.setdefault(canonical_name(path.relative_to(directory).as_posix()), []).append(path)
    return found


# ---- protobuf wire format ---------------------------------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def wire_fields(buf: bytes) -> Iterator[tuple[int, bytes]]:
    """(field number, raw encoded value) of each top-level field of a protobuf message."""
    pos = 0
    while pos < len(buf):
        key, start = _varint(buf, pos)
        number, kind = key >> 3, key & 7
        if kind == 0:
            _, pos = _varint(buf, start)
        elif kind == 1:
            pos = start + 8
        elif kind == 2:
            length, body = _varint(buf, start)
            start, pos = body, body + length
        elif kind == 5:
            pos = start + 4
        else:
            raise ValueError(f"protobuf wire type {kind} at byte {pos}")
        yield number, buf[start:pos]


def without_fields(buf: bytes, drop: set[int]) -> list[tuple[int, bytes]]:
    return [(number, value) for number, value in wire_fields(buf) if number not in drop]


# ---- comparators: each returns the problems found ----------------------------------------------------------
def same_bytes(a: Path, b: Path) -> list[str]:
    return [] if sha256(a) == sha256(b) else [f"{b.name}: sha256 differs"]


def same_manifest(a: Path, b: Path) -> list[str]:
    """Equal but for its times; the files it lists by name and size, their sha256 for the byte-stable ones."""
    left, right = json.loads(a.read_text()), json.loads(b.read_text())
    problems = []
    for field in sorted(set(left) | set(right) - {*TIME_FIELDS, "files"}):
        if field not in TIME_FIELDS and field != "files" and left.get(field) != right.get(field):
            problems.append(f"MANIFEST.json: {field}: {left.get(field)!r} != {right.get(field)!r}")
    lfiles, rfiles = _manifest_files(left), _manifest_files(right)
    if sorted(lfiles) != sorted(rfiles):
        problems.append(f"MANIFEST.json: files {sorted(set(lfiles) ^ set(rfiles))} differ")
    for rel in set(lfiles) & set(rfiles):
        if comparator(rel) is same_bytes and not rel.endswith("tfevents.*") and lfiles[rel] != rfiles[rel]:
            problems.append(f"MANIFEST.json: {rel}: {lfiles[rel]} != {rfiles[rel]}")
    return problems


def _manifest_files(manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for rel, entry in sorted(manifest.get("files", {}).items()):
        grouped.setdefault(canonical_name(rel), []).append(entry)
    return grouped


def normalized_keras_config(text: bytes) -> Any:
    """``shared_object_id`` is ``id()`` of a Python object: renumber them in order of first appearance."""
    ids: dict[int, int] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (ids.setdefault(v, len(ids)) if k == "shared_object_id" else walk(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(json.loads(text))


def same_keras(a: Path, b: Path) -> list[str]:
    """Same entries; weights by bytes; config but for object ids; metadata but for its date."""
    with zipfile.ZipFile(a) as left, zipfile.ZipFile(b) as right:
        if left.namelist() != right.namelist():
            return [f"{b.name}: entries {left.namelist()} != {right.namelist()}"]
        problems = []
        for name in left.namelist():
            x, y = left.read(name), right.read(name)
            if name == "config.json":
                x, y = normalized_keras_config(x), normalized_keras_config(y)
            elif name == "metadata.json":
                x, y = ({k: v for k, v in json.loads(s).items() if k != "date_saved"} for s in (x, y))
            if x != y:
                problems.append(f"{b.name}: {name} differs")
        return problems


def event_records(paths: list[Path]) -> set[bytes]:
    """Every event of a TensorBoard folder without its ``wall_time`` (Event field 1), as a set: a resumed
    training may log its first epochs twice, once from the killed process and once again after resuming."""
    events = set()
    for path in paths:
        for record in read_records(path):
            events.add(b"".join(bytes([n]) + v for n, v in without_fields(record, {1})))
    return events


def same_events(a: list[Path], b: list[Path]) -> list[str]:
    left, right = event_records(a), event_records(b)
    if left == right:
        return []
    return [f"{a[0].parent.name}/events: {len(left - right)} reference event(s) missing, {len(right - left)} new"]


def same_fingerprint(a: Path, b: Path) -> list[str]:
    """A SavedModel fingerprint but for its ``uuid`` (FingerprintDef field 7)."""
    left, right = (without_fields(p.read_bytes(), {7}) for p in (a, b))
    return [] if left == right else [f"{b.name}: hashes differ"]


def graph_nodes(path: Path) -> dict[bytes, tuple[Any, ...]]:
    """A GraphDef's nodes by name, without the ``unused_control_flow_input*`` placeholders and edges to them;
    each node as (op, inputs in order, device, attr entries as a set)."""
    nodes = {}
    for number, node in wire_fields(path.read_bytes()):
        if number != 1:  # 1 = node; versions and library are compared below
            continue
        fields = list(wire_fields(node))
        name = next(v for n, v in fields if n == 1)
        if name.startswith(UNUSED_INPUT.encode()):
            continue
        inputs = tuple(v for n, v in fields if n == 3 and UNUSED_INPUT.encode() not in v)
        nodes[name] = (tuple(v for n, v in fields if n == 2), inputs, tuple(v for n, v in fields if n == 4),
                       frozenset(v for n, v in fields if n == 5 and MARKER_ATTR not in v))
    return nodes


def same_graph(a: Path, b: Path) -> list[str]:
    left, right = graph_nodes(a), graph_nodes(b)
    others = [without_fields(p.read_bytes(), {1}) for p in (a, b)]
    problems = [f"{b.name}: node {name.decode()} differs" for name in sorted(set(left) | set(right))
                if left.get(name) != right.get(name)]
    if others[0] != others[1]:
        problems.append(f"{b.name}: versions or function library differ")
    return problems[:5]


def same_published_record(a: Path, b: Path) -> list[str]:
    left, right = ({k: v for k, v in json.loads(p.read_text()).items() if k != "published_at"} for p in (a, b))
    return [] if left == right else [f"{b.name}: {left} != {right}"]


def comparator(rel: str) -> Callable[[Path, Path], list[str]]:
    name = rel.rpartition("/")[2]
    if name == MANIFEST_NAME:
        return same_manifest
    if name.endswith(".keras"):
        return same_keras
    if rel.endswith("saved_model/fingerprint.pb"):
        return same_fingerprint
    if name == "frozen_graph.pb":
        return same_graph
    if name == "publish.json" and re.search(r"(^|/)\d+/publish\.json$", rel):
        return same_published_record
    return same_bytes


def compare_trees(reference: Path, rebuilt: Path) -> list[str]:
    """Problems that make ``rebuilt`` differ from ``reference`` (empty: the same artifact)."""
    left, right = files_of(reference), files_of(rebuilt)
    problems = [f"{rel}: only in the reference" for rel in sorted(set(left) - set(right))]
    problems += [f"{rel}: not in the reference" for rel in sorted(set(right) - set(left))]
    for rel in sorted(set(left) & set(right)):
        if rel.endswith("events.out.tfevents.*"):
            problems += same_events(left[rel], right[rel])
        elif len(left[rel]) != 1 or len(right[rel]) != 1:
            problems.append(f"{rel}: {len(left[rel])} vs {len(right[rel])} files")
        else:
            problems += [f"{rel}: {p}" for p in comparator(rel)(left[rel][0], right[rel][0])]
    return problems
