"""Benchmark: the datacheck stage's statistics against the TFRecord stage on the same images, and the growth of the
near-duplicate search.

    .venv/bin/python bench/bench_datacheck.py --images 60000 --repeats 9
    .venv/bin/python bench/bench_datacheck.py --images 240000 --repeats 3 --sizes 15000 30000 60000 120000 240000

Writes ``--images`` photo-like 32x32x3 uint8 images (smooth gradients, a soft blob, discs, squares and rings,
sensor noise) as a decoded artifact (``open_split_writer``: source splits ``train`` and ``test``, 5:1) and the
image-dirs assignment (10% of train as validation, ``assign_splits``), with planted findings: exact copies across
and within splits, label conflicts, near copies (a brightness shift and noise) across splits and a few blank images.
Then, each measurement in a fresh process reading the memory-mapped arrays as the stages do, taking turns:

(a) TFRecords: ``write_split_shards`` for every split, default ``ShardSpec`` (raw), ``workers=2``, as the stage;
(b) datacheck statistics: ``check_examples`` with the default ``CheckSettings``;
(c) the report apart: ``DataCheck.write_report`` (pictures, datacheck.json, data_report.html) on (b)'s result;
(d) ``near_duplicate_pairs`` alone (as ``check_examples`` calls it, distance 4) on the hashes of random subsets of
    ``--sizes`` images across the splits, and the growth exponents log2(t(2n) / t(n)); its answer at the smallest
    size must equal comparing every pair, or the run stops.

Prints medians of ``--repeats`` runs, the median of the runs' ratios b/a, and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.data.files import ROWS_SUFFIX, SPLITS_FILE  # noqa: E402
from tasks.data.imagedirs import assign_splits, load_assignment  # noqa: E402
from tasks.formats.examples import encode_keys, load_split, open_split_writer, save_class_names  # noqa: E402

SIDE = 32
CLASSES = [f"class{i}" for i in range(10)]
VALIDATION_FRACTION = 0.1
CHUNK = 4096
# Planted findings, per 60,000 images (scaled with --images).
PLANTED = {"leaks": 120, "conflicts": 12, "duplicates": 100, "near_copies": 60, "blank": 15}


# ---- data ------------------------------------------------------------------------------------------------------
def photo_batch(rng: np.random.Generator, count: int, shapes: int = 4) -> np.ndarray:
    """``count`` photo-like uint8 RGB images (tests/fakes/images.py ``photo_like``, vectorised over the batch):
    two colour gradients crossing, a soft blob, ``shapes`` filled discs, squares or rings, noise of sigma 6."""
    x = np.linspace(0.0, 1.0, SIDE, dtype=np.float32)[None, None, :, None]
    y = np.linspace(0.0, 1.0, SIDE, dtype=np.float32)[None, :, None, None]
    corner = rng.uniform(0, 255, (4, count, 1, 1, 3)).astype(np.float32)
    image = (corner[0] * (1 - x) + corner[1] * x) * (1 - y) + (corner[2] * (1 - x) + corner[3] * x) * y
    cx, cy = rng.uniform(0, 1, (2, count, 1, 1, 1)).astype(np.float32)
    radius = rng.uniform(0.2, 0.6, (count, 1, 1, 1)).astype(np.float32)
    blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))
    image = image * (1 - 0.5 * blob) + rng.uniform(0, 255, (count, 1, 1, 3)).astype(np.float32) * 0.5 * blob
    px, py = np.arange(SIDE)[None, None, :], np.arange(SIDE)[None, :, None]
    for _ in range(shapes):
        sx, sy = rng.integers(0, SIDE, (2, count, 1, 1))
        r = rng.integers(2, SIDE // 4, (count, 1, 1))
        kind = rng.integers(0, 3, (count, 1, 1))
        distance = np.sqrt(((px - sx) ** 2 + (py - sy) ** 2).astype(np.float32))
        mask = np.where(kind == 0, distance <= r,
                        np.where(kind == 1, np.maximum(abs(px - sx), abs(py - sy)) <= r,
                                 abs(distance - r) <= np.maximum(1, r // 3)))
        image = np.where(mask[..., None], rng.integers(0, 256, (count, 1, 1, 3)).astype(np.float32), image)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(6.0)
    return np.clip(image, 0, 255).astype(np.uint8)


def plant_findings(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray,
                   scale: float, rng: np.random.Generator) -> dict[str, int]:
    """Copies the finders must find, in place: test images replaced by train images (leaks, and label conflicts
    under another class), train images replaced by other train images (duplicates, some of which the validation
    carve makes leaks), test images that are train images slightly brightened and noised (near copies), and
    constant images."""
    counts = {name: max(1, round(n * scale)) for name, n in PLANTED.items()}
    sources = rng.choice(len(train) // 2, sum(counts.values()), replace=False)  # first half: never overwritten
    test_slots = iter(rng.choice(len(test), counts["leaks"] + counts["conflicts"] + counts["near_copies"],
                                 replace=False))
    train_slots = iter(len(train) // 2 + rng.choice(len(train) // 2, counts["duplicates"] + counts["blank"],
                                                    replace=False))
    source = iter(sources)
    for _ in range(counts["leaks"]):
        j, i = next(source), next(test_slots)
        test[i], test_labels[i] = train[j], train_labels[j]
    for _ in range(counts["conflicts"]):
        j, i = next(source), next(test_slots)
        test[i], test_labels[i] = train[j], (train_labels[j] + 1) % len(CLASSES)
    for _ in range(counts["duplicates"]):
        j, i = next(source), next(train_slots)
        train[i], train_labels[i] = train[j], train_labels[j]
    for _ in range(counts["near_copies"]):
        j, i = next(source), next(test_slots)
        shifted = train[j].astype(np.int16) + 3 + rng.integers(-2, 3, train[j].shape)
        test[i], test_labels[i] = np.clip(shifted, 0, 255).astype(np.uint8), train_labels[j]
    for _ in range(counts["blank"]):
        train[next(train_slots)] = int(rng.integers(0, 256))
    return counts


def write_decoded(root: Path, total: int, seed: int = 0) -> dict[str, int]:
    """The decoded artifact (``root/decoded``) and the image-dirs assignment (``root/image_dirs``)."""
    rng = np.random.default_rng(seed)
    sizes = {"train": total * 5 // 6, "test": total - total * 5 // 6}
    images = {name: np.concatenate([photo_batch(rng, min(CHUNK, n - s)) for s in range(0, n, CHUNK)])
              for name, n in sizes.items()}
    labels = {name: rng.integers(0, len(CLASSES), n).astype(np.int32) for name, n in sizes.items()}
    planted = plant_findings(images["train"], labels["train"], images["test"], labels["test"], total / 60_000, rng)
    decoded, image_dirs = root / "decoded", root / "image_dirs"
    image_dirs.mkdir(parents=True)
    keys = {}
    for name in sizes:
        keys[name] = encode_keys([f"{name}/{i:05d}.png" for i in range(sizes[name])])
        with open_split_writer(decoded, name, (SIDE, SIDE, 3), num_heads=1) as writer:
            for start in range(0, sizes[name], CHUNK):
                stop = start + CHUNK
                writer.append(image=images[name][start:stop], label=labels[name][start:stop],
                              key=keys[name][start:stop])
    save_class_names(decoded, CLASSES)
    save_class_names(image_dirs, CLASSES)
    assignment = assign_splits(keys, VALIDATION_FRACTION)
    for split, (_, rows) in assignment.items():
        np.save(image_dirs / f"{split}{ROWS_SUFFIX}", rows.astype(np.int64))
    (image_dirs / SPLITS_FILE).write_text(json.dumps(
        {split: {"source": source, "count": int(len(rows))} for split, (source, rows) in assignment.items()}))
    return planted


# ---- the measurements (each in a child process) ----------------------------------------------------------------
def split_examples(root: Path) -> list[Any]:
    """The splits as ``DataCheck.split_examples`` builds them: memory-mapped decoded arrays and assigned rows."""
    from tasks.datacheck.scan import SplitExamples

    splits = []
    for split, (source, rows) in load_assignment(root / "image_dirs").items():
        arrays = load_split(root / "decoded", source)
        splits.append(SplitExamples(split, arrays["image"], arrays["label"], arrays["key"], arrays["sha256"],
                                    np.asarray(rows), arrays.get("original_size")))
    return splits


def time_tfrecords(root: Path) -> dict[str, float]:
    """(a) the shards alone, and (a+) what the TFRecords stage's build does in all: the shards, tfpipe's
    description and TFDS's metadata (which reads every shard's record lengths)."""
    from tasks.data.shards import ShardSpec, save_dataset_info, write_split_shards
    from tasks.data.tfds_metadata import write_tfds_metadata
    from tasks.formats.dataset_info import DatasetInfo, SplitInfo

    out = root / "shards"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    os.sync()
    started = time.perf_counter()
    spec = ShardSpec("bench")
    splits = {}
    for split, (source, rows) in load_assignment(root / "image_dirs").items():
        arrays = load_split(root / "decoded", source)
        files = write_split_shards(out, split, arrays["image"], arrays["label"], arrays["key"], arrays["sha256"],
                                   rows, spec, workers=2)
        splits[split] = SplitInfo(int(len(rows)), tuple(files))
    shards = time.perf_counter() - started
    info = DatasetInfo("bench", (SIDE, SIDE, 3), len(CLASSES), splits=splits)
    save_dataset_info(out, info)
    write_tfds_metadata(out, info, CLASSES)
    return {"seconds": shards, "stage_seconds": time.perf_counter() - started}


def time_datacheck(root: Path) -> dict[str, Any]:
    from tasks.datacheck.checks import check_examples
    from tasks.datacheck.policies import CheckSettings

    os.sync()
    started = time.perf_counter()
    result = check_examples(split_examples(root), CLASSES, CheckSettings())
    seconds = time.perf_counter() - started
    counts = {kind: f["count"] for kind, f in result.report["findings"].items()}
    return {"seconds": seconds, "findings": counts}


def time_report(root: Path) -> dict[str, float]:
    from tasks.datacheck.checks import check_examples
    from tasks.datacheck.policies import CheckSettings
    from tasks.datacheck.task import DataCheck

    splits = split_examples(root)
    result = check_examples(splits, CLASSES, CheckSettings())
    out = root / "report"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    import tasks.datacheck.report  # noqa: F401 - matplotlib's import is not the report's cost

    os.sync()
    started = time.perf_counter()
    # The stage's own method; it reads nothing of the task but the dataset's name.
    DataCheck.write_report(SimpleNamespace(dataset="bench"), out, result, splits, CLASSES)  # type: ignore[arg-type]
    return {"seconds": time.perf_counter() - started}


def candidate_pairs(hashes: np.ndarray, distance: int) -> int:
    """Pairs agreeing on one of the search's choices of pieces (what it compares), summed over the choices."""
    from tasks.datacheck.duplicates import agreeing_pieces, agreement_keys, piece_choices

    total = 0
    for pieces in piece_choices(distance, agreeing_pieces(distance, len(hashes))):
        _, sizes = np.unique(agreement_keys(hashes, pieces)[0], return_counts=True)
        total += int((sizes * (sizes - 1) // 2).sum())
    return total


def brute_force_pairs(hashes: np.ndarray, split_of: np.ndarray, distance: int, ignore: np.ndarray,
                      digests: np.ndarray) -> np.ndarray:
    """``near_duplicate_pairs``'s answer by comparing every pair: the check that the fast search misses none."""
    keep = np.flatnonzero(~ignore)
    block = max(1, 2**22 // max(len(keep), 1))  # rows compared at once with every other: ~32 MB of XORs
    found = [np.zeros((0, 3), dtype=np.int64)]
    for start in range(0, len(keep), block):
        rows = keep[start:start + block]
        bits = np.bitwise_count(hashes[rows][:, None] ^ hashes[keep][None, :])
        i, j = np.nonzero((bits <= distance) & (split_of[rows][:, None] != split_of[keep][None, :])
                          & (rows[:, None] < keep[None, :]))
        found.append(np.stack([rows[i], keep[j], bits[i, j]], axis=1))
    pairs = np.concatenate(found).astype(np.int64)
    pairs = pairs[digests[pairs[:, 0]] != digests[pairs[:, 1]]]
    return pairs[np.lexsort((pairs[:, 2], pairs[:, 1], pairs[:, 0]))]


def time_near_duplicates(root: Path, sizes: list[int], repeats: int) -> dict[str, Any]:
    """``near_duplicate_pairs`` as ``near_duplicate_finding`` calls it, on random subsets of the examples."""
    from tasks.datacheck.checks import build_catalogue
    from tasks.datacheck.duplicates import near_duplicate_pairs
    from tasks.datacheck.policies import CheckSettings
    from tasks.datacheck.scan import scan_pixels

    settings = CheckSettings()
    splits = split_examples(root)
    scans = [scan_pixels(split) for split in splits]
    catalogue = build_catalogue(splits, CLASSES)
    hashes = np.concatenate([s.phash for s in scans])
    blank = np.concatenate([s.image_std for s in scans]) < settings.degenerate_std
    rng = np.random.default_rng(1)
    results: dict[str, Any] = {}
    for size in sizes:
        subset = np.sort(rng.choice(len(hashes), min(size, len(hashes)), replace=False))
        arguments = (hashes[subset], catalogue.split_of[subset], settings.near_duplicate_distance)
        samples, pairs = [], np.zeros((0, 3))
        for _ in range(repeats):
            started = time.perf_counter()
            pairs = near_duplicate_pairs(*arguments, ignore=blank[subset], digests=catalogue.digests[subset])
            samples.append(time.perf_counter() - started)
        results[str(size)] = {"seconds": statistics.median(samples), "runs": samples, "pairs": int(len(pairs)),
                              "compared": candidate_pairs(hashes[subset][~blank[subset]],
                                                          settings.near_duplicate_distance)}
        if size == min(sizes):
            reference = brute_force_pairs(*arguments, ignore=blank[subset], digests=catalogue.digests[subset])
            if not np.array_equal(pairs, reference):
                raise AssertionError(f"near_duplicate_pairs found {len(pairs)} pairs at {size} images, "
                                     f"comparing every pair finds {len(reference)}")
    return results


def run_child(method: str, root: Path, sizes: list[int], repeats: int) -> None:
    # The modules each method uses are imported before its clock starts.
    import tasks.data.shards  # noqa: F401
    import tasks.datacheck.checks  # noqa: F401

    if method == "tfrecords":
        result: dict[str, Any] = time_tfrecords(root)
    elif method == "datacheck":
        result = time_datacheck(root)
    elif method == "report":
        result = time_report(root)
    else:
        result = time_near_duplicates(root, sizes, repeats)
    print(json.dumps(result))


def measure(method: str, root: Path, sizes: list[int], repeats: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", method, "--root", str(root), "--repeats", str(repeats),
               "--sizes", *map(str, sizes)]
    result = subprocess.run(command, check=True, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(result.stdout.splitlines()[-1])


# ---- the run ---------------------------------------------------------------------------------------------------
def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def print_table(args: argparse.Namespace, times: dict[str, list[float]], near: dict[str, Any],
                findings: dict[str, int]) -> None:
    ratios = [b / a for a, b in zip(times["tfrecords"], times["datacheck"], strict=True)]
    stage_ratios = [b / a for a, b in zip(times["tfrecords_stage"], times["datacheck"], strict=True)]
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name}: runs {', '.join(f'{v:.3f}' for v in values)} s")
    print(f"findings: {findings}")
    print(f"\n| measure ({args.images:,} images 32x32x3, median of {args.repeats}, each in a fresh process) | "
          f"seconds | images/s |")
    print("|---|---:|---:|")
    labels = {"tfrecords": "(a) TFRecords: `write_split_shards`, every split, raw, 2 workers",
              "tfrecords_stage": "(a+) the TFRecords stage's whole build: (a), tfpipe_info.json, TFDS metadata",
              "datacheck": "(b) datacheck statistics: `check_examples`, default settings",
              "report": "(c) report apart: `DataCheck.write_report` (pictures, JSON, HTML)"}
    for name, label in labels.items():
        print(f"| {label} | {median[name]:.2f} | {args.images / median[name]:,.0f} |")
    print(f"| **b / a**: median of the runs' ratios (range) | **{statistics.median(ratios):.2f}** "
          f"({min(ratios):.2f}-{max(ratios):.2f}) | |")
    print(f"| **b / a+** (the whole stage) | **{statistics.median(stage_ratios):.2f}** "
          f"({min(stage_ratios):.2f}-{max(stage_ratios):.2f}) | |")
    print("\n| near-duplicate search (distance 4) | seconds (median) | pairs compared | pairs found | growth |")
    print("|---|---:|---:|---:|---:|")
    previous: tuple[int, float] | None = None
    for size in args.sizes:
        entry = near[str(size)]
        growth = ""
        if previous is not None:
            growth = f"{math.log(entry['seconds'] / previous[1]) / math.log(size / previous[0]):.2f}"
        print(f"| {size:,} images | {entry['seconds']:.3f} | {entry['compared']:,} | {entry['pairs']} | {growth} |")
        previous = (size, entry["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[15_000, 30_000, 60_000],
                        help="subset sizes for the near-duplicate search (each at most --images)")
    parser.add_argument("--near-repeats", type=int, default=7, help="timings per size of the near-duplicate search")
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds before each measurement")
    parser.add_argument("--child", choices=["tfrecords", "datacheck", "report", "near"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args.root, args.sizes, args.repeats)
        return
    with tempfile.TemporaryDirectory(prefix="bench-datacheck-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        planted = write_decoded(root, args.images)
        print(f"wrote {args.images:,} images in {time.perf_counter() - started:.1f} s; planted {planted}")
        times: dict[str, list[float]] = {"tfrecords": [], "datacheck": [], "report": []}
        findings: dict[str, int] = {}
        for repeat in range(args.repeats):
            for name in ("tfrecords", "datacheck", "report"):  # taking turns: (a), (b) and (c) back to back
                time.sleep(args.settle)
                result = measure(name, root, args.sizes, args.repeats)
                times[name].append(result["seconds"])
                if "stage_seconds" in result:
                    times.setdefault("tfrecords_stage", []).append(result["stage_seconds"])
                findings = result.get("findings", findings)
            print(f"repeat {repeat + 1}: load average {load_average()}", flush=True)
        near = measure("near", root, args.sizes, args.near_repeats)
        print(f"load average at the end: {load_average()}")
        print_table(args, times, near, findings)


if __name__ == "__main__":
    main()
