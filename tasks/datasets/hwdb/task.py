"""CASIA HWDB1.1 decode stage: ``.gnt`` files -> decoded example arrays, file by file, in bounded memory.

Sources, either:

* the official ``HWDB1.1trn_gnt.zip`` and ``HWDB1.1tst_gnt.zip`` (roles ``train`` and ``test``; the train
  zip wraps an ALZip ``.alz`` archive, opened with ``unalz``). No checksum is published for them, so each
  must be pinned by the user (``--checksum train=sha256:<hex>,test=sha256:<hex>``); or
* ``--source DIR|ARCHIVE|URL`` (role ``data``): a folder (or an archive of one) holding a train folder and
  a test folder of ``.gnt`` files, named like ``HWDB1.1trn_gnt/`` and ``HWDB1.1tst_gnt/`` (any name
  containing ``trn``/``train`` and ``tst``/``test``). A local folder is read in place.

The character dictionary comes from the training files only (``char_dict.json``, characters sorted);
test samples of other characters are counted in ``skipped.json`` and the manifest, never dropped silently.
Every sample has its own bitmap size; each example records it (``original_size``, ``(height, width)``).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import luigi
import numpy as np

from tasks.datasets.hwdb.files import CHAR_DICT_FILE
from tasks.datasets.hwdb.gnt import iter_gnt, iter_gnt_tags
from tasks.formats.dataset_info import DatasetInfo, SplitInfo
from tasks.formats.examples import ExampleWriter, encode_keys, open_split_writer, save_class_names
from tasks.formats.files import EXTRACT_SCRATCH_DIR, SKIPPED_FILE
from tasks.formats.images import fit_to_square
from tasks.sources.archive import shown_name, unpack
from tasks.sources.task import RAW_DATA, downloaded_path
from tasks.store.task import ArtifactTask

logger = logging.getLogger("tfpipe")

SPLITS = ("train", "test")
SPLIT_WORDS = {"train": ("trn", "train"), "test": ("tst", "test")}
SPLIT_SEARCH_DEPTH = 3


def split_of_folder(name: str) -> str | None:
    lowered = name.lower()
    matches = [split for split, words in SPLIT_WORDS.items() if any(word in lowered for word in words)]
    return matches[0] if len(matches) == 1 else None


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))


def find_split_folders(root: Path, shown_as: str = "") -> dict[str, Path]:
    """The train and test folders below ``root``: the shallowest subfolder whose name says which split.
    Errors name ``root`` as ``shown_as`` when given (an archive extracted to ``root``)."""
    found: dict[str, Path] = {}
    level = [root]
    for _depth in range(SPLIT_SEARCH_DEPTH):
        level = [sub for folder in level for sub in _subfolders(folder)]
        for split in SPLITS:
            candidates = [f for f in level if split_of_folder(f.name) == split]
            if split in found or not candidates:
                continue
            if len(candidates) > 1:
                names = ", ".join(str(c.relative_to(root)) for c in candidates)
                raise ValueError(f"{shown_as or root}: more than one {split} folder ({names}); keep one")
            found[split] = candidates[0]
    missing = [split for split in SPLITS if split not in found]
    if missing:
        seen = ", ".join(p.name for p in _subfolders(root)) or "none"
        wanted = "; ".join(f"{s}: a name containing {' or '.join(SPLIT_WORDS[s])}" for s in missing)
        raise ValueError(
            f"{shown_as or root}: no {' and no '.join(missing)} folder of .gnt files ({wanted}, e.g. "
            f"HWDB1.1trn_gnt/ and HWDB1.1tst_gnt/); subfolders found: {seen}"
        )
    return found


def gnt_files(folder: Path, shown_as: str = "") -> list[Path]:
    """Every ``.gnt`` file below ``folder``, sorted; an error if there is none or two share a name (naming
    ``folder`` as ``shown_as`` when given)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() == ".gnt")
    if not files:
        packed = sorted(p.name for p in folder.rglob("*") if p.suffix.lower() in (".alz", ".zip"))
        hint = f"; it holds {', '.join(packed)}: extract it first (unalz for .alz)" if packed else ""
        raise ValueError(f"{shown_as or folder}: no .gnt files{hint}")
    stems = Counter(p.stem for p in files)
    twice = sorted(stem for stem, n in stems.items() if n > 1)
    if twice:
        raise ValueError(f"{shown_as or folder}: several .gnt files named {twice[0]!r}; example keys use the file name")
    return files


# ---- decoding ----------------------------------------------------------------------------------------------
class _ChunkBuffer:
    """Rows waiting to be appended, flushed every ``rows`` examples: memory is bounded by one chunk."""

    def __init__(self, rows: int) -> None:
        self.rows = max(1, rows)
        self.images: list[np.ndarray] = []
        self.labels: list[int] = []
        self.keys: list[str] = []
        self.original_sizes: list[tuple[int, int]] = []

    def add(self, image: np.ndarray, label: int, key: str, original_size: tuple[int, int]) -> bool:
        """Queue one example (``original_size``: its bitmap's ``(height, width)``); True when the chunk is full
        and should be flushed."""
        self.images.append(image)
        self.labels.append(label)
        self.keys.append(key)
        self.original_sizes.append(original_size)
        return len(self.keys) >= self.rows

    def flush(self, writer: ExampleWriter) -> None:
        if self.keys:
            writer.append(image=np.stack(self.images), label=np.asarray(self.labels, dtype=np.int32),
                          key=encode_keys(self.keys), original_size=np.asarray(self.original_sizes, dtype=np.int32))
        self.images, self.labels, self.keys, self.original_sizes = [], [], [], []


