"""Benchmark the HWDB decode stage: samples/s and peak memory of ``DecodeHwdb`` for growing inputs.

Usage::

    .venv/bin/python bench/bench_hwdb.py --files 2 8 --chars 300 --per-char 6 --image-size 64

For each ``--files`` value a fake HWDB1.1 set (``tests.fakes.hwdb``, real ``.gnt`` bytes, that many
train files plus one test file) is generated, then decoded by ``DecodeHwdb`` in a fresh subprocess under
Luigi's local scheduler, which reports wall time and peak RSS (``ru_maxrss``). Peak RSS should stay flat
as the input grows: the stage streams file by file and appends in chunks.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GB2312_LEVEL1_FIRST = 0xB0A1  # lead byte 0xB0..0xD7, trail byte 0xA1..0xFE


def level1_chars(count: int) -> str:
    """The first ``count`` GB2312 level-1 characters (94 per row)."""
    chars = []
    for lead in range(0xB0, 0xD8):
        for trail in range(0xA1, 0xFF):
            try:
                chars.append(bytes([lead, trail]).decode("gb2312"))
            except UnicodeDecodeError:
                continue
            if len(chars) == count:
                return "".join(chars)
    return "".join(chars)


def child(source: Path, artifacts: Path, image_size: int) -> None:
    """Run only the decode stage (its Download fingerprints the folder first) and print a JSON line."""
    import luigi
    import luigi.configuration

    from tasks.datasets.hwdb.task import DecodeHwdb

    config = luigi.configuration.get_config()
    if not config.has_section("ArtifactStore"):
        config.add_section("ArtifactStore")
    config.set("ArtifactStore", "root", str(artifacts))
    task = DecodeHwdb(dataset="hwdb", source=str(source), image_size=image_size)
    assert luigi.build([task.requires()], local_scheduler=True, log_level="WARNING")
    started = time.perf_counter()
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    seconds = time.perf_counter() - started
    records = task.output().manifest()["records"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"samples": sum(records.values()), "seconds": seconds, "peak_rss_mb": peak_mb}))


def measure(files: int, chars: str, per_char: int, image_size: int, workdir: Path) -> dict[str, float]:
    from tests.fakes.hwdb import write_fake_hwdb

    source = workdir / f"src-{files}"
    fake = write_fake_hwdb(source, chars=chars, train_files=files, test_files=1, per_char_per_file=per_char)
    input_mb = sum(p.stat().st_size for p in fake.train_files + fake.test_files) / (1 << 20)
    command = [sys.executable, __file__, "--child", str(source), str(workdir / f"art-{files}"), str(image_size)]
    result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return {"files": files + 1, "input_mb": round(input_mb, 1), **measured}


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[2, 8], help="train files per run")
    parser.add_argument("--chars", type=int, default=300, help="characters per file")
    parser.add_argument("--per-char", type=int, default=6, help="samples per character per file")
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    chars = level1_chars(args.chars)
    with tempfile.TemporaryDirectory(prefix="bench-hwdb-") as tmp:
        for files in args.files:
            row = measure(files, chars, args.per_char, args.image_size, Path(tmp))
            rate = row["samples"] / row["seconds"]
            print(f"{row['files']:3d} files {row['input_mb']:7.1f} MB  {row['samples']:7d} samples  "
                  f"{rate:8.0f} samples/s  peak RSS {row['peak_rss_mb']:6.0f} MB")


if __name__ == "__main__":
    main()
