"""Write decoded examples into TFDS-style TFRecord shards. No Luigi, no TensorFlow.

Images are stored raw (``image/format`` = ``raw``: the uint8 HWC bytes) by default: for small images it
is many times faster to write and to read than PNG (see docs/PERFORMANCE.md); ``png`` is available.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import cv2
import numpy as np

from tasks.data.files import TFPIPE_INFO_FILE
from tasks.formats.dataset_info import DatasetInfo
from tasks.formats.examples import stable_order
from tasks.formats.images import encode_png
from tasks.formats.tfrecord import (
    ExampleEncoder,
    FeatureValue,
    TFRecordWriter,
    bytes_entry_column,
    int_entry_column,
    shard_names,
)

IMAGE_FORMATS = ("raw", "png")
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class ShardSpec:
    dataset: str
    image_format: str = "raw"
    num_shards: int = 0  # 0: derive from target_shard_mb
    target_shard_mb: float = 64.0
    shuffle_seed: int = 0

    def __post_init__(self) -> None:
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")
        if self.num_shards < 0 or self.target_shard_mb <= 0:
            raise ValueError("num_shards must be >= 0 and target_shard_mb > 0")


def shard_count(num_examples: int, bytes_per_example: int, spec: ShardSpec) -> int:
    if spec.num_shards:
        return spec.num_shards
    total_mb = num_examples * bytes_per_example / 2**20
    return max(1, math.ceil(total_mb / spec.target_shard_mb))


def encode_image(image: np.ndarray, image_format: str) -> bytes:
    if image_format == "raw":
        return image.tobytes()
    return encode_png(image)


VARYING_FEATURES = ("image/encoded", "image/class/label", "image/key", "image/sha256")


def example_encoder(image_shape: tuple[int, ...], image_format: str) -> ExampleEncoder:
    height, width, channels = image_shape
    constant: dict[str, FeatureValue] = {"image/format": image_format.encode(), "image/height": height,
                                         "image/width": width, "image/channels": channels}
    return ExampleEncoder(constant, VARYING_FEATURES)


def write_split_shards(
    out_dir: Path,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    keys: np.ndarray,
    digests: np.ndarray,
    rows: np.ndarray,
    spec: ShardSpec,
    progress: ProgressFn | None = None,
    workers: int = 1,
) -> list[str]:
    """Shuffle ``rows`` of a split deterministically (by key hash) and deal them into contiguous shards.

    ``digests`` are the examples' content keys (raw sha256), stored as hex in ``image/sha256``.
    ``images``/``labels``/``keys``/``digests`` may be memory-mapped: rows are read a chunk at a time, never all at once.
    With ``workers > 1`` that many threads write the shards (same bytes as one).
    """
    order = rows[stable_order(keys[rows], f"shuffle:{spec.shuffle_seed}")]
    num_shards = shard_count(len(order), int(np.prod(images.shape[1:])) + 64, spec)
    names = shard_names(spec.dataset, split, num_shards)
    bounds = np.linspace(0, len(order), num_shards + 1).astype(int)
    jobs = [(out_dir / name, order[bounds[i] : bounds[i + 1]]) for i, name in enumerate(names)]
    arrays = (images, labels, keys, digests, spec)
    done = 0
    for written in _run_shard_jobs(jobs, arrays, workers):
        done += written
        if progress:
            progress(done, len(order))
    return names


def _run_shard_jobs(jobs: list[tuple[Path, np.ndarray]], arrays: tuple, workers: int) -> Iterator[int]:
    """Write every job's shard, ``workers`` at a time on threads (the copies, CRCs and writes release the GIL);
    yields each shard's record count in job order."""
    if workers <= 1 or len(jobs) <= 1:
        for path, shard_rows in jobs:
            yield write_one_shard(path, shard_rows, *arrays)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shard-writer") as pool:
        futures = [pool.submit(write_one_shard, path, shard_rows, *arrays) for path, shard_rows in jobs]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def write_one_shard(path: Path, shard_rows: np.ndarray, images: np.ndarray, labels: np.ndarray, keys: np.ndarray,
                    digests: np.ndarray, spec: ShardSpec) -> int:
    encoder = example_encoder(images.shape[1:], spec.image_format)
    with TFRecordWriter(path) as writer:
        for start in range(0, len(shard_rows), CHUNK_ROWS):
            chunk = shard_rows[start : start + CHUNK_ROWS]
            hex_digests = hex_column(digests[chunk])
            if spec.image_format == "raw":
                writer.write_framed(frame_raw_chunk(images[chunk], labels[chunk], keys[chunk], hex_digests, encoder),
                                    len(chunk))
            else:
                writer.write_many(encode_chunk(images[chunk], labels[chunk], keys[chunk], hex_digests,
                                               spec.image_format, encoder))
    return len(shard_rows)


def hex_column(digests: np.ndarray) -> np.ndarray:
    """Raw ``S32`` digests as lowercase hex, ``S64`` (the text ``image/sha256`` holds)."""
    raw = np.ascontiguousarray(digests).view(np.uint8).reshape(len(digests), -1)
    alphabet = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    text = np.empty((len(raw), raw.shape[1] * 2), dtype=np.uint8)
    text[:, 0::2] = alphabet[raw >> 4]
    text[:, 1::2] = alphabet[raw & 15]
    return text.view(f"S{text.shape[1]}").reshape(len(raw))


CHUNK_ROWS = 1024


