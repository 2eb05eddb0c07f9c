"""tf.data input pipeline over TFRecord shards (record schema: tasks/formats/tfrecord.py).

Fast path: shuffle shard files, read them in parallel, shuffle serialized records (training only),
batch first, then parse and decode a whole batch at once (``tf.io.parse_example`` and, for raw pixels,
one ``tf.io.decode_raw``), augment the batch with stateless random ops, prefetch.

The images produced are float32 in [0, 1] (``uint8 / 255``), shape (B, H, W, C); labels are int32 of
shape (B,) or, with ``num_heads > 1``, (B, num_heads). This is the preprocessing contract shared with
the freeze/serving code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
RAW_FORMAT = "raw"
ENCODED_FORMATS = ("png", "jpeg")
KEY_ENCODED = "image/encoded"
KEY_FORMAT = "image/format"
KEY_LABEL = "image/class/label"
READ_BUFFER_BYTES = 8 << 20
READ_BLOCK = 64


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation, applied per image; the defaults disable everything.

    ``brightness`` is the max absolute delta added to pixels in [0, 1]; ``contrast`` is the max delta of
    the contrast factor around 1 (a factor drawn from [1 - contrast, 1 + contrast]). ``translate`` shifts each
    image by whole pixels, up to that share of its height and width, repeating the edge pixels.
    """

    flip_left_right: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    translate: float = 0.0  # max shift, as a share of the side, in each direction

    @property
    def enabled(self) -> bool:
        return self.flip_left_right or self.brightness > 0 or self.contrast > 0 or self.translate > 0


def read_format(files: Sequence[str]) -> str:
    """The ``image/format`` of the first record of the first non-empty file ("raw", "png" or "jpeg")."""
    for record in tf.data.TFRecordDataset(list(files)).take(1):
        example = tf.train.Example.FromString(record.numpy())
        values = example.features.feature[KEY_FORMAT].bytes_list.value
        if not values:
            raise ValueError(f"first record of {files[0]!r} has no {KEY_FORMAT!r}")
        return values[0].decode("ascii").lower()
    raise ValueError(f"no records in {len(files)} file(s): {list(files)[:3]!r}")


def count_records(files: Sequence[str]) -> int:
    """Number of records in ``files`` (reads every record; meant for rare use)."""
    if not files:
        return 0
    dataset = tf.data.TFRecordDataset(list(files), num_parallel_reads=min(len(files), 8))
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1).numpy())


