"""Benchmark: a class-per-folder of JPEGs decoded to 224x224 arrays, tfpipe against a plain PIL loop, same run.

    .venv/bin/python bench/bench_image_decode.py --images 10000 --repeats 5

Writes ``--images`` seeded photo-like JPEGs of 500x375 (quality 90: gradients, shapes, noise; see
tests/fakes/images.py) into a temporary class-per-folder tree (or ``--dir``, kept for the next run), reads
every file once so all runs find them in the page cache, then times, interleaved (the order alternates from
one repeat to the next):

* baseline, one image at a time: ``Image.open``, ``convert("RGB")``, ``resize((224, 224))`` (Pillow's
  default bicubic filter), ``np.asarray``. It squashes the image to the square: aspect ratio NOT kept;
* tfpipe: ``decode_images(paths, channels=3, size=224, fit="pad", workers=2)``, which does at least as much:
  aspect kept, resized and padded to the square (EXIF orientation and alpha handled, PNG CRCs checked).

Also timed, for context: tfpipe with one worker (what the reduced JPEG decode alone gives) and tfpipe with
``fit="crop"`` (crop needs more pixels, so 500x375 cannot be decoded at half scale). Prints every run's
seconds and images/s, and the median of the per-repeat ratios baseline time / tfpipe time. Last, the
pixels of tfpipe's reduced decode are compared with a full decode resized with INTER_AREA (quality check).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

WIDTH, HEIGHT, QUALITY, SIZE = 500, 375, 90, 224
CLASSES = 10
QUALITY_SAMPLE = 200


def write_one(args: tuple[Path, int, int]) -> int:
    """Write image ``index`` (its own seed, so the files don't depend on how work is split)."""
    from tests.fakes.images import photo_like, save_image

    path, seed, index = args
    rng = np.random.default_rng([seed, index])
    save_image(photo_like(rng, WIDTH, HEIGHT, shapes=int(rng.integers(3, 9))), path, "JPEG", quality=QUALITY)
    return path.stat().st_size


def make_images(root: Path, count: int, seed: int, workers: int) -> list[Path]:
    """``count`` JPEGs in ``root/class_<k>/<i>.jpg``, listed by the class-folder scan (as the decode stage does).

    A ``root`` that already holds the same set (``made.json``: count and seed) is reused as it is.
    """
    from tasks.datasets.images.folder import scan_class_folders

    made = root / "made.json"
    wanted = json.dumps({"count": count, "seed": seed, "size": [WIDTH, HEIGHT], "quality": QUALITY})
    if not (made.exists() and made.read_text() == wanted):
        for k in range(CLASSES):
            (root / f"class_{k}").mkdir(parents=True, exist_ok=True)
        jobs = [(root / f"class_{i % CLASSES}" / f"{i:06d}.jpg", seed, i) for i in range(count)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(write_one, jobs, chunksize=64))
        made.write_text(wanted)
    paths = [entry.path for entry in scan_class_folders(root).images]
    sizes = [path.stat().st_size for path in paths]
    print(f"{len(paths)} JPEGs of {WIDTH}x{HEIGHT}, quality {QUALITY}: {sum(sizes) / 1e6:.0f} MB, "
          f"mean {np.mean(sizes) / 1e3:.0f} kB")
    return paths


def warm_page_cache(paths: list[Path]) -> None:
    for path in paths:
        path.read_bytes()


def baseline(paths: list[Path]) -> int:
    """The plain loop: one image at a time, full decode, squashed to 224x224 by Pillow's bicubic resize."""
    from PIL import Image

    count = 0
    for path in paths:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB").resize((SIZE, SIZE)))
        count += pixels.shape[0] > 0
    return count


def tfpipe(paths: list[Path], *, fit: str = "pad", workers: int = 2) -> int:
    from tasks.datasets.images.folder import decode_images

    count = 0
    for result in decode_images(paths, channels=3, size=SIZE, fit=fit, workers=workers):
        count += result.image is not None
    return count


METHODS: dict[str, Callable[[list[Path]], int]] = {
    "baseline": baseline,
    "tfpipe": tfpipe,
    "tfpipe_1_worker": lambda paths: tfpipe(paths, workers=1),
    "tfpipe_crop": lambda paths: tfpipe(paths, fit="crop"),
}
LABELS = {
    "baseline": "baseline: PIL open + convert('RGB') + resize((224, 224)) (squash), one at a time",
    "tfpipe": "tfpipe decode_images, fit pad, 2 workers",
    "tfpipe_1_worker": "tfpipe decode_images, fit pad, 1 worker",
    "tfpipe_crop": "tfpipe decode_images, fit crop, 2 workers",
}


def timed(method: str, paths: list[Path]) -> float:
    start = time.perf_counter()
    count = METHODS[method](paths)
    seconds = time.perf_counter() - start
    if count != len(paths):
        raise RuntimeError(f"{method} decoded {count} of {len(paths)} images")
    return seconds


def quality_check(paths: list[Path]) -> tuple[float, float]:
    """Mean and 99th-percentile absolute pixel difference (0..255) of tfpipe's pad output against a full decode
    resized with cv2.INTER_AREA into the same place."""
    import cv2
    from PIL import Image

    from tasks.datasets.images.folder import load_image

    diffs = []
    for path in paths:
        with Image.open(path) as image:
            full = np.asarray(image.convert("RGB"))
        scale = SIZE / max(WIDTH, HEIGHT)
        width, height = round(WIDTH * scale), round(HEIGHT * scale)
        reference = cv2.resize(full, (width, height), interpolation=cv2.INTER_AREA).astype(np.int16)
        top, left = (SIZE - height) // 2, (SIZE - width) // 2
        got = load_image(path, channels=3, size=SIZE, fit="pad")[top : top + height, left : left + width]
        diffs.append(np.abs(got.astype(np.int16) - reference).ravel())
    every = np.concatenate(diffs)
    return float(every.mean()), float(np.percentile(every, 99))


def describe_machine() -> str:
    import cv2
    import PIL
    from PIL import features

    return (f"{os.cpu_count()} CPUs ({platform.machine()}, {platform.processor() or 'unknown processor'}), "
            f"Python {platform.python_version()}, Pillow {PIL.__version__} (libjpeg-turbo "
            f"{features.version('libjpeg_turbo')}), OpenCV {cv2.__version__}, NumPy {np.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only-main", action="store_true", help="time only the baseline and tfpipe (2 workers)")
    parser.add_argument("--dir", type=Path, help="keep the generated JPEGs here (reused by a later run)")
    args = parser.parse_args()
    methods = ["baseline", "tfpipe"] if args.only_main else list(METHODS)
    print(describe_machine())
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    with tempfile.TemporaryDirectory(prefix="bench_image_decode_") as tmp:
        paths = make_images(args.dir or Path(tmp), args.images, args.seed, workers=os.cpu_count() or 1)
        warm_page_cache(paths)
        for repeat in range(args.repeats):
            order = methods if repeat % 2 == 0 else methods[::-1]
            for name in order:
                seconds[name].append(timed(name, paths))
                value = seconds[name][-1]
                print(f"repeat {repeat + 1} {name}: {value:.2f} s, {len(paths) / value:,.0f} images/s", flush=True)
        mean_diff, p99_diff = quality_check(paths[:QUALITY_SAMPLE])
    ratios = [b / t for b, t in zip(seconds["baseline"], seconds["tfpipe"], strict=True)]
    print()
    print(f"| {args.images} JPEGs 500x375 -> 224x224x3, {args.repeats} interleaved repeats | seconds per run | "
          "images/s (median) |")
    print("|---|---|---:|")
    for name in methods:
        runs = ", ".join(f"{s:.2f}" for s in seconds[name])
        print(f"| {LABELS[name]} | {runs} | {len(paths) / statistics.median(seconds[name]):,.0f} |")
    print(f"| ratio baseline time / tfpipe time, per repeat | {', '.join(f'{r:.2f}' for r in ratios)} | "
          f"median **{statistics.median(ratios):.2f}x** |")
    print(f"quality: tfpipe pad vs full decode + INTER_AREA on {min(QUALITY_SAMPLE, len(paths))} images: mean abs "
          f"difference {mean_diff:.2f}, 99th percentile {p99_diff:.0f} (0..255)")


if __name__ == "__main__":
    main()
