"""Training throughput of tfpipe's custom loop (the multi_worker / parameter_server path, here on the default
one-device strategy) against ``model.fit`` on one device: same model, same TFRecord shards, same epochs.
``fit`` is tfpipe's fit path with its callbacks
(backup, history, early stopping, best-weights checkpoint, TensorBoard with weight histograms); ``fit_bare`` is
``model.fit`` with validation and no callbacks at all; ``loop`` is the custom loop as Train runs it
(validation, checkpoints, history and TensorBoard scalars every epoch).

    .venv/bin/python bench/bench_custom_loop.py [--examples 20000] [--epochs 3] [--repeats 3] [--model mlp]

Runs alternate (fit, fit_bare, loop, fit, ...) in one process, after one untimed warm-up of each; prints the
median examples/s of each and the ratios of the loop to both.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tasks.training.custom_loop import train_on_cluster  # noqa: E402
from tasks.training.fit import TrainConfig, compile_model, fit, tfrecord_datasets  # noqa: E402
from tasks.training.plan import TrainingJob  # noqa: E402


def write_shards(directory: Path, count: int, shape: tuple[int, int, int], seed: int) -> list[str]:
    """Raw-pixel TFRecords in tfpipe's schema, labels a function of the pixels (learnable)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, *shape), dtype=np.uint8)
    labels = (images.reshape(count, -1)[:, :16].mean(axis=1) / 25.6).astype(np.int64).clip(0, 9)
    path = directory / f"part-{seed}.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image, label in zip(images, labels, strict=True):
            feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
                       "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"raw"])),
                       "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return [str(path)]


def timed(function, *args) -> float:  # noqa: ANN001 - a training call
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--size", type=int, default=28)
    args = parser.parse_args()
    shape = (args.size, args.size, 1)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        train = write_shards(root, args.examples, shape, seed=1)
        validation = write_shards(root, max(args.examples // 10, args.batch_size), shape, seed=2)
        steps = math.ceil(args.examples / args.batch_size)
        config = TrainConfig(model=args.model, image_shape=shape, num_classes=10, num_heads=1, epochs=args.epochs,
                             batch_size=args.batch_size, steps_per_epoch=steps, patience=args.epochs + 1,
                             shuffle_buffer=10_000)
        runs: dict[str, list[float]] = {"fit": [], "fit_bare": [], "loop": []}

        def with_fit(index: int) -> None:
            fit(config, train, validation, root / f"fit-{index}")

        def with_bare_fit(index: int) -> None:
            train_data, validation_data = tfrecord_datasets(config, train, validation)
            compile_model(config).fit(train_data, validation_data=validation_data, epochs=config.epochs, verbose=0)

        def with_loop(index: int) -> None:
            train_on_cluster(TrainingJob(config, tuple(train), tuple(validation), "raw", root / f"loop-{index}",
                                         is_chief=True))

        variants = {"fit": with_fit, "fit_bare": with_bare_fit, "loop": with_loop}
        for function in variants.values():
            timed(function, -1)
        for index in range(args.repeats):
            for name, function in variants.items():
                runs[name].append(timed(function, index))
        examples = args.epochs * steps * args.batch_size
        rates = {name: [examples / seconds for seconds in times] for name, times in runs.items()}
        for name, values in rates.items():
            print(f"{name:5s} examples/s: median {statistics.median(values):8.0f}  runs "
                  + ", ".join(f"{v:.0f}" for v in values))
        loop = statistics.median(rates["loop"])
        print(f"loop / fit: {loop / statistics.median(rates['fit']):.2f}x, loop / fit_bare: "
              f"{loop / statistics.median(rates['fit_bare']):.2f}x ({args.model}, {args.examples} examples "
              f"{shape}, batch {args.batch_size}, {args.epochs} epochs, "
              f"{args.repeats} runs each)")


if __name__ == "__main__":
    main()