def make_dataset(
    files: Sequence[str],
    *,
    image_shape: tuple[int, int, int],
    num_heads: int = 1,
    batch_size: int,
    training: bool,
    augment: AugmentConfig | None = None,
    shuffle_buffer: int = 10_000,
    seed: int = 0,
    cache: bool = False,
    drop_remainder: bool = False,
    repeat: bool = False,
    image_format: str | None = None,
    autotune: bool = False,
    shard: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Batches of (images float32 (B,H,W,C) in [0,1], labels int32 (B,) or (B,num_heads)).

    ``training`` shuffles files and records (reshuffled every epoch; the same ``seed`` gives the same
    sequence) and applies ``augment``; otherwise the order is file order, then record order.
    ``cache`` keeps the serialized records in memory after the first pass. ``image_format`` ("raw", "png",
    "jpeg") defaults to the first record's format.

    ``autotune`` turns on tf.data's runtime tuning of parallelism and buffer sizes. Off (the default),
    every ``AUTOTUNE`` parallelism is fixed at the number of schedulable cores: on 2-core VMs the tuner's
    adjustments stalled about half of the passes well below the fixed setting's rate (its figures are in
    docs/PERFORMANCE.md).

    ``shard = (count, index)``: this input pipeline's part of the data, one of ``count`` disjoint parts (the
    files ``index::count`` when there are at least ``count`` of them, else every ``count``-th record).
    """
    if not files:
        raise ValueError("make_dataset needs at least one TFRecord file")
    image_format = (image_format or read_format(files)).lower()
    height, width, channels = (int(d) for d in image_shape)
    files, record_shard = _shard_files(list(files), shard)
    if record_shard is None:
        records = _read_records(files, training=training, seed=seed)
    else:  # in file order, so that the parts stay disjoint whatever each pipeline's shuffle does afterwards
        records = tf.data.TFRecordDataset(files, buffer_size=READ_BUFFER_BYTES).shard(*record_shard)
    if cache:
        records = records.cache()
    if training and shuffle_buffer > 1:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        records = records.repeat()
    batches = records.batch(batch_size, drop_remainder=drop_remainder)
    parse_batch = _batch_parser((height, width, channels), num_heads, image_format)
    dataset = batches.map(parse_batch, num_parallel_calls=AUTOTUNE)
    if training and augment is not None and augment.enabled:
        dataset = _augment(dataset, augment, seed)
    options = tf.data.Options()
    options.autotune.enabled = autotune
    return dataset.prefetch(AUTOTUNE).with_options(options)


def _shard_files(files: list[str], shard: tuple[int, int] | None) -> tuple[list[str], tuple[int, int] | None]:
    """(the files this pipeline reads, the record-level shard still to apply or None)."""
    if shard is None or shard[0] <= 1:
        return files, None
    count, index = shard
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is not in [0, {count})")
    if len(files) >= count:
        return files[index::count], None
    return files, (count, index)


def _read_records(files: list[str], *, training: bool, seed: int) -> tf.data.Dataset:
    """Serialized records.

    Evaluation reads the files one after another (deterministic, and the fastest reader: per-element
    interleave overhead would halve it). Training shuffles the files and reads up to 8 of them in
    parallel, in blocks of ``READ_BLOCK`` records that are unbatched again before the record shuffle.
    """
    if not training:
        return tf.data.TFRecordDataset(files, buffer_size=READ_BUFFER_BYTES)
    file_names = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    blocks = file_names.interleave(
        lambda name: tf.data.TFRecordDataset(name, buffer_size=READ_BUFFER_BYTES).batch(READ_BLOCK),
        cycle_length=min(len(files), 8),
        num_parallel_calls=AUTOTUNE,
    )
    return blocks.unbatch()


def _batch_parser(
    image_shape: tuple[int, int, int], num_heads: int, image_format: str
) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    features = {
        KEY_ENCODED: tf.io.FixedLenFeature([], tf.string),
        KEY_LABEL: tf.io.FixedLenFeature([num_heads], tf.int64),
    }
    decode_batch = _batch_decoder(image_shape, image_format)

    def parse_batch(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        parsed = tf.io.parse_example(serialized, features)
        images = tf.cast(decode_batch(parsed[KEY_ENCODED]), tf.float32) / 255.0
        labels = tf.cast(parsed[KEY_LABEL], tf.int32)
        if num_heads == 1:
            labels = tf.reshape(labels, [-1])
        return images, labels

    return parse_batch


def _batch_decoder(image_shape: tuple[int, int, int], image_format: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """A function from a batch of ``image/encoded`` strings to uint8 images (B, H, W, C)."""
    height, width, channels = image_shape
    if image_format == RAW_FORMAT:

        def decode_raw_batch(encoded: tf.Tensor) -> tf.Tensor:
            # No fixed_length: it would silently truncate or zero-pad; a wrong shape must fail here.
            pixels = tf.io.decode_raw(encoded, tf.uint8)
            return tf.reshape(pixels, [tf.shape(encoded)[0], height, width, channels])

        return decode_raw_batch
    if image_format not in ENCODED_FORMATS:
        raise ValueError(f"unsupported image/format {image_format!r}; expected raw, png or jpeg")

    def decode_one(encoded: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
        return tf.ensure_shape(image, [height, width, channels])

    def decode_encoded_batch(encoded: tf.Tensor) -> tf.Tensor:
        return tf.map_fn(
            decode_one,
            encoded,
            fn_output_signature=tf.TensorSpec([height, width, channels], tf.uint8),
            parallel_iterations=16,
        )

    return decode_encoded_batch


def _augment(dataset: tf.data.Dataset, config: AugmentConfig, seed: int) -> tf.data.Dataset:
    """Per-image stateless augmentation of whole batches; a fresh seed pair per batch and epoch."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def augment_batch(batch: tuple[tf.Tensor, tf.Tensor], batch_seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = batch
        return augment_images(images, config, batch_seed), labels

    return tf.data.Dataset.zip(dataset, seeds).map(augment_batch, num_parallel_calls=AUTOTUNE)


def augment_images(images: tf.Tensor, config: AugmentConfig, seed: tf.Tensor) -> tf.Tensor:
    """Randomly flip / brighten / change contrast of each image of a (B,H,W,C) batch in [0, 1]."""
    flip_seed, brightness_seed, contrast_seed, translate_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    )
    batch = tf.shape(images)[0]
    if config.translate > 0:
        images = translate_images(images, config.translate, translate_seed)
    if config.flip_left_right:
        images = tf.image.stateless_random_flip_left_right(images, flip_seed)
    if config.brightness > 0:
        delta = tf.random.stateless_uniform([batch, 1, 1, 1], brightness_seed, -config.brightness, config.brightness)
        images = images + delta
    if config.contrast > 0:
        factor = tf.random.stateless_uniform(
            [batch, 1, 1, 1], contrast_seed, 1.0 - config.contrast, 1.0 + config.contrast
        )
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        images = (images - mean) * factor + mean
    if config.brightness > 0 or config.contrast > 0:
        images = tf.clip_by_value(images, 0.0, 1.0)
    return images


def translate_images(images: tf.Tensor, share: float, seed: tf.Tensor) -> tf.Tensor:
    """Shift each image of a (B,H,W,C) batch by its own whole-pixel offset, up to ``share`` of each side."""
    batch = tf.shape(images)[0]
    height, width = tf.cast(tf.shape(images)[1], tf.float32), tf.cast(tf.shape(images)[2], tf.float32)
    limits = tf.stack([width, height]) * share
    shifts = tf.round(tf.random.stateless_uniform([batch, 2], seed, -1.0, 1.0) * limits)
    ones, zeros = tf.ones([batch, 1]), tf.zeros([batch, 1])
    # Each row maps an output pixel (x, y) to the input pixel (x + dx, y + dy).
    transforms = tf.concat([ones, zeros, shifts[:, :1], zeros, ones, shifts[:, 1:], zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation="NEAREST", fill_mode="NEAREST")

