"""Bottleneck features: a frozen backbone run over every example once, batched, through the feature cache.

No Luigi. Views: view 0 is the plain image; views 1..K are seeded augmentations of it (flip, brightness,
contrast), fixed by (content key, view, seed), so a cached view is the same view on every rerun.

Features that hardly vary across images are refused (`check_features_vary`): a head trained on them stays
at chance, typically because the backbone was fed pixels in another range than it was made for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tasks.data.input_pipeline import AugmentConfig
from tasks.data.shards import iter_split_batches
from tasks.features.cache import FeatureCache
from tasks.features.read_ahead import read_ahead
from tasks.formats.examples import pixel_digests

# Computed rows are written to the cache every this many, so a killed extraction keeps most of its work.
PACK_ROWS = 4096
ProgressFn = Callable[[int], None]
# Below this median relative spread across images, features are nearly constant: a backbone that divides by
# 255 pixels already in [0, 1] gives about 4e-4; real features spread by 1e-1 or more.
MIN_FEATURE_SPREAD = 1e-3
_SPREAD_EPSILON = 1e-8


class FeatureModel(Protocol):
    """A backbone as ``extract`` uses it (a Keras model): float32 images in, (B, D) features out."""

    def predict_on_batch(self, x: np.ndarray) -> Any: ...


class ConstantFeaturesError(ValueError):
    """Backbone features nearly the same for every image: nothing for a head to learn from."""


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


def extract(model: FeatureModel, batches: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]], cache: FeatureCache, *,
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


def feature_spread(features: np.ndarray) -> float | None:
    """Median over features of (std across images / (mean |feature| + 1e-8)); None below 2 images.

    Features that are zero for every image (dead ReLU units) are left out: they carry no signal whatever the
    input, and a backbone may have many. All features dead gives 0.
    """
    if len(features) < 2:
        return None
    values = np.asarray(features, dtype=np.float64)
    live = (values != 0).any(axis=0)
    if not live.any():
        return 0.0
    values = values[:, live]
    relative = values.std(axis=0) / (np.abs(values).mean(axis=0) + _SPREAD_EPSILON)
    return float(np.median(relative))


def check_features_vary(features: np.ndarray, keys: np.ndarray, *, backbone: str, hint: str) -> None:
    """ConstantFeaturesError (one line: ``backbone``, the spread, ``hint``) when the features of the distinct
    images (by content key; duplicates would look constant) are nearly constant. Fewer than 2 pass."""
    _, first_rows = np.unique(np.asarray(keys), return_index=True)
    distinct = np.asarray(features)[np.sort(first_rows)]
    spread = feature_spread(distinct)
    if spread is not None and spread < MIN_FEATURE_SPREAD:
        raise ConstantFeaturesError(
            f"features of {backbone} are nearly constant across {len(distinct)} images "
            f"(spread {spread:.0e} < {MIN_FEATURE_SPREAD:.0e}): {hint}")


def _flush(cache: FeatureCache, keys: list[np.ndarray], rows: list[np.ndarray]) -> None:
    if keys:
        cache.add(np.concatenate(keys), np.concatenate(rows))
        keys.clear()
        rows.clear()