def frame_raw_chunk(images: np.ndarray, labels: np.ndarray, keys: np.ndarray, hex_digests: np.ndarray,
                    encoder: ExampleEncoder) -> np.ndarray:
    """Framed records of a chunk of raw-pixel examples, built column-wise (see ExampleEncoder.frame_batch)."""
    pixels = np.ascontiguousarray(images).reshape(len(images), -1)
    small = {"image/class/label": int_entry_column("image/class/label", labels),
             "image/key": bytes_entry_column("image/key", keys),
             "image/sha256": bytes_entry_column("image/sha256", hex_digests)}
    return encoder.frame_batch(small, {"image/encoded": pixels})


def encode_chunk(images: np.ndarray, labels: np.ndarray, keys: np.ndarray, hex_digests: np.ndarray,
                 image_format: str, encoder: ExampleEncoder) -> list[bytes]:
    """Serialized Examples of a chunk of rows, image by image (encoded formats; raw goes through
    ``frame_raw_chunk``)."""
    label_lists = labels.reshape(len(labels), -1).tolist()
    key_list = keys.tolist()  # fixed-width bytes come back with the NUL padding stripped
    encoded = [encode_image(np.asarray(image), image_format) for image in images]
    encode = encoder.encode
    return [encode({"image/encoded": data, "image/class/label": label, "image/key": key, "image/sha256": digest})
            for data, label, key, digest in zip(encoded, label_lists, key_list, hex_digests.tolist(), strict=True)]


def load_dataset_info(shard_dir: Path) -> DatasetInfo:
    """tfpipe's description of an examples artifact (TFRecord shards): every reader of one goes through here."""
    return DatasetInfo.load(shard_dir, TFPIPE_INFO_FILE)


def save_dataset_info(shard_dir: Path, info: DatasetInfo) -> None:
    """Write what ``load_dataset_info`` reads (TFDS's own description: tasks/data/tfds_metadata.py), as a new file:
    one already there may be a hard link into another artifact, which must not be written through."""
    (Path(shard_dir) / TFPIPE_INFO_FILE).unlink(missing_ok=True)
    info.save(shard_dir, TFPIPE_INFO_FILE)


def decode_stored_image(encoded: bytes, image_format: str, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of ``encode_image``: uint8 HxWxC pixels (RGB order for 3 channels)."""
    if image_format == "raw":
        return np.frombuffer(encoded, dtype=np.uint8).reshape(shape)
    flag = cv2.IMREAD_GRAYSCALE if shape[2] == 1 else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.frombuffer(encoded, dtype=np.uint8), flag)
    if image is None:
        raise ValueError("stored image does not decode")
    return image[..., None] if shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def iter_decoded_records(shard_dir: Path, split: str) -> Iterator[tuple[np.ndarray, dict]]:
    """``(image uint8 HxWxC, the record's features)`` of a split, shard by shard, in file order."""
    from tasks.formats.tfrecord import decode_example, read_records

    info = load_dataset_info(shard_dir)
    for name in info.split(split).files:
        for record in read_records(Path(shard_dir) / name):
            features = decode_example(record)
            # Bytes features, as write_split_shards writes them.
            image_format = cast(bytes, features["image/format"][0]).decode()
            yield decode_stored_image(cast(bytes, features["image/encoded"][0]), image_format,
                                      info.image_shape), features


def iter_shard_examples(shard_dir: Path, split: str, limit: int | None = None):  # noqa: ANN201 - generator
    """Yield ``(image uint8 HxWxC, label int array, key bytes)`` of a split, shard by shard, in file order."""
    for produced, (image, features) in enumerate(iter_decoded_records(shard_dir, split), start=1):
        yield image, np.asarray(features["image/class/label"], dtype=np.int64), features["image/key"][0]
        if limit is not None and produced >= limit:
            return


def split_label_counts(shard_dir: Path, split: str, num_classes: int) -> list[int]:
    """Examples per class of a single-label split, read without TensorFlow (a cluster member must not start
    TensorFlow's runtime before its strategy does)."""
    from tasks.formats.tfrecord import decode_example, read_records

    counts = np.zeros(num_classes, dtype=np.int64)
    for name in load_dataset_info(shard_dir).split(split).files:
        labels = [decode_example(record)["image/class/label"][0] for record in read_records(Path(shard_dir) / name)]
        counts += np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]
    return counts.tolist()


def iter_split_batches(shard_dir: Path, split: str, batch_size: int,
                       limit: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(images uint8 (B, H, W, C), labels)`` batches of a split in file order; labels squeezed to (B,) for
    single-head datasets. Memory is one batch, whatever the split's size."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for image, label, _ in iter_shard_examples(shard_dir, split, limit):
        images.append(image)
        labels.append(label)
        if len(images) == batch_size:
            yield _stack_batch(images, labels)
            images, labels = [], []
    if images:
        yield _stack_batch(images, labels)


def _stack_batch(images: list[np.ndarray], labels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    label_array = np.stack(labels)
    return np.stack(images), label_array[:, 0] if label_array.shape[1] == 1 else label_array


def load_split_arrays(shard_dir: Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A whole split (or its first ``limit`` examples) as ``(images uint8, labels)``; labels squeezed to (N,)
    for single-head datasets."""
    batches = list(iter_split_batches(shard_dir, split, batch_size=4096, limit=limit))
    if not batches:
        raise ValueError(f"{shard_dir}: split {split!r} holds no examples")
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
