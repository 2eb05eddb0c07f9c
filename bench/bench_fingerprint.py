"""Benchmark source fingerprinting with the per-file stat cache (tasks/sources/fingerprint.py).

Usage::

    .venv/bin/python bench/bench_fingerprint.py --gigabytes 2 --repeats 5
    .venv/bin/python bench/bench_fingerprint.py --gigabytes 2 \\
        --command '.venv/bin/tfpipe status images --source {dir} --artifacts {root}'

Generates (seeded) ``--gigabytes`` of random files of about ``--file-kb`` KB each in ``--classes`` class
folders, each split into subfolders of ``--per-folder`` files, under ``--dir`` (kept, and reused by a
later run with the same parameters) or a temporary directory (deleted). File mtimes are set an hour into
the past, as for data that was not just written (files modified within two seconds are never cached).
The artifact root is ``<dir>/artifacts`` (outside the data) or, with ``--root-inside``, ``<data>/artifacts``
(``cd DATA && tfpipe run``), passed as excluded either way. Reports, as a markdown table:

- today's full re-hash, ``tasks.sources.fetch.directory_fingerprint`` (skip with ``--skip-baseline``);
- cold: ``fingerprint_path`` with an empty stat cache (the page cache is warm after generation);
- warm: median of ``--repeats`` calls in this process, and of ``--repeats`` fresh processes (interpreter
  start and imports included: what a ``tfpipe status`` pays for fingerprinting plus its own start);
- one file changed (same size, new bytes, new mtime): median of ``--repeats``;
- with ``--command`` (placeholders ``{dir}``: the data folder, ``{root}``: the artifact root), the wall time
  of that shell command: first call (stat cache emptied before it), and median of ``--repeats`` later calls.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.sources.fetch import directory_fingerprint  # noqa: E402
from tasks.sources.fingerprint import fingerprint_path, stat_cache_path  # noqa: E402

SPEC_FILE = "bench-spec.json"
AN_HOUR_AGO = time.time() - 3600

CHILD = """
import sys, time
start = time.perf_counter()
from pathlib import Path
from tasks.sources.fingerprint import fingerprint_path, stat_cache_path
data, root = Path(sys.argv[1]), Path(sys.argv[2])
fingerprint_path(data, cache_file=stat_cache_path(root), exclude=[root])
print(time.perf_counter() - start)
"""


def generate(data: Path, *, gigabytes: float, file_kb: int, classes: int, per_folder: int, seed: int) -> dict:
    """Random files totalling ``gigabytes``, sizes uniform in [file_kb/2, 3*file_kb/2] KB."""
    spec = {"gigabytes": gigabytes, "file_kb": file_kb, "classes": classes, "per_folder": per_folder, "seed": seed}
    spec_path = data.parent / SPEC_FILE
    if data.is_dir() and spec_path.is_file() and json.loads(spec_path.read_text()).get("spec") == spec:
        return json.loads(spec_path.read_text())
    shutil.rmtree(data, ignore_errors=True)
    rng = np.random.default_rng(seed)
    budget = int(gigabytes * (1 << 30))
    written = files = 0
    while written < budget:
        size = min(int(rng.integers(file_kb * 512, file_kb * 1536 + 1)), budget - written)
        class_index = files % classes
        folder = data / f"class_{class_index:02d}" / f"part_{files // classes // per_folder:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{files:07d}.bin"
        path.write_bytes(rng.bytes(size))
        os.utime(path, (AN_HOUR_AGO, AN_HOUR_AGO))
        written += size
        files += 1
    summary = {"spec": spec, "files": files, "bytes": written}
    spec_path.write_text(json.dumps(summary))
    return summary


def clear_cache(cache_file: Path) -> None:
    for path in cache_file.parent.glob(f"{cache_file.name}*"):
        path.unlink()


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def child_fingerprint_seconds(data: Path, root: Path) -> tuple[float, float]:
    """(wall seconds of a fresh interpreter fingerprinting ``data``, seconds inside it after start)."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(data), str(root)], cwd=REPO, check=True, capture_output=True, text=True
    )
    return time.perf_counter() - start, float(result.stdout.strip())


def touch_one_file(data: Path, round_index: int) -> None:
    """Rewrite one file with new bytes of the same size and move its mtime (still in the past)."""
    path = data / "class_00" / "part_000" / "img_0000000.bin"
    content = bytearray(path.read_bytes())
    content[0] = (content[0] + 1) % 256
    path.write_bytes(bytes(content))
    stamp = AN_HOUR_AGO + round_index + 1
    os.utime(path, (stamp, stamp))


