"""Time batched prediction (batch 64) against one image at a time with a small exported model.

Usage: .venv/bin/python bench/bench_predict.py [--images 512] [--runs 5] [--batch-size 64] [--size 32]

Writes N random PNGs and a small CNN (untrained; speed does not depend on the weights) exported with
tasks.ops.freeze into a temporary directory, then reports the median over ``--runs`` of:
  * Predictor.predict end to end (read files, test-decode each, run the SavedModel), and
  * the SavedModel signature alone on bytes already in memory,
for batch size 1 and ``--batch-size``, as images/s and the batched / one-at-a-time ratio.
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

from tasks.ops.freeze import export_serving_model  # noqa: E402
from tasks.ops.predict import Predictor, load_predictor  # noqa: E402

CLASS_NAMES = [f"class_{i}" for i in range(10)]


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


def median_seconds(work: Callable[[], object], runs: int) -> float:
    work()  # warm-up: traces the decode check and the signature for this batch shape
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def signature_only(predictor: Predictor, encoded: list[bytes], batch_size: int) -> None:
    for start in range(0, len(encoded), batch_size):
        predictor.run_batch(encoded[start : start + batch_size])


def report(label: str, count: int, one_at_a_time: float, batched: float, batch_size: int) -> None:
    print(
        f"{label:<28} batch 1: {count / one_at_a_time:8.1f} img/s   "
        f"batch {batch_size}: {count / batched:8.1f} img/s   ratio {one_at_a_time / batched:5.1f}x"
    )


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

        print(f"{args.images} PNGs of {args.size}x{args.size}x3, median of {args.runs} runs")
        end_to_end = [
            median_seconds(lambda b=b: predictor.predict(paths, batch_size=b), args.runs)
            for b in (1, args.batch_size)
        ]
        report("predict() end to end", args.images, *end_to_end, args.batch_size)
        model_only = [
            median_seconds(lambda b=b: signature_only(predictor, encoded, b), args.runs)
            for b in (1, args.batch_size)
        ]
        report("SavedModel signature only", args.images, *model_only, args.batch_size)


if __name__ == "__main__":
    main()
