"""Benchmark the GNT reader: throughput against the widely copied np.fromfile reader, and peak memory.

Usage::

    .venv/bin/python bench/bench_gnt.py --mb 256 --repeats 3 --mem-mb 1024

(a) samples/s of ``tasks.datasets.hwdb.gnt.iter_gnt`` and of the baseline reader over the same files in the
    same run (median of ``--repeats`` runs each, alternating), plus ``count_gnt_samples``;
(b) peak RSS (``ru_maxrss`` of a fresh subprocess) while converting GNT input (iter_gnt + fit_to_square
    to 64x64, folded into a running checksum) for two input sizes, to show memory does not grow with input.
Files are generated first: random GB2312 level-1 characters, bitmaps of random size 40-120 px.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.datasets.hwdb.gnt import count_gnt_samples, iter_gnt  # noqa: E402
from tasks.formats.images import fit_to_square  # noqa: E402
from tests.fakes.gnt import encode_sample  # noqa: E402

FILE_MB = 24  # real HWDB1.1 files are 10-27 MB each
POOL_SIZE = 512
MB = 1 << 20


# --------------------------------------------------------------------------------------- BASELINE
def baseline_fromfile_reader(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """BASELINE, NOT OURS: the per-field ``np.fromfile`` GNT reader copied across many blog posts and repos.

    One ``np.fromfile`` call per header field and one for the bitmap, for every sample. Kept here only
    to compare against; it also stops silently on a short read instead of reporting it.
    """
    with open(path, "rb") as f:
        while True:
            size = np.fromfile(f, np.dtype("<u4"), 1)
            if not size.size:
                break
            tag_code = np.fromfile(f, np.dtype(">u2"), 1)
            width = np.fromfile(f, np.dtype("<u2"), 1)
            height = np.fromfile(f, np.dtype("<u2"), 1)
            w, h = int(width[0]), int(height[0])
            bitmap = np.fromfile(f, np.uint8, w * h).reshape(h, w)
            yield struct.pack(">H", int(tag_code[0])).decode("gb2312"), bitmap


# ------------------------------------------------------------------------------------ data set
def gb2312_level1_chars() -> list[str]:
    """The 3755 level-1 hanzi: lead bytes B0-D7, trail A1-FE (D7FA-D7FE are unassigned)."""
    chars = []
    for lead in range(0xB0, 0xD8):
        for trail in range(0xA1, 0xFF):
            if lead == 0xD7 and trail > 0xF9:
                continue
            chars.append(bytes((lead, trail)).decode("gb2312"))
    return chars


def _bitmap_pool(rng: np.random.Generator) -> list[np.ndarray]:
    """White paper with dark random strokes, random 40-120 px sides."""
    pool = []
    for _ in range(POOL_SIZE):
        height, width = (int(v) for v in rng.integers(40, 121, 2))
        ink = rng.random((height, width)) < 0.2
        pool.append(np.where(ink, rng.integers(0, 120, (height, width)), 255).astype(np.uint8))
    return pool


def generate_gnt_set(folder: Path, total_mb: int, seed: int = 0) -> list[Path]:
    """Write ~FILE_MB files until total_mb is reached; returns the file paths in order."""
    rng = np.random.default_rng(seed)
    chars = gb2312_level1_chars()
    pool = _bitmap_pool(rng)
    encoded_pool = [(i, encode_sample(chars[0], b)) for i, b in enumerate(pool)]
    tag_bytes = [c.encode("gb2312") for c in chars]
    folder.mkdir(parents=True, exist_ok=True)
    paths, written = [], 0
    while written < total_mb * MB:
        path = folder / f"{len(paths) + 1001:04d}-c.gnt"
        with open(path, "wb", buffering=1 << 20) as f:
            file_bytes = 0
            while file_bytes < FILE_MB * MB and written + file_bytes < total_mb * MB:
                _, sample = encoded_pool[int(rng.integers(POOL_SIZE))]
                f.write(sample[:4] + tag_bytes[int(rng.integers(len(chars)))] + sample[6:])
                file_bytes += len(sample)
        paths.append(path)
        written += file_bytes
    return paths


def select_files(paths: list[Path], mb: int) -> list[Path]:
    chosen, total = [], 0
    for path in paths:
        if total >= mb * MB:
            break
        chosen.append(path)
        total += path.stat().st_size
    return chosen


# ---------------------------------------------------------------------------------- throughput
def _drain_ours(paths: list[Path]) -> int:
    count = 0
    for path in paths:
        for sample in iter_gnt(path):
            count += sample.bitmap.shape[0] > 0
    return count


def _drain_baseline(paths: list[Path]) -> int:
    count = 0
    for path in paths:
        for _tag, bitmap in baseline_fromfile_reader(path):
            count += bitmap.shape[0] > 0
    return count


def _drain_count(paths: list[Path]) -> int:
    return sum(count_gnt_samples(p) for p in paths)


def time_readers(paths: list[Path], repeats: int) -> dict[str, tuple[float, int]]:
    """Median seconds per reader over ``repeats`` alternating runs, and samples seen."""
    readers: dict[str, Callable[[list[Path]], int]] = {
        "iter_gnt (ours)": _drain_ours,
        "baseline np.fromfile per field": _drain_baseline,
        "count_gnt_samples (headers only)": _drain_count,
    }
    times: dict[str, list[float]] = {name: [] for name in readers}
    counts: dict[str, int] = {}
    for _ in range(repeats):
        for name, reader in readers.items():
            start = time.perf_counter()
            counts[name] = reader(paths)
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), counts[name]) for name in readers}


# ------------------------------------------------------------------------------------ memory
def convert_in_child(paths: list[Path]) -> dict[str, float]:
    """Run the conversion in a fresh interpreter and return its peak RSS and counts."""
    command = [sys.executable, __file__, "--child-convert", *map(str, paths)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def current_rss_mb() -> float:
    """Resident set size now (Linux /proc); NaN elsewhere."""
    status = Path("/proc/self/status")
    if not status.exists():
        return float("nan")
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_convert(paths: list[Path]) -> None:
    """iter_gnt + fit_to_square(64) over every sample, folded into a checksum; prints JSON stats."""
    baseline_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    checksum, samples, input_bytes = 1, 0, 0
    for path in paths:
        input_bytes += path.stat().st_size
        for sample in iter_gnt(path):
            checksum = zlib.adler32(fit_to_square(sample.bitmap, 64), checksum)
            samples += 1
    stats = {
        "input_mb": input_bytes / MB,
        "samples": samples,
        "seconds": time.perf_counter() - start,
        "rss_before_mb": baseline_rss_kb / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "end_rss_mb": current_rss_mb(),
        "checksum": checksum,
    }
    print(json.dumps(stats))


# ------------------------------------------------------------------------------------ report
def print_throughput_table(results: dict[str, tuple[float, int]], total_mb: float) -> None:
    print(f"\n### Throughput over {total_mb:.0f} MB of GNT (median of runs)\n")
    print("| reader | samples | median s | samples/s | MB/s |")
    print("|---|---:|---:|---:|---:|")
    for name, (seconds, count) in results.items():
        print(f"| {name} | {count} | {seconds:.3f} | {count / seconds:,.0f} | {total_mb / seconds:,.1f} |")
    ours = results["iter_gnt (ours)"][0]
    baseline = results["baseline np.fromfile per field"][0]
    print(f"\niter_gnt is **{baseline / ours:.1f}x** the baseline's samples/s.")


def print_memory_table(rows: list[dict[str, float]]) -> None:
    print("\n### Peak RSS converting GNT -> 64x64 (fresh subprocess each)\n")
    print("| input MB | samples | seconds | samples/s | RSS after imports MB | RSS at end MB | peak RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['input_mb']:.0f} | {row['samples']:.0f} | {row['seconds']:.1f} | "
            f"{row['samples'] / row['seconds']:,.0f} | {row['rss_before_mb']:.0f} | {row['end_rss_mb']:.0f} | "
            f"{row['peak_rss_mb']:.0f} |"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=256, help="MB of GNT for the throughput comparison")
    parser.add_argument("--repeats", type=int, default=3, help="runs per reader; the median is reported")
    parser.add_argument("--mem-mb", type=int, default=1024, help="larger input size for the memory test")
    parser.add_argument("--skip-memory", action="store_true", help="only run the throughput comparison")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the files (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--child-convert", nargs="+", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child_convert:
        child_convert(args.child_convert)
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_gnt_"))
    try:
        total_mb = max(args.mb, 0 if args.skip_memory else args.mem_mb)
        start = time.perf_counter()
        paths = generate_gnt_set(workdir / "gnt", total_mb)
        print(f"generated {len(paths)} files, {total_mb} MB in {time.perf_counter() - start:.1f} s under {workdir}")
        chosen = select_files(paths, args.mb)
        print_throughput_table(time_readers(chosen, args.repeats), sum(p.stat().st_size for p in chosen) / MB)
        if not args.skip_memory:
            small = select_files(paths, max(1, args.mem_mb // 4))
            print_memory_table([convert_in_child(small), convert_in_child(paths)])
    finally:
        if not args.keep:
            shutil.rmtree(workdir / "gnt" if args.workdir else workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
