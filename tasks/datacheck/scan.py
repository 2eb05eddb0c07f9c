"""One pass over a split's decoded pixels: per-image mean and spread, per-channel statistics, perceptual hashes.
Plain numpy (no Luigi, no TensorFlow).

The examples are read where the decode stage left them (memory-mapped arrays, a chunk of rows at a time), in the
rows the image-dirs stage assigned to each split: the same pixels the TFRecord shards hold, without parsing them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

CHUNK_ROWS = 4096
HASH_SIDE = 32  # images are reduced to 32x32 grey, then to the 8x8 lowest frequencies of their DCT (pHash)
HASH_FREQUENCIES = 8

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class SplitExamples:
    """A split's examples as the decode stage stored them: ``rows`` of its source split's arrays."""

    name: str
    images: np.ndarray  # (N_source, H, W, C) uint8, usually memory-mapped
    labels: np.ndarray  # (N_source,) or (N_source, heads)
    keys: np.ndarray  # (N_source,) bytes: the example's file or member in its source
    digests: np.ndarray  # (N_source,) S32: sha256 of the decoded pixels
    rows: np.ndarray  # the rows of the source split this split holds, in order
    original_sizes: np.ndarray | None = None  # (N_source, 2) height, width in the source file, when recorded

    def __len__(self) -> int:
        return len(self.rows)

    def label_rows(self) -> np.ndarray:
        """Labels of the split's examples, (N,) or (N, heads)."""
        return np.asarray(self.labels[self.rows])


@dataclass
class PixelScan:
    """What one pass over a split's pixels gives: per image, its mean, its spread and its perceptual hash; per
    channel, the sums that make the mean and standard deviation."""

    image_mean: np.ndarray  # (N,) float32
    image_std: np.ndarray  # (N,) float32
    phash: np.ndarray  # (N,) uint64
    channel_sum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    channel_sum_sq: np.ndarray = field(default_factory=lambda: np.zeros(0))
    channel_min: np.ndarray = field(default_factory=lambda: np.zeros(0))
    channel_max: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pixels_per_channel: int = 0

    def channel_stats(self) -> dict[str, list[float]]:
        count = max(self.pixels_per_channel, 1)
        mean = self.channel_sum / count
        variance = np.maximum(self.channel_sum_sq / count - mean**2, 0.0)
        return {"mean": [round(float(v), 4) for v in mean], "std": [round(float(v), 4) for v in np.sqrt(variance)],
                "min": [int(v) for v in self.channel_min], "max": [int(v) for v in self.channel_max]}


def area_matrix(size: int, target: int) -> np.ndarray:
    """(target, size): each output sample the mean of the input samples its cell covers (area resampling)."""
    matrix = np.zeros((target, size), dtype=np.float64)
    scale = size / target
    for out in range(target):
        start, stop = out * scale, (out + 1) * scale
        for index in range(int(math.floor(start)), min(size, int(math.ceil(stop)))):
            matrix[out, index] = min(stop, index + 1) - max(start, index)
    return matrix / matrix.sum(axis=1, keepdims=True)


def dct_matrix(size: int, frequencies: int) -> np.ndarray:
    """(frequencies, size): the lowest rows of the orthonormal DCT-II."""
    n = np.arange(size)
    rows = [np.cos(math.pi * (2 * n + 1) * k / (2 * size)) * math.sqrt((1 if k == 0 else 2) / size)
            for k in range(frequencies)]
    return np.asarray(rows)


@dataclass(frozen=True)
class HashProjection:
    """The perceptual hash of images of one shape as two matrix products: ``left @ grey @ right.T`` is the 8x8
    low-frequency DCT of the 32x32 area-reduced grey image."""

    left: np.ndarray  # (8, H)
    right: np.ndarray  # (8, W)

    @classmethod
    def for_shape(cls, height: int, width: int) -> HashProjection:
        dct = dct_matrix(HASH_SIDE, HASH_FREQUENCIES)
        left = dct @ area_matrix(height, HASH_SIDE)
        right = dct @ area_matrix(width, HASH_SIDE)
        return cls(left.astype(np.float32), right.astype(np.float32))

    def hashes(self, grey: np.ndarray) -> np.ndarray:
        """(N,) uint64: bit set where a frequency's coefficient is above the image's median (imagehash's pHash)."""
        coefficients = (self.left @ grey @ self.right.T).reshape(len(grey), -1)
        bits = coefficients > np.median(coefficients, axis=1, keepdims=True)
        return np.packbits(bits, axis=1).view(">u8").reshape(len(grey)).astype(np.uint64)


def scan_pixels(split: SplitExamples, progress: ProgressFn | None = None) -> PixelScan:
    """Per-image mean, spread and hash, and per-channel statistics of a split, a chunk of rows at a time."""
    height, width, channels = split.images.shape[1:]
    projection = HashProjection.for_shape(height, width)
    count = len(split)
    scan = PixelScan(np.zeros(count, np.float32), np.zeros(count, np.float32), np.zeros(count, np.uint64),
                     np.zeros(channels), np.zeros(channels), np.full(channels, 255), np.zeros(channels),
                     count * height * width)
    for start in range(0, count, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, count)
        pixels = np.asarray(split.images[split.rows[start:stop]])
        _scan_chunk(scan, slice(start, stop), pixels, projection)
        if progress:
            progress(stop - start)
    return scan


def _scan_chunk(scan: PixelScan, where: slice, pixels: np.ndarray, projection: HashProjection) -> None:
    values = pixels.astype(np.float32).reshape(len(pixels), -1, pixels.shape[-1])
    flat = values.reshape(len(pixels), -1)
    scan.image_mean[where] = flat.mean(axis=1)
    scan.image_std[where] = flat.std(axis=1)
    scan.channel_sum += values.sum(axis=(0, 1), dtype=np.float64)
    scan.channel_sum_sq += np.square(values, dtype=np.float64).sum(axis=(0, 1))
    scan.channel_min = np.minimum(scan.channel_min, pixels.min(axis=(0, 1, 2)))
    scan.channel_max = np.maximum(scan.channel_max, pixels.max(axis=(0, 1, 2)))
    grey = values.mean(axis=2).reshape(pixels.shape[:3])
    scan.phash[where] = projection.hashes(grey)
