"""Benchmark: CIFAR decode + TFRecord shard writing, against the seeds' approach, in the same run.

    .venv/bin/python bench/bench_shards.py --images 60000 --repeats 9

Baseline (the seeds): for each image of each pickle batch, PNG-encode it, build one ``tf.train.Example``
and write it with ``tf.io.TFRecordWriter``, single thread. tfpipe: the restricted-pickle decode
(tasks/datasets/cifar/codec.py) and ``write_split_shards`` (raw uint8, hand-encoded Examples, TF-free writer).
Also measures reading the shards back with the training input pipeline (tf.data, batch 1024).
Every measurement runs in a fresh process after os.sync(); prints a markdown table of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tasks and the test-support fakes (tests.fakes) import from the repo root


def make_batches(directory: Path, total: int) -> list[Path]:
    """Six batches of fake images in ``directory`` (protocol 4) and the same batches in ``directory/py2`` in the
    official files' Python 2 layout; ``counts.json`` beside each set."""
    from tasks.datasets.cifar.codec import CIFAR10
    from tests.fakes.cifar import fake_cifar_images, write_cifar_batch

    rng = np.random.default_rng(0)
    (directory / "py2").mkdir()
    paths, counts = [], {}
    for index, part in enumerate(np.array_split(np.arange(total), 6)):
        labels = rng.integers(0, 10, len(part))
        images = fake_cifar_images(labels, 10, rng)
        path = directory / f"data_batch_{index + 1}"
        # Protocol 4 stores bytes as BINBYTES, read by one readinto; the official Python 2 files store them as
        # BINSTRINGs, read and then copied once more (py2/, measured as tfpipe_py2).
        write_cifar_batch(path, images, labels, spec=CIFAR10, protocol=4)
        write_cifar_batch(directory / "py2" / path.name, images, labels, spec=CIFAR10, python2=True)
        paths.append(path)
        counts[path.name] = int(len(part))
    for folder in (directory, directory / "py2"):
        (folder / "counts.json").write_text(json.dumps(counts))
    return paths


def baseline(batches: list[Path], out: Path) -> int:
    """The seeds' loop: pickle.load, PNG per image, one tf.train.Example per image, one thread."""
    import pickle

    import cv2
    import tensorflow as tf

    count = 0
    with tf.io.TFRecordWriter(str(out / "baseline.tfrecord")) as writer:
        for path in batches:
            with open(path, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")  # the seeds' (unsafe) loader
            data = np.asarray(batch[b"data"]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            for image, label in zip(data, batch[b"labels"], strict=True):
                png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()
                example = tf.train.Example(features=tf.train.Features(feature={
                    "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                    "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"png"])),
                    "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
                    "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[32])),
                    "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[32])),
                }))
                writer.write(example.SerializeToString())
                count += 1
    return count


def tfpipe_path(batches: list[Path], out: Path, image_format: str = "raw") -> int:
    from tasks.data.shards import ShardSpec, write_split_shards
    from tasks.datasets.cifar.codec import CIFAR10
    from tasks.datasets.cifar.parallel_decode import iter_batches
    from tasks.formats.examples import encode_keys, pixel_digests

    # Decode as the decode stage does (iter_batches: two reader threads, batches in order), every batch's
    # pixels straight into one preallocated array (the total comes from counts.json, written with the batches).
    counts = json.loads((batches[0].parent / "counts.json").read_text())
    all_images = np.empty((sum(counts.values()), 32, 32, 3), np.uint8)
    all_labels = np.empty(len(all_images), np.int32)
    keys: list[str] = []
    start = 0
    for name, batch in iter_batches(batches, CIFAR10, workers=2, images_out=all_images):
        end = start + len(batch.labels)
        all_labels[start:end] = batch.labels
        keys.extend(f"{name}/{i:05d}" for i in range(len(batch.labels)))
        start = end
    rows = np.arange(len(all_labels))
    # The content keys are computed as the decode stage's ExampleWriter does.
    write_split_shards(out, "train", all_images, all_labels, encode_keys(keys), pixel_digests(all_images), rows,
                       ShardSpec("cifar10", image_format, num_shards=8), workers=2)
    return len(rows)


def read_back(out: Path, image_format: str, steady_passes: int = 3) -> dict[str, float]:
    """Images/s of the evaluation input pipeline over the shards: its first pass, and the median of the next
    ``steady_passes`` (what every later training epoch sees). Building the pipeline (reading the format,
    tracing the parse function) happens before the clock, as imports do."""
    from tasks.data.input_pipeline import make_dataset

    files = sorted(str(p) for p in out.glob("cifar10-train.tfrecord-*"))
    dataset = make_dataset(files, image_shape=(32, 32, 3), batch_size=1024, training=False,
                           image_format=image_format)
    rates = []
    for _ in range(1 + steady_passes):
        os.sync()
        start, count = time.perf_counter(), 0
        for images, _ in dataset:
            count += int(images.shape[0])
        rates.append(count / (time.perf_counter() - start))
    return {"first pass": rates[0], "later passes": statistics.median(rates[1:])}