def build_char_dict(characters: set[str]) -> dict[str, int]:
    """Character -> class index, characters sorted by code point (the order of labels.txt)."""
    return {char: index for index, char in enumerate(sorted(characters))}


class DecodeHwdb(ArtifactTask):
    stage = "decode"
    version = 3
    provides = "decoded"

    image_size = luigi.IntParameter(default=64, description="side of the square grayscale images")
    chunk_rows = luigi.IntParameter(default=1024, significant=False, description="rows per array append")

    def split_folders(self, scratch: Path) -> dict[str, tuple[Path, str]]:
        """Each split's folder of .gnt files, and how errors name it (``shown_name``): from the ``train`` and
        ``test`` sources, or found in ``data``."""
        sources = self.requires()
        if RAW_DATA in sources:
            data = downloaded_path(self.upstream_task(RAW_DATA))
            root = unpack(data, scratch / "data")
            folders = find_split_folders(root, shown_as=shown_name(root, root, data))
            return {split: (folder, shown_name(folder, root, data)) for split, folder in folders.items()}
        missing = [split for split in SPLITS if split not in sources]
        if missing:
            raise ValueError(f"DecodeHwdb reads a 'data' source or 'train' and 'test' ones; missing {missing}")
        unpacked = {}
        for split in SPLITS:
            data = downloaded_path(self.upstream_task(split))
            folder = unpack(data, scratch / split)
            unpacked[split] = (folder, shown_name(folder, folder, data))
        return unpacked

    def build(self, out_dir: Path) -> dict[str, Any]:
        if self.image_size < 1:
            raise ValueError(f"DecodeHwdb.image_size must be positive, got {self.image_size}")
        scratch = out_dir / EXTRACT_SCRATCH_DIR
        try:
            files = {split: gnt_files(folder, shown) for split, (folder, shown) in self.split_folders(scratch).items()}
            char_dict = build_char_dict(self.train_characters(files["train"]))
            (out_dir / CHAR_DICT_FILE).write_text(json.dumps(char_dict, ensure_ascii=False, indent=1),
                                                  encoding="utf-8")
            save_class_names(out_dir, list(char_dict))
            counts, skipped = {}, {}
            for split in SPLITS:
                counts[split], skipped[split] = self.decode_split(split, files[split], char_dict, out_dir)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if skipped["train"]:
            raise ValueError(f"training characters changed while decoding: {sorted(skipped['train'])[:10]}")
        skipped_test = self.save_skipped(out_dir, skipped["test"])
        shape = (self.image_size, self.image_size, 1)
        DatasetInfo("hwdb", shape, len(char_dict), 1, {split: SplitInfo(n) for split, n in counts.items()},
                    folder_style="index").save(out_dir)
        return {"records": counts, "num_classes": len(char_dict),
                "gnt_files": {split: len(files[split]) for split in SPLITS},
                "skipped_test_samples": sum(skipped_test.values()),
                "skipped_test_characters": len(skipped_test)}

    def train_characters(self, files: Sequence[Path]) -> set[str]:
        """The dictionary pass: every character of the training files, reading headers only."""
        characters: set[str] = set()
        for path in self.track(files, len(files), "dictionary"):
            characters.update(iter_gnt_tags(path))
        if not characters:
            raise ValueError(f"{files[0].parent}: the training .gnt files hold no samples")
        return characters

    def decode_split(
        self, split: str, files: Sequence[Path], char_dict: dict[str, int], out_dir: Path
    ) -> tuple[int, dict[str, int]]:
        """Append every sample of ``files`` whose character is in ``char_dict``; returns rows and skips."""
        size = self.image_size
        skipped: Counter[str] = Counter()
        chunk = _ChunkBuffer(self.chunk_rows)
        with open_split_writer(out_dir, split, (size, size, 1), num_heads=1, record_original_size=True) as writer:
            for done, path in enumerate(self.track(files, len(files), f"decode {split}"), start=1):
                for sample in iter_gnt(path):
                    label = char_dict.get(sample.tag)
                    if label is None:
                        skipped[sample.tag] += 1
                        continue
                    image = fit_to_square(sample.bitmap, size)[..., None]
                    height, width = sample.bitmap.shape
                    if chunk.add(image, label, f"{split}/{path.stem}/{sample.index:05d}", (height, width)):
                        chunk.flush(writer)
                chunk.flush(writer)
                self.report_progress(done, len(files), f"{split}: {path.name} ({writer.rows} samples)")
        return writer.rows, dict(skipped)

    def save_skipped(self, out_dir: Path, skipped: dict[str, int]) -> dict[str, int]:
        """``skipped.json``: test samples whose character the training set lacks, counted per character."""
        ordered = dict(sorted(skipped.items()))
        report: dict[str, Any] = {"test": {"samples": sum(ordered.values()), "characters": ordered},
                  "reason": "character not in the training set's dictionary"}
        (out_dir / SKIPPED_FILE).write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
        if ordered:
            logger.warning("%s: %d test samples of %d characters not in the training set were skipped "
                           "(see %s)", self.task_family, report["test"]["samples"], len(ordered), SKIPPED_FILE)
        return ordered
