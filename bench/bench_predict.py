"""Time Predictor.predict end to end against the SavedModel signature alone, batch 1 and batch 64.

Usage: .venv/bin/python bench/bench_predict.py [--images 512] [--runs 5] [--batch-size 64] [--size 32]

Writes N random PNGs and a small CNN (untrained; speed does not depend on the weights) exported with
tasks.export.freeze into a temporary directory, then for batch size 1 and ``--batch-size`` times, in turns
within every run (so both see the same machine load):
  * the SavedModel signature alone on bytes already in memory, and
  * Predictor.predict end to end (read the files, check them, run the model),
and reports the medians over ``--runs`` as images/s and predict() / signature, as the median of the
per-run ratios (each run's two timings are back to back). The files sit in the page cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tasks.export.freeze import export_serving_model  # noqa: E402
from tasks.export.predict import Predictor, load_predictor  # noqa: E402

CLASS_NAMES = [f"class_{i}" for i in range(10)]
GOAL = 0.7  # predict() end to end at --batch-size, as a fraction of the signature-only rate


def small_cnn(size: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(CLASS_NAMES), activation="softmax")(x)
    return keras.Model(inputs, outputs)


def write_pngs(directory: Path, count: int, size: int) -> list[Path]:
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True)
    paths = []
    for i in range(count):
        path = directory / f"{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def time_once(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def signature_only(predictor: Predictor, encoded: list[bytes], batch_size: int) -> None:
    for start in range(0, len(encoded), batch_size):
        predictor.run_batch(encoded[start : start + batch_size])


def measure(predictor: Predictor, paths: list[Path], encoded: list[bytes], batch_size: int, runs: int) -> dict:
    """Seconds per run of the signature alone and of predict() end to end, taking turns in every run."""
    work = {
        "signature": lambda: signature_only(predictor, encoded, batch_size),
        "predict": lambda: predictor.predict(paths, batch_size=batch_size),
    }
    for job in work.values():
        job()  # warm-up: the first call of a batch shape, the thread pool's first start
    seconds: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(runs):
        for name, job in work.items():
            seconds[name].append(time_once(job))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        root = Path(tmp)
        export_serving_model(
            small_cnn(args.size), root / "model", image_shape=(args.size, args.size, 3), class_names=CLASS_NAMES
        )
        paths = write_pngs(root / "images", args.images, args.size)
        encoded = [p.read_bytes() for p in paths]
        predictor = load_predictor(root / "model")

        print(f"{args.images} PNGs of {args.size}x{args.size}x3, median of {args.runs} runs (img/s)")
        print(f"{'batch':>6} {'signature only':>15} {'predict() e2e':>14} {'e2e / signature':>16}  per-run ratios")
        for batch_size in (1, args.batch_size):
            seconds = measure(predictor, paths, encoded, batch_size, args.runs)
            ratios = [s / p for s, p in zip(seconds["signature"], seconds["predict"], strict=True)]
            signature_rate = args.images / statistics.median(seconds["signature"])
            predict_rate = args.images / statistics.median(seconds["predict"])
            print(
                f"{batch_size:>6} {signature_rate:>15,.0f} {predict_rate:>14,.0f} "
                f"{statistics.median(ratios):>15.2f}x  {' '.join(f'{r:.2f}' for r in ratios)}"
            )
        print(
            f"goal: predict() at batch {args.batch_size} >= {GOAL:.1f}x the signature-only rate "
            f"(median of the per-run ratios): {'met' if statistics.median(ratios) >= GOAL else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
