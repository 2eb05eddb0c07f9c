"""The checked examples the datacheck artifact hands on: the TFRecord stage's files as they are (hard links where
the file system allows, else copies), or, where a ``drop`` policy removed examples, the affected splits' shards
rewritten without them (the same shard names, the kept records byte for byte in their order). No Luigi, no TF.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from tasks.formats.tfrecord import TFRecordWriter, decode_example, read_records
from tasks.store.artifacts import MANIFEST_NAME

SKIPPED_NAMES = frozenset({MANIFEST_NAME})  # the source artifact's own manifest


def link_or_copy(source: Path, destination: Path) -> None:
    """``destination`` holds ``source``'s bytes: a hard link (artifacts are never modified), or a copy."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copyfile(source, destination)


def hand_on_files(examples_dir: Path, out_dir: Path, skip: frozenset[str] = frozenset()) -> list[str]:
    """Every file of the examples artifact (but its manifest and ``skip``) into ``out_dir``; their names."""
    names = []
    for path in sorted(Path(examples_dir).iterdir()):
        if path.is_file() and path.name not in SKIPPED_NAMES | skip:
            link_or_copy(path, out_dir / path.name)
            names.append(path.name)
    return names


def write_without(source: Path, destination: Path, dropped_keys: frozenset[bytes]) -> tuple[int, int]:
    """``destination``: the records of the shard ``source`` whose ``image/key`` is not in ``dropped_keys``, in
    order, byte for byte. Returns (kept, dropped)."""
    kept = dropped = 0
    with TFRecordWriter(destination) as writer:
        for record in read_records(source):
            key = decode_example(record)["image/key"][0]
            if key in dropped_keys:
                dropped += 1
                continue
            writer.write(record)
            kept += 1
    return kept, dropped


def rewrite_split(examples_dir: Path, out_dir: Path, shard_files: list[str], dropped_keys: frozenset[bytes],
                  progress: Callable[[int], None] | None = None) -> int:
    """A split's shards without ``dropped_keys``, replacing the handed-on ones in ``out_dir``; examples kept."""
    total = 0
    for name in shard_files:
        target = out_dir / name
        target.unlink(missing_ok=True)  # a hard link to the source artifact's file: never write through it
        kept, _ = write_without(Path(examples_dir) / name, target, dropped_keys)
        total += kept
        if progress:
            progress(kept)
    return total

