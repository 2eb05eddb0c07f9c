"""Class-per-folder image decode stage: ``ROOT/<class>/<image>`` -> decoded example arrays of one size.

The source (role ``data``) is a folder, or a tar/zip archive of one (flower_photos.tgz), read by
``tasks.datasets.images.folder``: junk (hidden files, ``__MACOSX/``, ``Thumbs.db``, other extensions) is skipped
and counted; corrupt images fail the stage or, with ``on_error=skip``, are skipped and listed with their
reason. The test split is fixed by a stable hash of each image's path (retrain.py's ``_nohash_`` groups
stay together), so adding images never moves an existing one to another split. Each example records the
image's original ``(height, width)`` (``original_size``, upright, before the resize to ``image_size``).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import luigi
import numpy as np

from tasks.datasets.images.folder import FolderScan, ImageEntry, decode_images, scan_class_folders
from tasks.formats.arrays import column_file
from tasks.formats.dataset_info import DatasetInfo, SplitInfo
from tasks.formats.examples import (
    ExampleWriter,
    encode_keys,
    load_split,
    open_split_writer,
    save_class_names,
    stable_unit,
)
from tasks.formats.files import EXTRACT_SCRATCH_DIR, SKIPPED_FILE
from tasks.sources.archive import safe_extract
from tasks.sources.task import RAW_DATA, downloaded_path
from tasks.store.task import ArtifactTask

logger = logging.getLogger("tfpipe")
SPLITS = ("train", "test")
CHUNK_ROWS = 256
PendingRow = tuple[np.ndarray, int, str, tuple[int, int]]  # fitted image, label, key, original (height, width)


def test_split_of(relpath: str, test_fraction: float) -> str:
    return "test" if stable_unit(relpath, "images-test") < test_fraction else "train"


def without_excluded(scan: FolderScan, excluded: Sequence[Path]) -> FolderScan:
    """``scan`` without anything inside ``excluded`` folders (the artifact root when tfpipe runs in the data)."""
    roots = [p.resolve() for p in excluded]

    def inside(path: Path) -> bool:
        resolved = path.resolve()
        return any(resolved == root or root in resolved.parents for root in roots)

    dropped_classes = {name for name in scan.classes if inside(scan.root / name)}
    images = [entry for entry in scan.images if not inside(entry.path)]
    junk = [(rel, why) for rel, why in scan.junk if not inside(scan.root / rel)]
    classes = [name for name in scan.classes if name not in dropped_classes]
    counts = {name: n for name, n in scan.counts.items() if name not in dropped_classes}
    return FolderScan(root=scan.root, classes=classes, images=images, junk=junk, counts=counts)


class DecodeImages(ArtifactTask):
    stage = "decode"
    version = 2
    reads = (RAW_DATA,)
    provides = "decoded"

    image_size = luigi.IntParameter(default=64, description="side of the square images the set is resized to")
    channels = luigi.ChoiceParameter(choices=["3", "1"], default="3", description="3 = RGB, 1 = grayscale")
    fit = luigi.ChoiceParameter(choices=["pad", "crop"], default="pad",
                                description="keep the aspect ratio: pad to a square, or centre crop")
    on_error = luigi.ChoiceParameter(choices=["fail", "skip"], default="fail",
                                     description="a corrupt or truncated image fails the stage, or is skipped "
                                                 "and listed in skipped.json")
    test_fraction = luigi.FloatParameter(default=0.1, description="share of images held out for testing")
    min_images_per_class = luigi.IntParameter(default=20, description="classes with fewer are reported")
    workers = luigi.IntParameter(default=2, significant=False, description="threads decoding images")

    def build(self, out_dir: Path) -> dict[str, Any]:
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"DecodeImages.test_fraction must be in [0, 1), got {self.test_fraction}")
        data = downloaded_path(self.upstream_task(RAW_DATA))
        scratch = out_dir / EXTRACT_SCRATCH_DIR
        try:
            if data.is_dir():  # read in place: the artifact root may lie inside it (tfpipe run in the data folder)
                scan = without_excluded(scan_class_folders(data), [self.artifact_root])
            else:
                scan = scan_class_folders(self._extracted(data, scratch))
            summary = self.decode_scan(scan, out_dir)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return summary

    def _extracted(self, archive: Path, scratch: Path) -> Path:
        self.report_progress(0, 1, f"extracting {archive.name}")
        safe_extract(archive, scratch)
        return scratch

    def decode_scan(self, scan: FolderScan, out_dir: Path) -> dict[str, Any]:
        empty = [name for name in scan.classes if scan.counts[name] == 0]
        classes = [name for name in scan.classes if scan.counts[name] > 0]
        if len(classes) < 2:
            raise ValueError(f"{scan.root}: {len(classes)} class folder(s) with images; a classifier needs 2 or more "
                             f"(classes found: {', '.join(scan.classes) or 'none'})")
        label_of = {name: index for index, name in enumerate(classes)}
        entries = [entry for entry in scan.images if entry.class_name in label_of]
        shape = (self.image_size, self.image_size, int(self.channels))
        counts, bad = self.decode_entries(entries, label_of, shape, out_dir)
        unreadable = sorted({entry.class_name for entry in entries} - self._classes_written(out_dir, classes))
        if unreadable:  # every image of these classes was corrupt (on_error=skip): no class without examples
            classes = self._drop_classes(out_dir, classes, unreadable)
            empty += unreadable
        if len(classes) < 2:
            raise ValueError(f"{scan.root}: fewer than 2 classes with readable images (classes: {', '.join(classes)})")
        save_class_names(out_dir, classes)
        DatasetInfo("images", shape, len(classes), 1, {s: SplitInfo(counts[s]) for s in SPLITS}).save(out_dir)
        few = {name: n for name, n in scan.counts.items() if 0 < n < self.min_images_per_class}
        report = {"junk": [{"path": rel, "reason": why} for rel, why in scan.junk],
                  "bad_images": bad, "empty_classes": empty, "classes_with_few_images": few}
        (out_dir / SKIPPED_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        notices = self.notices(scan, bad, empty, few)
        for notice in notices:
            logger.warning("%s: %s", self.task_family, notice)
        return {"records": counts, "num_classes": len(classes), "junk_skipped": len(scan.junk),
                "bad_images_skipped": len(bad), "empty_classes": empty, "classes_with_few_images": few,
                "notices": notices}

    def notices(self, scan: FolderScan, bad: list[dict[str, str]], empty: list[str], few: dict[str, int]) -> list[str]:
        """What a user must hear about this folder, one line each (the CLI prints them after a run)."""
        lines = []
        if scan.junk:
            lines.append(f"{len(scan.junk)} non-image file(s) skipped (see {SKIPPED_FILE})")
        if bad:
            lines.append(f"{len(bad)} corrupt image(s) skipped (on_error=skip), e.g. {bad[0]['path']}: "
                         f"{bad[0]['reason']} (see {SKIPPED_FILE})")
        if empty:
            lines.append(f"class folder(s) without images left out: {', '.join(empty)}")
        if few:
            shown = ", ".join(f"{name} ({n})" for name, n in sorted(few.items()))
            lines.append(f"class(es) with fewer than {self.min_images_per_class} images: {shown}")
        return lines

    def decode_entries(self, entries: list[ImageEntry], label_of: dict[str, int], shape: tuple[int, int, int],
                       out_dir: Path) -> tuple[dict[str, int], list[dict[str, str]]]:
        """Decode every image once, in path order, appending it to its split; returns counts and skipped ones."""
        key_bytes = max((len(entry.relpath.encode()) for entry in entries), default=1)
        writers = {split: open_split_writer(out_dir, split, shape, num_heads=1, key_bytes=key_bytes,
                                            record_original_size=True)
                   for split in SPLITS}
        pending: dict[str, list[PendingRow]] = {split: [] for split in SPLITS}
        bad: list[dict[str, str]] = []
        decoded = decode_images([entry.path for entry in entries], channels=shape[2], size=shape[0], fit=self.fit,
                                workers=self.workers, on_error=self.on_error)
        try:
            for done, result in enumerate(self.track(decoded, len(entries), "decode images"), start=1):
                entry = entries[result.index]
                if result.image is None or result.original_size is None:  # decode_images gives both or neither
                    bad.append({"path": entry.relpath, "reason": result.error or "not decodable"})
                    continue
                split = test_split_of(entry.relpath, self.test_fraction)
                pending[split].append((result.image, label_of[entry.class_name], entry.relpath, result.original_size))
                if len(pending[split]) >= CHUNK_ROWS or done == len(entries):
                    self._flush(writers[split], pending[split])
            for split in SPLITS:
                self._flush(writers[split], pending[split])
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        for writer in writers.values():
            writer.close()
        return {split: writers[split].rows for split in SPLITS}, bad

    @staticmethod
    def _classes_written(out_dir: Path, classes: list[str]) -> set[str]:
        labels = np.concatenate([load_split(out_dir, split)["label"] for split in SPLITS])
        return {classes[index] for index in np.unique(labels)}

    @staticmethod
    def _drop_classes(out_dir: Path, classes: list[str], dropped: list[str]) -> list[str]:
        """Renumber the written labels without ``dropped`` classes (none of their images was written)."""
        kept = [name for name in classes if name not in dropped]
        new_index = np.asarray([kept.index(name) if name in kept else -1 for name in classes], dtype=np.int32)
        for split in SPLITS:
            path = column_file(out_dir / split, "label")
            labels = np.fromfile(path, dtype="<i4")
            new_index[labels].astype("<i4").tofile(path)
        return kept

    @staticmethod
    def _flush(writer: ExampleWriter, rows: list[PendingRow]) -> None:
        if rows:
            writer.append(image=np.stack([r[0] for r in rows]), label=np.asarray([r[1] for r in rows], np.int32),
                          key=encode_keys([r[2] for r in rows], width=writer.key_bytes),
                          original_size=np.asarray([r[3] for r in rows], np.int32))
            rows.clear()
