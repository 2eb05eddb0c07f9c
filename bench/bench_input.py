"""Benchmark the TFRecord input pipeline (tasks.data.input_pipeline.make_dataset) on this machine.

Measures, on shards it generates itself in a temporary directory:
  read     raw read throughput of make_dataset alone (training=False, batch 1024), images/s
  feed     training throughput (images/s, median of epochs after a warm-up) of a model fed from
           TFRecord shards vs from the same data in memory, and their ratio (goal >= 0.9)
  policy   float32 vs mixed_float16 global policy
  jit      jit_compile=False vs True

    .venv/bin/python bench/bench_input.py                       # everything, default sizes
    .venv/bin/python bench/bench_input.py --only read --read-records 60000
    .venv/bin/python bench/bench_input.py --only feed --model captcha_cnn
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from models.builders import build_model  # noqa: E402
from tasks.data.input_pipeline import make_dataset  # noqa: E402

NUM_SHARDS = 8


@dataclass(frozen=True)
class TrainingData:
    images: np.ndarray
    labels: np.ndarray
    files: list[str]


@dataclass(frozen=True)
class Workload:
    model: str
    image_shape: tuple[int, int, int]
    num_classes: int
    num_heads: int
    hparams: dict


WORKLOADS = {
    "lenet5": Workload("lenet5", (32, 32, 3), 10, 1, {}),
    "resnet_cifar": Workload("resnet_cifar", (32, 32, 3), 10, 1, {"depth": 8}),
    "captcha_cnn": Workload("captcha_cnn", (60, 160, 1), 26, 4, {}),
}


def random_dataset(count: int, workload: Workload, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, *workload.image_shape), dtype=np.uint8)
    label_shape = (count,) if workload.num_heads == 1 else (count, workload.num_heads)
    labels = rng.integers(0, workload.num_classes, size=label_shape, dtype=np.int64)
    return images, labels


def _example(image: np.ndarray, label: np.ndarray, key: str) -> bytes:
    def int64s(values) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    def bytes_(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    height, width, channels = image.shape
    feature = {
        "image/encoded": bytes_(image.tobytes()),
        "image/format": bytes_(b"raw"),
        "image/class/label": int64s(np.atleast_1d(label)),
        "image/height": int64s([height]),
        "image/width": int64s([width]),
        "image/channels": int64s([channels]),
        "image/key": bytes_(key.encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_raw_shards(directory: Path, images: np.ndarray, labels: np.ndarray) -> list[str]:
    paths = [str(directory / f"bench-train.tfrecord-{i:05d}-of-{NUM_SHARDS:05d}") for i in range(NUM_SHARDS)]
    writers = [tf.io.TFRecordWriter(path) for path in paths]
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        writers[index % NUM_SHARDS].write(_example(image, label, f"{index:08d}"))
    for writer in writers:
        writer.close()
    return paths


def images_per_second(run_epoch: Callable[[], int], epochs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        run_epoch()
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        count = run_epoch()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def bench_read(directory: Path, records: int, batch_size: int, epochs: int) -> None:
    """make_dataset read throughput, training off/on x tf.data autotune off (default)/on. The configurations
    take turns pass by pass, so a noisy moment of the VM hits them alike."""
    workload = Workload("none", (32, 32, 3), 10, 1, {})
    images, labels = random_dataset(records, workload)
    files = write_raw_shards(directory, images, labels)
    datasets = {
        (training, autotune): make_dataset(files, image_shape=workload.image_shape, batch_size=batch_size,
                                           training=training, autotune=autotune)
        for training in (False, True) for autotune in (False, True)
    }
    rates: dict[tuple[bool, bool], list[float]] = {config: [] for config in datasets}
    for epoch in range(1 + epochs):  # pass 0 warms every pipeline up and is not counted
        for config, dataset in datasets.items():
            start = time.perf_counter()
            count = sum(int(batch_images.shape[0]) for batch_images, _ in dataset)
            if epoch:
                rates[config].append(count / (time.perf_counter() - start))
    for (training, autotune), values in rates.items():
        print(f"read   {records} x 32x32x3 raw, batch {batch_size}, training={training}, autotune={autotune}: "
              f"median {statistics.median(values):,.0f} img/s (passes: {', '.join(f'{v:,.0f}' for v in values)})")


def compiled_model(workload: Workload, jit_compile: bool | str) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = build_model(
        workload.model,
        input_shape=workload.image_shape,
        num_classes=workload.num_classes,
        num_heads=workload.num_heads,
        **workload.hparams,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        jit_compile=jit_compile,
    )
    return model


def fit_rate(model: keras.Model, dataset: tf.data.Dataset, count: int, epochs: int) -> float:
    def run_epoch() -> int:
        model.fit(dataset, epochs=1, verbose=0)
        return count

    return images_per_second(run_epoch, epochs)


def in_memory_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int) -> tf.data.Dataset:
    floats = images.astype(np.float32) / np.float32(255.0)
    return (
        tf.data.Dataset.from_tensor_slices((floats, labels.astype(np.int32)))
        .cache()
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def tfrecord_dataset(files: list[str], workload: Workload, batch_size: int) -> tf.data.Dataset:
    return make_dataset(
        files,
        image_shape=workload.image_shape,
        num_heads=workload.num_heads,
        batch_size=batch_size,
        training=True,
        cache=True,
    )


def bench_feed(workload: Workload, data: TrainingData, args: argparse.Namespace) -> None:
    model = compiled_model(workload, jit_compile=False)
    count = len(data.images)
    memory = fit_rate(model, in_memory_dataset(data.images, data.labels, args.batch_size), count, args.epochs)
    shards = fit_rate(model, tfrecord_dataset(data.files, workload, args.batch_size), count, args.epochs)
    print(f"feed   in-memory {memory:,.0f} img/s, TFRecord {shards:,.0f} img/s, ratio {shards / memory:.3f}")


def bench_policy(workload: Workload, data: TrainingData, args: argparse.Namespace) -> None:
    rates = {}
    for policy in ("float32", "mixed_float16"):
        keras.mixed_precision.set_global_policy(policy)
        try:
            model = compiled_model(workload, jit_compile=False)
            dataset = tfrecord_dataset(data.files, workload, args.batch_size)
            rates[policy] = fit_rate(model, dataset, len(data.images), args.epochs)
        finally:
            keras.mixed_precision.set_global_policy("float32")
    print("policy " + ", ".join(f"{policy} {rate:,.0f} img/s" for policy, rate in rates.items()))


def bench_jit(workload: Workload, data: TrainingData, args: argparse.Namespace) -> None:
    rates = {}
    for jit in (False, True):
        model = compiled_model(workload, jit_compile=jit)
        dataset = tfrecord_dataset(data.files, workload, args.batch_size)
        rates[jit] = fit_rate(model, dataset, len(data.images), args.epochs)
    print("jit    " + ", ".join(f"jit_compile={jit} {rate:,.0f} img/s" for jit, rate in rates.items()))


TRAINING_BENCHES = {"feed": bench_feed, "policy": bench_policy, "jit": bench_jit}


def bench_training(directory: Path, args: argparse.Namespace, variants: list[str]) -> None:
    workload = WORKLOADS[args.model]
    images, labels = random_dataset(args.train_records, workload)
    data = TrainingData(images, labels, write_raw_shards(directory, images, labels))
    print(f"model  {workload.model} {workload.image_shape}, {len(images)} images, batch {args.batch_size}")
    for variant in variants:
        TRAINING_BENCHES[variant](workload, data, args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--only",
        choices=["read", *TRAINING_BENCHES],
        action="append",
        help="run only these measurements (repeatable); default all",
    )
    parser.add_argument("--model", choices=sorted(WORKLOADS), default="lenet5")
    parser.add_argument("--read-records", type=int, default=60_000)
    parser.add_argument("--read-batch-size", type=int, default=1024)
    parser.add_argument("--train-records", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="measured epochs after one warm-up")
    parser.add_argument("--workdir", help="where to write shards (default: a temporary directory)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    selected = args.only or ["read", "feed", "policy", "jit"]
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        if "read" in selected:
            read_dir = Path(tmp) / "read"
            read_dir.mkdir()
            bench_read(read_dir, args.read_records, args.read_batch_size, args.epochs)
        training_variants = [v for v in TRAINING_BENCHES if v in selected]
        if training_variants:
            train_dir = Path(tmp) / "train"
            train_dir.mkdir()
            bench_training(train_dir, args, training_variants)


if __name__ == "__main__":
    main()
