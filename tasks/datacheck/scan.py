"""One pass over a split's decoded pixels: per-image mean and spread, per-channel statistics, perceptual hashes.
numpy and OpenCV (no Luigi, no TensorFlow).

The examples are read where the decode stage left them (memory-mapped arrays, a chunk of rows at a time), in the
rows the image-dirs stage assigned to each split: the same pixels the TFRecord shards hold, without parsing them.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

CHUNK_BYTES = 1 << 20  # pixels scanned at once by one thread (its reused work arrays hold ~5x this)
SCAN_THREADS = 2  # chunks scanned at once
EXACT_SQUARES = 2**24 // 255**2  # 258 squares of uint8 values sum below 2**24: exactly, in float32
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

    def add(self, where: slice, chunk: ChunkScan) -> None:
        """A chunk's per-image values into their rows, its per-channel sums and extremes into the totals."""
        self.image_mean[where] = chunk.image_mean
        self.image_std[where] = chunk.image_std
        self.phash[where] = chunk.phash
        self.channel_sum += chunk.channel_sum
        self.channel_sum_sq += chunk.channel_sum_sq
        self.channel_min = np.minimum(self.channel_min, chunk.channel_min)
        self.channel_max = np.maximum(self.channel_max, chunk.channel_max)


@dataclass(frozen=True)
class ChunkScan:
    """One chunk of rows' share of a ``PixelScan``: per image, its values; per channel, exact integer sums."""

    image_mean: np.ndarray  # (n,) float32
    image_std: np.ndarray  # (n,) float32
    phash: np.ndarray  # (n,) uint64
    channel_sum: np.ndarray  # (C,) uint64
    channel_sum_sq: np.ndarray  # (C,) uint64
    channel_min: np.ndarray  # (C,) uint8
    channel_max: np.ndarray  # (C,) uint8


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
        bits = coefficients > row_medians(coefficients)
        return np.packbits(bits, axis=1).view(">u8").reshape(len(grey)).astype(np.uint64)