def write_rate(function, batches: list[Path], out: Path) -> dict[str, float]:  # noqa: ANN001
    # Flush the previous run's dirty pages first, so no run pays for another's disk writeback.
    os.sync()
    start = time.perf_counter()
    count = function(batches, out)
    return {"write": count / (time.perf_counter() - start)}


METHODS = {
    "baseline": lambda batches, out: write_rate(baseline, batches, out),
    "tfpipe": lambda batches, out: write_rate(lambda b, o: tfpipe_path(b, o, "raw"), batches, out),
    "tfpipe_py2": lambda batches, out: write_rate(
        lambda b, o: tfpipe_path([p.parent / "py2" / p.name for p in b], o, "raw"), batches, out),
    "tfpipe_png": lambda batches, out: write_rate(lambda b, o: tfpipe_path(b, o, "png"), batches, out),
    "read": lambda batches, out: read_back(out, "raw"),
    "read_png": lambda batches, out: read_back(out, "png"),
}
OUTPUT_OF = {"baseline": "baseline", "tfpipe": "tfpipe", "tfpipe_py2": "tfpipe_py2", "tfpipe_png": "tfpipe_png",
             "read": "tfpipe",
             "read_png": "tfpipe_png"}


def run_child(method: str, root: Path) -> None:
    """One measurement in a fresh process: no thread pools or caches left by another method."""
    batches = sorted(root.glob("data_batch_*"))
    out = root / OUTPUT_OF[method]
    if not method.startswith("read"):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
    # Every method's imports happen before the clock starts.
    if method in ("baseline", "read", "read_png"):
        import cv2  # noqa: F401
        import tensorflow as tf  # noqa: F401
    else:
        import tasks.data.shards  # noqa: F401
        import tasks.datasets.cifar.parallel_decode  # noqa: F401
    print(json.dumps(METHODS[method](batches, out)))


def measure(method: str, root: Path) -> dict[str, float]:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, __file__, "--child", method, "--root", str(root)], check=True,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before each write measurement")
    parser.add_argument("--child", choices=sorted(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args.root)
        return
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_batches(root, args.images)
        for _ in range(args.repeats):
            for name in METHODS:
                if not name.startswith("read"):
                    # Memory freed a few seconds ago goes back to this VM's host (free page reporting) and is
                    # slow to touch again (docs/PERFORMANCE.md): every write measurement starts equally cold,
                    # not warmer because it follows a short child.
                    time.sleep(args.settle)
                for measure_name, rate in measure(name, root).items():
                    results.setdefault((name, measure_name), []).append(rate)
    median = {k: statistics.median(v) for k, v in results.items()}
    for (name, measure_name), values in results.items():
        print(f"{name} {measure_name}: runs {', '.join(f'{v:,.0f}' for v in values)} images/s")
    ratios = [t / b for t, b in zip(results["tfpipe", "write"], results["baseline", "write"], strict=True)]
    rows = [
        ("baseline: pickle.load + PNG + tf.train.Example, 1 thread", median["baseline", "write"]),
        ("tfpipe: restricted decode + raw shards (8 shards; 2 decode and 2 writer threads)", median["tfpipe", "write"]),
        ("tfpipe on the same batches in the official Python 2 pickle layout", median["tfpipe_py2", "write"]),
        ("tfpipe with PNG-encoded shards instead of raw", median["tfpipe_png", "write"]),
        ("read raw shards with make_dataset (tf.data, batch 1024): first pass", median["read", "first pass"]),
        ("read raw shards: later passes (median of 3 per run)", median["read", "later passes"]),
        ("read PNG shards with make_dataset: first pass", median["read_png", "first pass"]),
        ("read PNG shards: later passes", median["read_png", "later passes"]),
    ]
    print(f"| measure ({args.images} images, median of {args.repeats} runs, each in a fresh process) | images/s |")
    print("|---|---:|")
    for label, value in rows:
        print(f"| {label} | {value:,.0f} |")
    print(f"| ratio tfpipe / baseline: median of the runs' ratios (range) | {statistics.median(ratios):.1f}x "
          f"({min(ratios):.1f}x - {max(ratios):.1f}x) |")
    py2 = [t / b for t, b in zip(results["tfpipe_py2", "write"], results["baseline", "write"], strict=True)]
    print(f"| ratio tfpipe on Python 2 batches / baseline (range) | {statistics.median(py2):.1f}x "
          f"({min(py2):.1f}x - {max(py2):.1f}x) |")


if __name__ == "__main__":
    main()