def run_command(template: str, data: Path, root: Path) -> float:
    command = template.format(dir=data, root=root)
    start = time.perf_counter()
    result = subprocess.run(command, shell=True, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        print(f"warning: command exited {result.returncode}: {result.stderr.strip()[-500:]}", file=sys.stderr)
    return elapsed


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="bench-fingerprint-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    root = data / "artifacts" if args.root_inside else workdir / "artifacts"
    try:
        start = time.perf_counter()
        summary = generate(
            data,
            gigabytes=args.gigabytes,
            file_kb=args.file_kb,
            classes=args.classes,
            per_folder=args.per_folder,
            seed=args.seed,
        )
        gib = summary["bytes"] / (1 << 30)
        print(f"data: {summary['files']} files, {gib:.2f} GiB under {data} ({time.perf_counter() - start:.1f} s)")
        cache_file = stat_cache_path(root)
        clear_cache(cache_file)
        rows: list[tuple[str, float, str]] = []

        def fingerprint() -> str:
            return fingerprint_path(data, cache_file=cache_file, exclude=[root])

        if not args.skip_baseline and not args.root_inside:
            seconds = timed(lambda: directory_fingerprint(data))
            rows.append(("directory_fingerprint (today: full re-hash)", seconds, f"{gib / seconds:.2f} GiB/s"))
        cold = timed(fingerprint)
        rows.append(("cold: empty stat cache", cold, f"{gib / cold:.2f} GiB/s"))
        warm = [timed(fingerprint) for _ in range(args.repeats)]
        rows.append((f"warm, in process (median of {args.repeats})", statistics.median(warm), spread(warm)))
        children = [child_fingerprint_seconds(data, root) for _ in range(args.repeats)]
        walls, insides = [wall for wall, _ in children], [inside for _, inside in children]
        rows.append((f"warm, fresh process wall (median of {args.repeats})", statistics.median(walls), spread(walls)))
        rows.append(("  of which imports + fingerprint", statistics.median(insides), spread(insides)))
        before = fingerprint()
        changed = []
        for index in range(args.repeats):
            touch_one_file(data, index)
            changed.append(timed(fingerprint))
        assert fingerprint() != before, "changing a file must change the fingerprint"
        rows.append((f"one file changed (median of {args.repeats})", statistics.median(changed), spread(changed)))
        if args.command:
            clear_cache(cache_file)  # the command's first call starts from an empty stat cache
            first = run_command(args.command, data, root)
            later, baseline = [], []
            for _ in range(args.repeats):  # interleaved with the baseline command, when there is one
                if args.baseline_command:
                    baseline.append(run_command(args.baseline_command, data, root))
                later.append(run_command(args.command, data, root))
            rows.append(("--command, first call (empty stat cache)", first, ""))
            rows.append((f"--command, later calls (median of {args.repeats})", statistics.median(later), spread(later)))
            if baseline:
                ratios = [b / c for b, c in zip(baseline, later, strict=True)]
                rows.append((f"--baseline-command, interleaved (median of {args.repeats})", statistics.median(baseline),
                             spread(baseline)))
                rows.append(("ratio baseline / command per repeat, median", statistics.median(ratios),
                             ", ".join(f"{r:.1f}" for r in ratios)))
        print(f"\n### Fingerprint of {summary['files']} files, {gib:.2f} GiB\n")
        print("| measurement | seconds | note |")
        print("|---|---:|---|")
        for name, seconds, note in rows:
            print(f"| {name} | {seconds:.3f} | {note} |")
        print(f"\nstat cache: {cache_file} ({cache_file.stat().st_size / (1 << 20):.1f} MiB)")
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def spread(values: list[float]) -> str:
    return f"min {min(values):.3f}, max {max(values):.3f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", type=float, default=2.0, help="total size of the generated files")
    parser.add_argument("--file-kb", type=int, default=100, help="mean file size in KB")
    parser.add_argument("--classes", type=int, default=20, help="class folders")
    parser.add_argument("--per-folder", type=int, default=500, help="files per subfolder of a class folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="warm calls (and command calls) per measurement")
    parser.add_argument("--dir", type=Path, default=None, help="keep (and reuse) the data here (default: temp)")
    parser.add_argument("--root-inside", action="store_true", help="artifact root inside the data folder")
    parser.add_argument("--skip-baseline", action="store_true", help="do not time directory_fingerprint")
    parser.add_argument("--command", default="", help="shell command to time; {dir} and {root} are replaced")
    parser.add_argument("--baseline-command", default="",
                        help="another command (e.g. the previous release's status), timed interleaved with --command")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
