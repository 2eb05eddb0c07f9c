"""make_dataset over tiny TFRecord shards written here in the real schema (raw and PNG)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tasks.data.input_pipeline import (  # noqa: E402
    AugmentConfig,
    count_records,
    make_dataset,
    read_format,
    translate_images,
)

SHAPE = (6, 5, 3)
NUM_SHARDS = 3


def _int64s(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _encode(image: np.ndarray, image_format: str) -> bytes:
    if image_format == "raw":
        return image.tobytes()
    return tf.io.encode_png(image).numpy()


def write_shards(
    directory: Path, images: np.ndarray, labels: np.ndarray, image_format: str = "raw", split: str = "train"
) -> list[str]:
    """Examples round-robin over NUM_SHARDS files, named and keyed as the real writer does."""
    paths = [str(directory / f"toy-{split}.tfrecord-{i:05d}-of-{NUM_SHARDS:05d}") for i in range(NUM_SHARDS)]
    writers = [tf.io.TFRecordWriter(path) for path in paths]
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        height, width, channels = image.shape
        feature = {
            "image/encoded": _bytes(_encode(image, image_format)),
            "image/format": _bytes(image_format.encode()),
            "image/class/label": _int64s(np.atleast_1d(label)),
            "image/height": _int64s([height]),
            "image/width": _int64s([width]),
            "image/channels": _int64s([channels]),
            "image/key": _bytes(f"key-{index}".encode()),
        }
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        writers[index % NUM_SHARDS].write(example.SerializeToString())
    for writer in writers:
        writer.close()
    return paths


def make_data(count: int, num_heads: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, *SHAPE), dtype=np.uint8)
    images[0] = 0
    images[1] = 255  # the extremes must map to exactly 0.0 and 1.0
    labels = rng.integers(0, 26, size=(count,) if num_heads == 1 else (count, num_heads))
    return images, labels


def collect(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    batches = list(dataset.as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def shard_order(count: int) -> list[int]:
    """Indices in file order then record order, for the round-robin writer above."""
    return [i for shard in range(NUM_SHARDS) for i in range(shard, count, NUM_SHARDS)]


@pytest.mark.parametrize("image_format", ["raw", "png"])
def test_eval_images_are_uint8_over_255_exactly_and_labels_match(tmp_path: Path, image_format: str) -> None:
    images, labels = make_data(10)
    files = write_shards(tmp_path, images, labels, image_format)

    dataset = make_dataset(files, image_shape=SHAPE, batch_size=4, training=False)
    got_images, got_labels = collect(dataset)

    order = shard_order(10)
    assert got_images.dtype == np.float32 and got_images.shape == (10, *SHAPE)
    assert got_labels.dtype == np.int32 and got_labels.shape == (10,)
    np.testing.assert_array_equal(got_images, images[order].astype(np.float32) / np.float32(255.0))
    np.testing.assert_array_equal(got_labels, labels[order])
    assert got_images.min() == 0.0 and got_images.max() == 1.0


def test_element_spec_has_static_image_shape(tmp_path: Path) -> None:
    files = write_shards(tmp_path, *make_data(4), image_format="png")
    dataset = make_dataset(files, image_shape=SHAPE, batch_size=2, training=True, drop_remainder=True)
    image_spec, label_spec = dataset.element_spec
    assert image_spec.shape.as_list() == [2, *SHAPE]
    assert label_spec.shape.as_list() == [2]


def test_multi_head_labels_have_one_column_per_head(tmp_path: Path) -> None:
    images, labels = make_data(7, num_heads=4)
    files = write_shards(tmp_path, images, labels)

    _, got_labels = collect(make_dataset(files, image_shape=SHAPE, num_heads=4, batch_size=3, training=False))

    assert got_labels.shape == (7, 4)
    np.testing.assert_array_equal(got_labels, labels[shard_order(7)])


def test_training_shuffles_but_keeps_image_label_pairs(tmp_path: Path) -> None:
    images, _ = make_data(30)
    labels = np.arange(30)  # a label identifies its image
    files = write_shards(tmp_path, images, labels)

    dataset = make_dataset(files, image_shape=SHAPE, batch_size=8, training=True, seed=3)
    got_images, got_labels = collect(dataset)

    assert sorted(got_labels.tolist()) == list(range(30))
    assert got_labels.tolist() != shard_order(30)
    np.testing.assert_array_equal(got_images, images[got_labels].astype(np.float32) / np.float32(255.0))


def test_training_order_is_reproducible_for_a_seed(tmp_path: Path) -> None:
    files = write_shards(tmp_path, *make_data(40))

    def label_order(seed: int) -> list[int]:
        dataset = make_dataset(files, image_shape=SHAPE, batch_size=8, training=True, seed=seed)
        return collect(dataset)[1].tolist()

    assert label_order(5) == label_order(5)
    assert label_order(5) != label_order(6)


@pytest.mark.parametrize("training", [False, True])
def test_autotune_is_off_by_default_and_does_not_change_the_data(tmp_path: Path, training: bool) -> None:
    files = write_shards(tmp_path, *make_data(40))
    fixed = make_dataset(files, image_shape=SHAPE, batch_size=8, training=training, seed=3)
    tuned = make_dataset(files, image_shape=SHAPE, batch_size=8, training=training, seed=3, autotune=True)
    assert fixed.options().autotune.enabled is False and tuned.options().autotune.enabled is True
    for got, want in zip(collect(fixed), collect(tuned), strict=True):
        np.testing.assert_array_equal(got, want)


def test_eval_order_is_deterministic_across_iterations_and_builds(tmp_path: Path) -> None:
    files = write_shards(tmp_path, *make_data(25))
    first = make_dataset(files, image_shape=SHAPE, batch_size=4, training=False, cache=True)
    second = make_dataset(files, image_shape=SHAPE, batch_size=4, training=False)

    runs = [collect(first)[1], collect(first)[1], collect(second)[1]]

    for labels in runs[1:]:
        np.testing.assert_array_equal(labels, runs[0])


@pytest.mark.parametrize(
    "augment",
    [AugmentConfig(flip_left_right=True), AugmentConfig(brightness=0.3), AugmentConfig(contrast=0.5),
     AugmentConfig(translate=0.4)],
)
def test_augmentation_changes_training_images_only_when_enabled(tmp_path: Path, augment: AugmentConfig) -> None:
    images, _ = make_data(16)
    labels = np.arange(16)
    files = write_shards(tmp_path, images, labels)
    expected = images.astype(np.float32) / np.float32(255.0)

    def images_by_label(**kwargs) -> np.ndarray:
        got_images, got_labels = collect(
            make_dataset(files, image_shape=SHAPE, batch_size=16, shuffle_buffer=1, **kwargs)
        )
        return got_images[np.argsort(got_labels)]

    augmented = images_by_label(training=True, augment=augment)
    plain_training = images_by_label(training=True, augment=AugmentConfig())
    evaluation = images_by_label(training=False, augment=augment)

    np.testing.assert_array_equal(plain_training, expected)
    np.testing.assert_array_equal(evaluation, expected)
    changed = np.array([not np.array_equal(a, e) for a, e in zip(augmented, expected, strict=True)])
    assert 0 < changed.sum()
    assert augmented.min() >= 0.0 and augmented.max() <= 1.0
    if augment.flip_left_right:
        assert changed.sum() < 16  # per-image coin, not one flip for the whole batch
        flipped = augmented[changed]
        np.testing.assert_array_equal(flipped, expected[changed][:, :, ::-1, :])


def test_augmentation_differs_between_epochs(tmp_path: Path) -> None:
    images, _ = make_data(16)
    files = write_shards(tmp_path, images, np.arange(16))
    dataset = make_dataset(
        files, image_shape=SHAPE, batch_size=16, training=True, augment=AugmentConfig(brightness=0.3)
    )

    def epoch() -> np.ndarray:
        got_images, got_labels = collect(dataset)
        return got_images[np.argsort(got_labels)]

    assert not np.array_equal(epoch(), epoch())


def test_repeat_and_drop_remainder(tmp_path: Path) -> None:
    files = write_shards(tmp_path, *make_data(10))
    dataset = make_dataset(files, image_shape=SHAPE, batch_size=4, training=True, repeat=True, drop_remainder=True)
    batches = list(dataset.take(6).as_numpy_iterator())
    assert [b[0].shape[0] for b in batches] == [4] * 6


def test_read_format_and_count_records(tmp_path: Path) -> None:
    raw_dir, png_dir = tmp_path / "raw", tmp_path / "png"
    raw_dir.mkdir()
    png_dir.mkdir()
    raw_files = write_shards(raw_dir, *make_data(11))
    png_files = write_shards(png_dir, *make_data(5), image_format="png")

    assert read_format(raw_files) == "raw"
    assert read_format(png_files) == "png"
    assert count_records(raw_files) == 11
    assert count_records(png_files[:1]) == 2


def test_wrong_image_shape_fails_loudly(tmp_path: Path) -> None:
    files = write_shards(tmp_path, *make_data(4))
    dataset = make_dataset(files, image_shape=(6, 5, 1), batch_size=2, training=False)
    with pytest.raises(tf.errors.InvalidArgumentError):
        collect(dataset)


def test_unsupported_format_and_no_files_raise(tmp_path: Path) -> None:
    files = write_shards(tmp_path, *make_data(3))
    with pytest.raises(ValueError, match="unsupported image/format"):
        make_dataset(files, image_shape=SHAPE, batch_size=2, training=False, image_format="webp")
    with pytest.raises(ValueError, match="at least one"):
        make_dataset([], image_shape=SHAPE, batch_size=2, training=False)


def test_translation_shifts_each_image_by_its_own_whole_pixel_offset() -> None:
    images = np.zeros((64, 9, 9, 1), np.float32)
    images[:, 4, 4, 0] = 1.0  # one bright pixel in the middle of a black image
    shifted = translate_images(tf.constant(images), 0.25, tf.constant([3, 7], tf.int64)).numpy()
    where = [tuple(np.argwhere(image[..., 0] == 1.0)[0]) for image in shifted]
    assert all(image.sum() == 1.0 for image in shifted)  # moved, not blurred or lost
    offsets = {(row - 4, column - 4) for row, column in where}
    assert len(offsets) > 5 and all(abs(dy) <= 2 and abs(dx) <= 2 for dy, dx in offsets)

