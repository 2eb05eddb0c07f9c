"""Bottleneck features: a frozen backbone run over every example once, batched, through the feature cache.

No Luigi. Views: view 0 is the plain image; views 1..K are seeded augmentations of it (flip, brightness,
contrast), fixed by (content key, view, seed), so a cached view is the same view on every rerun.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.ops.examples import pixel_digests
from tasks.ops.feature_cache import FeatureCache
from tasks.ops.input_pipeline import AugmentConfig
from tasks.ops.read_ahead import read_ahead
from tasks.ops.shards import iter_split_batches

# Computed rows are written to the cache every this many, so a killed extraction keeps most of its work.
PACK_ROWS = 4096
ProgressFn = Callable[[int], None]


@dataclass
class ExtractionCounts:
    computed: int = 0
    reused: int = 0


def augmented_view(images: np.ndarray, digests: np.ndarray, view: int, seed: int,
                   augment: AugmentConfig) -> np.ndarray:
    """uint8 images of ``view`` (0 = the images themselves): per image a generator seeded by its content key."""
    if view == 0:
        return images
    out = np.empty_like(images)
    for row, (image, digest) in enumerate(zip(images, digests, strict=True)):
        token = hashlib.sha256(bytes(digest) + view.to_bytes(4, "little") + seed.to_bytes(8, "little", signed=True))
        rng = np.random.default_rng(int.from_bytes(token.digest()[:8], "little"))
        pixels = image.astype(np.float32)
        flip, delta, factor = rng.random(), rng.uniform(-1, 1), rng.uniform(-1, 1)
        if augment.flip_left_right and flip < 0.5:
            pixels = pixels[:, ::-1]
        if augment.contrast:
            mean = pixels.mean(axis=(0, 1), keepdims=True)
            pixels = (pixels - mean) * (1.0 + factor * augment.contrast) + mean
        if augment.brightness:
            pixels = pixels + delta * augment.brightness * 255.0
        out[row] = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return out


def split_batches(shard_dir: Path, split: str, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(images uint8, labels, content keys)`` batches of a TFRecord split, in file order."""
    for images, labels in iter_split_batches(shard_dir, split, batch_size):
        yield images, labels, pixel_digests(images)


def extract(model: object, batches: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]], cache: FeatureCache, *,
            view: int = 0, seed: int = 0, augment: AugmentConfig | None = None,
            progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, ExtractionCounts]:
    """Features (N, D), labels and content keys of every example, in order; only cache misses reach ``model``.

    ``model`` maps float32 [0, 1] images to (B, D) features (``predict_on_batch``).
    """
    augment = augment or AugmentConfig()
    counts = ExtractionCounts()
    parts_out: list[np.ndarray] = []
    labels_out: list[np.ndarray] = []
    keys_out: list[np.ndarray] = []
    pending_keys: list[np.ndarray] = []
    pending_rows: list[np.ndarray] = []
    for images, labels, digests in read_ahead(batches):
        viewed = augmented_view(images, digests, view, seed, augment)
        found, cached = cache.lookup(digests)
        features = np.empty((len(images), 0), np.float32)
        if (~found).any():
            computed = np.asarray(model.predict_on_batch(viewed[~found].astype(np.float32) / 255.0), np.float32)
            features = np.empty((len(images), computed.shape[1]), np.float32)
            features[~found] = computed
            pending_keys.append(digests[~found])
            pending_rows.append(computed)
            counts.computed += int((~found).sum())
        if cached is not None:
            if features.shape[1] == 0:
                features = np.empty((len(images), cached.shape[1]), np.float32)
            features[found] = cached
            counts.reused += int(found.sum())
        parts_out.append(features)
        labels_out.append(labels)
        keys_out.append(digests)
        if sum(len(k) for k in pending_keys) >= PACK_ROWS:
            _flush(cache, pending_keys, pending_rows)
        if progress is not None:
            progress(counts.computed + counts.reused)
    _flush(cache, pending_keys, pending_rows)
    if not parts_out:
        raise ValueError("no examples to extract features from")
    return np.concatenate(parts_out), np.concatenate(labels_out), np.concatenate(keys_out), counts


def _flush(cache: FeatureCache, keys: list[np.ndarray], rows: list[np.ndarray]) -> None:
    if keys:
        cache.add(np.concatenate(keys), np.concatenate(rows))
        keys.clear()
        rows.clear()
