"""Each pipeline's TFRecord shards load through ``tfds.builder_from_directory`` and match tfpipe's reader example
for example: MNIST (greyscale), CIFAR-10 (colour), HWDB (thousands-of-classes style index folders, Chinese class
names) and an image folder stored as PNG, each run ``--until tfrecords`` on fake sources in their real formats.

Slow: four pipeline runs. In the default suite: the captcha session run's shards (multi-head labels) and every
kind of shard written directly (tests/data/test_tfds_metadata.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import cli
from tasks.datasets.cifar.codec import CIFAR10
from tasks.formats.tfrecord import read_labels_txt
from tests.data.test_tfds_metadata import assert_tfds_loads_like_tfpipe
from tests.fakes.cifar import write_cifar_archive
from tests.fakes.hwdb import DEFAULT_CHARS, write_fake_hwdb
from tests.fakes.idx import write_fake_mnist
from tests.fakes.images import write_class_folder

pytestmark = pytest.mark.slow


def shards_of(root: Path) -> Path:
    [shards] = [p for p in (root / "tfrecords").glob("TFRecords-*") if not p.name.startswith(".")]
    return shards


def run_until_shards(pipeline: str, source: Path, root: Path, *settings: str) -> Path:
    assert cli.main(["run", pipeline, "--source", str(source), "--artifacts", str(root), "--until", "tfrecords",
                     *settings]) == 0
    return shards_of(root)


def example_count(loaded: dict) -> int:
    return sum(len(examples) for examples in loaded.values())


def test_mnist_shards_load_through_tfds(tmp_path: Path, luigi_config: object) -> None:
    write_fake_mnist(tmp_path / "mnist", n_train=200, n_test=50, gzip=False, seed=1)
    shards = run_until_shards("mnist", tmp_path / "mnist", tmp_path / "artifacts")
    loaded = assert_tfds_loads_like_tfpipe(shards)
    assert example_count(loaded) == 250
    assert next(iter(loaded["test"].values()))["image"].shape == (28, 28, 1)


def test_cifar10_shards_load_through_tfds(tmp_path: Path, luigi_config: object) -> None:
    archive = tmp_path / "src" / CIFAR10.archive_name
    archive.parent.mkdir()
    write_cifar_archive(archive, CIFAR10, 120, 30, seed=7)
    shards = run_until_shards("cifar10", archive, tmp_path / "artifacts")
    loaded = assert_tfds_loads_like_tfpipe(shards)
    assert example_count(loaded) == 150
    assert next(iter(loaded["train"].values()))["image"].shape == (32, 32, 3)


def test_hwdb_shards_load_through_tfds_with_chinese_class_names(tmp_path: Path, luigi_config: object) -> None:
    fake = write_fake_hwdb(tmp_path / "src", chars=DEFAULT_CHARS[:12], per_char_per_file=3, seed=3)
    shards = run_until_shards("hwdb", fake.root, tmp_path / "artifacts", "--set", "DecodeHwdb.image_size=20")
    loaded = assert_tfds_loads_like_tfpipe(shards)
    assert read_labels_txt(shards / "labels.txt") == sorted(DEFAULT_CHARS[:12])
    assert next(iter(loaded["train"].values()))["image"].shape == (20, 20, 1)


def test_image_folder_shards_stored_as_png_load_through_tfds(tmp_path: Path, luigi_config: object) -> None:
    write_class_folder(tmp_path / "photos", {"disc": 20, "square": 20, "triangle": 20}, size=(40, 40), seed=2)
    shards = run_until_shards("images", tmp_path / "photos", tmp_path / "artifacts",
                              "--set", "DecodeImages.image_size=32", "--set", "TFRecords.image_format=png")
    loaded = assert_tfds_loads_like_tfpipe(shards)
    assert example_count(loaded) == 60
    assert {example["format"] for split in loaded.values() for example in split.values()} == {"png"}
