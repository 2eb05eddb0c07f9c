"""Bottleneck features: batched extraction vs one image per call, a head epoch on cached features vs an
end-to-end epoch through the same backbone, and an incremental rerun after adding 1 % more images.

Usage: .venv/bin/python bench/bench_bottleneck.py [--images 512] [--backbone keras:MobileNetV3Small]
                                                  [--size 224] [--repeats 3]

The backbone is any ``--backbone`` form; a Keras application is built with ``weights=none`` (speed does not
depend on the weights; no pretrained weights can be downloaded on these machines). "Backbone alone, batched"
is the backbone's own batched calls with nothing else: the most any batched extraction can gain over one call
per image on this machine. Every measurement is repeated ``--repeats`` times,
interleaved with its baseline, and the median of the per-repeat ratios is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from models.backbone_spec import KERAS_PREFIX, BackboneSpec, parse_backbone  # noqa: E402
from models.backbones import load_backbone  # noqa: E402
from models.heads import build_feature_head, compose  # noqa: E402
from tasks.features.cache import FeatureCache  # noqa: E402
from tasks.features.extract import extract  # noqa: E402
from tasks.formats.examples import pixel_digests  # noqa: E402


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def batches(images: np.ndarray, labels: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, ...]]:
    for start in range(0, len(images), size):
        chunk = images[start:start + size]
        yield chunk, labels[start:start + size], pixel_digests(chunk)


def one_per_call(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """retrain.py's way: one backbone call per image."""
    return np.concatenate([model.predict_on_batch(image[None].astype(np.float32) / 255.0) for image in images])


def bench_spec(text: str) -> BackboneSpec:
    """A Keras application without weights (none can be downloaded here); any other form as given."""
    return parse_backbone(text, weights="none") if text.startswith(KERAS_PREFIX) else parse_backbone(text)


def backbone_alone(model: keras.Model, images: np.ndarray, size: int) -> np.ndarray:
    """The backbone's own batched calls and nothing else: the floor under any batched extraction."""
    return np.concatenate([model.predict_on_batch(images[start:start + size].astype(np.float32) / 255.0)
                           for start in range(0, len(images), size)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--backbone", default="keras:MobileNetV3Small")
    parser.add_argument("--size", type=int, default=224, help="side of the dataset's images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, args.images).astype(np.int32)
    model = load_backbone(bench_spec(args.backbone), (args.size, args.size, 3))
    for traced in (1, args.batch_size, args.images % args.batch_size):  # every batch shape, before the clock
        if traced:
            model.predict_on_batch(images[:traced].astype(np.float32) / 255.0)
    extra = max(1, args.images // 100)
    grown = np.concatenate([images, rng.integers(0, 256, (extra, args.size, args.size, 3), dtype=np.uint8)])
    grown_labels = np.concatenate([labels, labels[:extra]])
    rows: dict[str, list[float]] = {name: [] for name in ("one per call", "backbone alone, batched",
                                                          "batched, empty cache",
                                                          f"rerun, +{extra} images", "head epoch", "end-to-end epoch")}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            rows["one per call"].append(timed(lambda: one_per_call(model, images)))
            rows["backbone alone, batched"].append(timed(lambda: backbone_alone(model, images, args.batch_size)))
            cache = FeatureCache(Path(scratch) / f"ns{repeat}")
            features: list[np.ndarray] = []
            rows["batched, empty cache"].append(timed(lambda c=cache, out=features: out.append(
                extract(model, batches(images, labels, args.batch_size), c)[0])))
            rows[f"rerun, +{extra} images"].append(timed(lambda c=cache: extract(
                model, batches(grown, grown_labels, args.batch_size), c)))
            cached = features[0]
            head = build_feature_head(cached.shape[1], 5)
            head.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
            head.fit(cached[:8], labels[:8], verbose=0)  # trace before the clock
            rows["head epoch"].append(timed(lambda h=head, x=cached: h.fit(x, labels, batch_size=args.batch_size,
                                                                            epochs=1, verbose=0)))
            backbone = load_backbone(bench_spec(args.backbone), (args.size, args.size, 3),
                                     trainable_top_layers=10_000)
            whole = compose(backbone, build_feature_head(cached.shape[1], 5))
            whole.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
            pixels = images.astype(np.float32) / 255.0
            whole.fit(pixels[:8], labels[:8], verbose=0)
            rows["end-to-end epoch"].append(timed(lambda w=whole, x=pixels: w.fit(
                x, labels, batch_size=args.batch_size, epochs=1, verbose=0)))
            print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in rows.items()), flush=True)
    weights = " (weights none)" if args.backbone.startswith(KERAS_PREFIX) else ""
    print(f"\n{args.images} images {args.size}x{args.size}, {args.backbone}{weights}, "
          f"batch {args.batch_size}\n")
    print("| measurement | seconds per repeat | median |")
    print("|---|---|---:|")
    for name, values in rows.items():
        print(f"| {name} | {', '.join(f'{v:.2f}' for v in values)} | {statistics.median(values):.2f} |")
    ratios = {
        "ceiling: backbone alone batched vs one per call": [a / b for a, b in zip(
            rows["one per call"], rows["backbone alone, batched"], strict=True)],
        "batched vs one per call (goal >= 10x)": [a / b for a, b in zip(rows["one per call"],
                                                                          rows["batched, empty cache"], strict=True)],
        "head epoch vs end-to-end epoch (goal >= 20x)": [
            b / a for a, b in zip(rows["head epoch"], rows["end-to-end epoch"], strict=True)],
        "rerun +1 % vs full extraction (goal <= 5 %)": [100 * a / b for a, b in zip(
            rows[f"rerun, +{extra} images"], rows["batched, empty cache"], strict=True)],
    }
    for name, values in ratios.items():
        print(f"| {name} | {', '.join(f'{v:.2f}' for v in values)} | {statistics.median(values):.2f} |")


if __name__ == "__main__":
    main()
