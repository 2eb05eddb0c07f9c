"""Image directories: carve a validation split by stable hash and write ``<split>/<class>/<n>.png``.

Multi-head datasets (captchas: one label per letter) have no class folders; they get ``<split>/<n>.png``
and ``<split>/labels.csv`` (``index,label``), the seeds' captcha layout.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from tasks.data.files import ROWS_SUFFIX, SPLITS_FILE
from tasks.datasets.captcha.files import LABELS_CSV_FILE
from tasks.formats.examples import load_split, stable_unit
from tasks.formats.images import encode_png

ProgressFn = Callable[[int, int], None]


def assign_splits(
    source_splits: dict[str, np.ndarray], validation_fraction: float, salt: str = "validation"
) -> dict[str, tuple[str, np.ndarray]]:
    """Map output split -> (source split, row indices). Validation comes out of ``train`` only."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    result: dict[str, tuple[str, np.ndarray]] = {}
    for split, keys in source_splits.items():
        if split == "train" and validation_fraction > 0:
            units = np.fromiter((stable_unit(k, salt) for k in keys), dtype=np.float64, count=len(keys))
            is_validation = units < validation_fraction
            result["train"] = ("train", np.flatnonzero(~is_validation))
            result["validation"] = ("train", np.flatnonzero(is_validation))
        else:
            result[split] = (split, np.arange(len(keys)))
    return result


def safe_dir_name(name: str) -> str:
    """A class name usable as one path component (no separators, no leading dots)."""
    cleaned = re.sub(r"[\\/\x00]", "_", name).strip()
    cleaned = cleaned.lstrip(".") or "_"
    return cleaned


def _write_png_chunk(args: tuple[str, str, np.ndarray, list[str]]) -> int:
    decoded_dir, source_split, rows, relpaths = args
    images = load_split(Path(decoded_dir), source_split)["image"]
    for row, relpath in zip(rows, relpaths, strict=True):
        Path(relpath).write_bytes(encode_png(np.asarray(images[row])))
    return len(rows)


def class_folders(class_names: Sequence[str], folder_style: str) -> list[str]:
    if folder_style == "index":
        return [f"{i:05d}" for i in range(len(class_names))]
    if folder_style != "name":
        raise ValueError(f"folder_style must be 'name' or 'index', got {folder_style!r}")
    folders = [safe_dir_name(name) for name in class_names]
    if len(set(folders)) != len(folders):
        raise ValueError("two class names map to the same folder name after sanitising")
    return folders


def plan_paths(
    out_dir: Path, split: str, labels: np.ndarray, class_names: Sequence[str], multi_head: bool,
    folder_style: str = "name",
) -> list[str]:
    """File path of each example of a split, creating the class folders."""
    split_dir = out_dir / split
    split_dir.mkdir(parents=True, exist_ok=True)
    if multi_head:
        return [str(split_dir / f"{n}.png") for n in range(len(labels))]
    folders = class_folders(class_names, folder_style)
    for folder in folders:
        (split_dir / folder).mkdir(exist_ok=True)
    return [str(split_dir / folders[int(label)] / f"{n}.png") for n, label in enumerate(labels)]


def write_captcha_labels(path: Path, labels: np.ndarray, class_names: Sequence[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "label"])
        for n, heads in enumerate(labels):
            writer.writerow([n, "".join(class_names[int(i)] for i in heads)])


def write_image_dirs(
    decoded_dir: Path,
    out_dir: Path,
    assignment: dict[str, tuple[str, np.ndarray]],
    class_names: Sequence[str],
    *,
    multi_head: bool,
    folder_style: str = "name",
    workers: int = 2,
    chunk_size: int = 2000,
    progress: ProgressFn | None = None,
) -> dict[str, int]:
    """Write every split's PNGs (in parallel processes) and ``splits.json``; returns split counts."""
    jobs = []
    counts = {}
    for split, (source_split, rows) in assignment.items():
        labels = np.asarray(load_split(decoded_dir, source_split)["label"])[rows]
        paths = plan_paths(out_dir, split, labels, class_names, multi_head, folder_style)
        if multi_head:
            write_captcha_labels(out_dir / split / LABELS_CSV_FILE, labels, class_names)
        np.save(out_dir / f"{split}{ROWS_SUFFIX}", rows.astype(np.int64))
        counts[split] = len(rows)
        for start in range(0, len(rows), chunk_size):
            stop = start + chunk_size
            jobs.append((str(decoded_dir), source_split, rows[start:stop], paths[start:stop]))
    total = sum(counts.values())
    done = 0
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for written in pool.map(_write_png_chunk, jobs):
                done += written
                if progress:
                    progress(done, total)
    else:
        for job in jobs:
            done += _write_png_chunk(job)
            if progress:
                progress(done, total)
    splits = {split: {"source": src, "count": counts[split]} for split, (src, _) in assignment.items()}
    (out_dir / SPLITS_FILE).write_text(json.dumps(splits, indent=2, sort_keys=True))
    return counts


def load_assignment(image_dirs: Path) -> dict[str, tuple[str, np.ndarray]]:
    splits = json.loads((Path(image_dirs) / SPLITS_FILE).read_text())
    return {
        split: (spec["source"], np.load(Path(image_dirs) / f"{split}{ROWS_SUFFIX}"))
        for split, spec in splits.items()
    }