def scan_pixels(split: SplitExamples, progress: ProgressFn | None = None) -> PixelScan:
    """Per-image mean, spread and hash, and per-channel statistics of a split, a chunk of rows at a time,
    ``SCAN_THREADS`` chunks at once (numpy releases the GIL in the copies, sums and products)."""
    height, width, channels = split.images.shape[1:]
    projection = HashProjection.for_shape(height, width)
    count = len(split)
    scan = PixelScan(np.zeros(count, np.float32), np.zeros(count, np.float32), np.zeros(count, np.uint64),
                     np.zeros(channels), np.zeros(channels), np.full(channels, 255), np.zeros(channels),
                     count * height * width)
    rows_per_chunk = max(1, CHUNK_BYTES // (height * width * channels))
    if count and not (0 <= split.rows.min() and split.rows.max() < len(split.images)):
        raise ValueError(f"split {split.name!r}: rows outside its source split's {len(split.images)} examples")
    local = threading.local()

    def scan_rows(start: int) -> ChunkScan:
        if not hasattr(local, "work"):
            local.work = ChunkWork(min(rows_per_chunk, count), (height, width, channels))
        rows = split.rows[start:start + rows_per_chunk]
        pixels = local.work.pixels[:len(rows)]
        # The rows are checked above: "clip" (which never clips them) copies straight into ``pixels``.
        np.take(split.images, rows, axis=0, out=pixels, mode="clip")
        return _scan_chunk(pixels, projection, local.work)

    starts = range(0, count, rows_per_chunk)
    with ThreadPoolExecutor(max_workers=SCAN_THREADS, thread_name_prefix="datacheck-scan") as pool:
        for start, chunk in zip(starts, pool.map(scan_rows, starts), strict=True):
            scan.add(slice(start, start + len(chunk.phash)), chunk)
            if progress:
                progress(len(chunk.phash))
    return scan


class ChunkWork:
    """One scanning thread's work arrays, reused chunk after chunk: memory a process touches for the first time is
    slow to fault in on a VM (docs/PERFORMANCE.md), and a chunk's temporaries allocated afresh are new memory."""

    def __init__(self, rows: int, image_shape: tuple[int, int, int]) -> None:
        height, width, channels = image_shape
        self.pixels = np.empty((rows, height, width, channels), np.uint8)
        self.planes = np.empty((channels, rows, height * width), np.uint8)
        self.squares = np.empty((rows, height * width), np.uint16)
        self.grey = np.empty((rows, height, width), np.float32)
        # The longest run of a plane's rows whose squares float32 sums exactly: a divisor of the plane's size.
        self.square_block = max(d for d in range(1, min(EXACT_SQUARES, height * width) + 1) if height * width % d == 0)


def row_medians(values: np.ndarray) -> np.ndarray:
    """(N, 1): each row's median, as ``np.median(values, axis=1, keepdims=True)`` gives it (the mean of the two
    middle values of an even row, in the rows' dtype), from a sort: numpy sorts short float rows with SIMD, several
    times faster than the partition ``np.median`` runs."""
    ordered = np.sort(values, axis=1)
    middle = values.shape[1] // 2
    if values.shape[1] % 2:
        return ordered[:, middle:middle + 1]
    return ((ordered[:, middle - 1] + ordered[:, middle]) / values.dtype.type(2))[:, None]


def _scan_chunk(pixels: np.ndarray, projection: HashProjection, work: ChunkWork) -> ChunkScan:
    """A chunk's statistics, one contiguous channel plane at a time (reductions over the interleaved HWC layout run
    element by element over its short channel axis). OpenCV splits the planes, sums their rows and adds them for
    the grey image several times faster than numpy's casting loops. Sums of uint8 pixels and of their squares are
    exact integers; the spread is then computed from them in float64."""
    count, channels = len(pixels), pixels.shape[-1]
    planes, squares = work.planes[:, :count], work.squares[:count]
    grey = work.grey[:count].reshape(count, -1)
    if channels == 1:
        np.copyto(planes[0], pixels.reshape(count, -1))
    else:
        cv2.split(pixels.reshape(count, -1, channels), list(planes))  # (C, N, H*W), written in place
    plane_size = planes.shape[2]
    row_sum_type = cv2.CV_32S if plane_size * 255 <= np.iinfo(np.int32).max else cv2.CV_64F
    sums = np.empty((count, channels), dtype=np.uint64)
    sums_sq = np.empty((count, channels), dtype=np.uint64)
    for channel, plane in enumerate(planes):
        sums[:, channel] = cv2.reduce(plane, 1, cv2.REDUCE_SUM, dtype=row_sum_type)[:, 0]
        np.square(plane, out=squares, dtype=np.uint16)
        # Squares summed in float32 by blocks of at most EXACT_SQUARES (every partial sum an exact integer), the
        # blocks' sums then in integers.
        blocks = cv2.reduce(squares.reshape(-1, work.square_block), 1, cv2.REDUCE_SUM, dtype=cv2.CV_32F)
        sums_sq[:, channel] = blocks.reshape(count, -1).sum(axis=1, dtype=np.uint64)
    # The grey image: the mean of the channels, in float32 (sums of a few uint8 values are exact in float32).
    if channels == 1:
        np.copyto(grey, planes[0])
    else:
        cv2.add(planes[0], planes[1], dst=grey, dtype=cv2.CV_32F)
        for plane in planes[2:]:
            cv2.add(grey, plane, dst=grey, dtype=cv2.CV_32F)
    np.divide(grey, np.float32(channels), out=grey)
    values_per_image = plane_size * channels
    mean = sums.sum(axis=1) / values_per_image
    spread = np.sqrt(np.maximum(sums_sq.sum(axis=1) / values_per_image - mean**2, 0.0))
    return ChunkScan(mean.astype(np.float32), spread.astype(np.float32), projection.hashes(work.grey[:count]),
                     sums.sum(axis=0), sums_sq.sum(axis=0), planes.min(axis=(1, 2)), planes.max(axis=(1, 2)))
