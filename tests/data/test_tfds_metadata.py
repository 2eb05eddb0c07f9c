"""TFDS loads tfpipe's TFRecord shards: ``tfds.builder_from_directory(folder).as_dataset(split=...)`` yields every
example of every split with the pixels, labels, key and content hash tfpipe's own reader
(tasks/data/shards.py ``iter_shard_examples``) gives, for greyscale, colour, multi-head (captcha) and PNG shards;
and the refusals of tasks/data/tfds_metadata.py. The pipelines' own shards: the captcha session run here, the
others in tests/data/test_tfds_pipelines.py (slow)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.data.files import TFDS_FEATURES_FILE, TFDS_LABEL_NAMES_FILE, TFPIPE_INFO_FILE
from tasks.data.shards import (
    ShardSpec,
    iter_shard_examples,
    load_dataset_info,
    save_dataset_info,
    write_split_shards,
)
from tasks.data.tfds_metadata import count_records, write_tfds_metadata
from tasks.formats.dataset_info import DATASET_INFO_JSON, DatasetInfo, SplitInfo
from tasks.formats.errors import FormatError
from tasks.formats.files import LABELS_FILE
from tasks.formats.tfrecord import read_labels_txt, write_labels_txt

LETTERS = [chr(ord("A") + i) for i in range(26)]


@dataclass(frozen=True)
class Case:
    dataset: str
    shape: tuple[int, int, int]
    class_names: list[str]
    heads: int = 1
    image_format: str = "raw"
    num_shards: int = 2


CASES = {
    "greyscale": Case("mnist", (28, 28, 1), [str(d) for d in range(10)], num_shards=3),
    "colour": Case("cifar10", (32, 32, 3), ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                            "ship", "truck"]),
    "captcha": Case("captcha", (12, 30, 1), LETTERS, heads=4),
    "png-colour": Case("images", (16, 16, 3), ["disc", "square", "triangle"], image_format="png"),
    "png-greyscale": Case("fashion_mnist", (28, 28, 1), ["T-shirt/top", "Trouser", "Ankle boot"], image_format="png"),
    "chinese-names": Case("hwdb", (20, 20, 1), ["一", "丁", "七", "鳌"], num_shards=1),
}
SPLIT_SIZES = {"train": 23, "validation": 7, "test": 9}


def write_examples(out_dir: Path, case: Case, seed: int = 0) -> dict[bytes, dict[str, Any]]:
    """An examples folder as the TFRecord stage leaves it (shards, labels.txt, tfpipe's and TFDS's descriptions);
    returns each example's source values by key."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    spec = ShardSpec(case.dataset, case.image_format, num_shards=case.num_shards)
    splits, written = {}, {}
    for split, count in SPLIT_SIZES.items():
        images = rng.integers(0, 256, (count, *case.shape), dtype=np.uint8)
        labels = rng.integers(0, len(case.class_names), (count, case.heads)).astype(np.int64)
        keys = np.array([f"{split}/{i:03d}.png".encode() for i in range(count)])
        digests = np.array([rng.bytes(32) for _ in range(count)], dtype="S32")
        files = write_split_shards(out_dir, split, images, labels, keys, digests, np.arange(count), spec)
        splits[split] = SplitInfo(count, tuple(files))
        written.update({keys[i]: {"image": images[i], "label": labels[i], "sha256": digests[i].hex()}
                        for i in range(count)})
    info = DatasetInfo(case.dataset, case.shape, len(case.class_names), case.heads, splits,
                       image_format=case.image_format)
    write_labels_txt(out_dir / LABELS_FILE, case.class_names)
    save_dataset_info(out_dir, info)
    write_tfds_metadata(out_dir, info, case.class_names)
    return written


def tfds_examples(shard_dir: Path, split: str) -> dict[bytes, dict[str, Any]]:
    """Every example TFDS yields for ``split`` (its default read: shards interleaved), by key; keys never repeat."""
    import tensorflow_datasets as tfds

    found: dict[bytes, dict[str, Any]] = {}
    builder = tfds.builder_from_directory(str(shard_dir))
    for example in tfds.as_numpy(builder.as_dataset(split=split)):
        image = example["image"]
        key = bytes(image["key"])
        assert key not in found, f"TFDS yielded {key!r} twice"
        found[key] = {"image": image["encoded"], "label": np.atleast_1d(image["class"]["label"]),
                      "sha256": image["sha256"].decode(), "format": image["format"].decode(),
                      "hwc": (int(image["height"]), int(image["width"]), int(image["channels"]))}
    return found


def assert_tfds_loads_like_tfpipe(shard_dir: Path) -> dict[str, dict[bytes, dict[str, Any]]]:
    """Every split: TFDS's examples are tfpipe's reader's, example for example (pixels, labels, key), with
    TFDS's class names those of labels.txt and its split sizes tfpipe's. Returns TFDS's examples per split."""
    import tensorflow_datasets as tfds

    info = load_dataset_info(shard_dir)
    builder = tfds.builder_from_directory(str(shard_dir))
    label_feature = builder.info.features["image"]["class"]["label"]
    if info.num_heads > 1:
        assert label_feature.shape == (info.num_heads,)
        label_feature = label_feature.feature
    assert label_feature.shape == () and label_feature.names == read_labels_txt(shard_dir / LABELS_FILE)
    assert builder.info.features["image"]["encoded"].shape == info.image_shape
    assert set(builder.info.splits) == set(info.splits)
    loaded = {}
    for split in info.splits:
        assert builder.info.splits[split].num_examples == info.count(split)
        assert builder.info.splits[split].num_shards == len(info.split(split).files)
        mine = {bytes(key): (image, label) for image, label, key in iter_shard_examples(shard_dir, split)}
        theirs = tfds_examples(shard_dir, split)
        assert len(mine) == info.count(split) and theirs.keys() == mine.keys(), split
        for key, (image, label) in mine.items():
            np.testing.assert_array_equal(theirs[key]["image"], image, err_msg=f"{split} {key!r}")
            assert theirs[key]["image"].dtype == np.uint8
            np.testing.assert_array_equal(theirs[key]["label"], label, err_msg=f"{split} {key!r}")
            assert theirs[key]["format"] == info.image_format and theirs[key]["hwc"] == info.image_shape
        loaded[split] = theirs
    return loaded


@pytest.mark.parametrize("name", list(CASES))
def test_tfds_yields_every_example_as_written_and_as_tfpipe_reads_it(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    written = write_examples(tmp_path / name, case)
    loaded = assert_tfds_loads_like_tfpipe(tmp_path / name)
    assert sum(len(examples) for examples in loaded.values()) == len(written)
    for examples in loaded.values():
        for key, example in examples.items():
            np.testing.assert_array_equal(example["image"], written[key]["image"])
            np.testing.assert_array_equal(example["label"], written[key]["label"])
            assert example["sha256"] == written[key]["sha256"]
            assert example["label"].shape == (case.heads,)


def test_the_descriptions_are_tfds_files_and_tfpipe_keeps_its_own(tmp_path: Path) -> None:
    write_examples(tmp_path, CASES["captcha"])
    tfds_info = json.loads((tmp_path / DATASET_INFO_JSON).read_text())
    assert tfds_info["name"] == "captcha" and tfds_info["fileFormat"] == "tfrecord"
    shard_lengths = {s["name"]: [int(n) for n in s["shardLengths"]] for s in tfds_info["splits"]}
    assert {split: sum(lengths) for split, lengths in shard_lengths.items()} == SPLIT_SIZES
    assert shard_lengths["train"] == [11, 12]  # the shards' own record counts
    features = json.loads((tmp_path / TFDS_FEATURES_FILE).read_text())
    assert set(features["featuresDict"]["features"]["image"]["featuresDict"]["features"]) == {
        "encoded", "format", "height", "width", "channels", "class", "key", "sha256"}
    assert (tmp_path / TFDS_LABEL_NAMES_FILE).read_text().splitlines() == LETTERS
    mine = load_dataset_info(tmp_path)
    assert mine.num_heads == 4 and mine.image_shape == (12, 30, 1) and mine.count("test") == SPLIT_SIZES["test"]


def test_a_folder_with_tfpipes_old_description_only_is_refused_not_misread(tmp_path: Path) -> None:
    """A version-3 artifact kept tfpipe's description as dataset_info.json: the readers name the file they need."""
    info = DatasetInfo("mnist", (28, 28, 1), 10, splits={"train": SplitInfo(0)})
    info.save(tmp_path)
    with pytest.raises(FormatError, match=rf"{TFPIPE_INFO_FILE}: unreadable dataset description"):
        load_dataset_info(tmp_path)


def test_tfds_description_read_as_tfpipes_is_a_format_error_naming_it(tmp_path: Path) -> None:
    write_examples(tmp_path, CASES["colour"])
    with pytest.raises(FormatError, match=rf"{DATASET_INFO_JSON}: unreadable dataset description"):
        DatasetInfo.load(tmp_path)


def test_records_are_counted_from_their_length_fields(tmp_path: Path) -> None:
    write_examples(tmp_path, CASES["greyscale"])
    info = load_dataset_info(tmp_path)
    counts = [count_records(tmp_path / name)[0] for name in info.split("train").files]
    assert counts == [7, 8, 8]
    shard = tmp_path / info.split("train").files[0]
    records, payload = count_records(shard)
    assert payload == shard.stat().st_size - 16 * records
    shard.write_bytes(shard.read_bytes()[:-3])
    with pytest.raises(FormatError, match=r"truncated record: length field \d+ runs past the end of the file"):
        count_records(shard)


def test_a_split_whose_shards_hold_another_count_is_refused_naming_the_folder(tmp_path: Path) -> None:
    write_examples(tmp_path, CASES["colour"])
    info = load_dataset_info(tmp_path)
    splits = {**info.splits, "test": SplitInfo(info.count("test") + 1, info.split("test").files)}
    with pytest.raises(FormatError, match=rf"^{re.escape(str(tmp_path))}: split 'test' has 9 records in its shards, "
                                          r"its description says 10$"):
        write_tfds_metadata(tmp_path, info.with_splits(splits), CASES["colour"].class_names)


def test_shards_not_named_as_tfds_expects_are_refused(tmp_path: Path) -> None:
    write_examples(tmp_path, CASES["colour"])
    info = load_dataset_info(tmp_path)
    renamed = info.with_splits({"train": SplitInfo(info.count("train"), ("train-0.tfrecord",))})
    with pytest.raises(FormatError, match=r"split 'train': shards \['train-0.tfrecord'\] are not TFDS-named like "
                                          r"\['cifar10-train.tfrecord-00000-of-00001'\]"):
        write_tfds_metadata(tmp_path, renamed, CASES["colour"].class_names)


@pytest.mark.parametrize(("names", "problem"), [
    (["a", "b "], r"class name 'b ' cannot be a TFDS ClassLabel name"),
    (["a", ""], r"class name '' cannot be a TFDS ClassLabel name"),
    (["a", "a"], r"class names repeat"),
    (["a"], r"1 class names for 2 classes"),
])
def test_class_names_tfds_would_not_read_back_are_refused_naming_labels_txt(names: list[str], problem: str,
                                                                            tmp_path: Path) -> None:
    info = DatasetInfo("toy", (4, 4, 1), 2, splits={})
    with pytest.raises(FormatError, match=rf"^{re.escape(str(tmp_path / LABELS_FILE))}: {problem}"):
        write_tfds_metadata(tmp_path, info, names)
    assert not (tmp_path / DATASET_INFO_JSON).exists()


def test_descriptions_replace_hard_links_instead_of_writing_through_them(tmp_path: Path) -> None:
    """A stage handing on its upstream's files by hard link (datacheck) and then describing its own shards must
    leave the upstream artifact's files as they were."""
    upstream, handed_on = tmp_path / "upstream", tmp_path / "handed-on"
    write_examples(upstream, CASES["greyscale"])
    handed_on.mkdir()
    for path in upstream.iterdir():
        os.link(path, handed_on / path.name)
    before = {path.name: path.read_bytes() for path in upstream.iterdir()}
    info = load_dataset_info(handed_on)
    fewer = info.with_splits({"train": info.split("train")})
    save_dataset_info(handed_on, fewer)
    write_tfds_metadata(handed_on, fewer, CASES["greyscale"].class_names)
    assert {path.name: path.read_bytes() for path in upstream.iterdir()} == before
    assert [s["name"] for s in json.loads((handed_on / DATASET_INFO_JSON).read_text())["splits"]] == ["train"]
    assert list(load_dataset_info(handed_on).splits) == ["train"]


def test_the_captcha_runs_shards_load_through_tfds_unchanged(captcha_tiny_run: tuple[Path, object]) -> None:
    """The one pipeline artifact of the default suite: the session's captcha run (four labels per image)."""
    from tasks.store.artifacts import verify_artifact

    root, _ = captcha_tiny_run
    [shards] = [p for p in (root / "tfrecords").glob("TFRecords-*") if not p.name.startswith(".")]
    loaded = assert_tfds_loads_like_tfpipe(shards)
    assert sum(len(examples) for examples in loaded.values()) == 160
    first = next(iter(loaded["train"].values()))
    assert first["image"].shape == (60, 160, 1) and first["label"].shape == (4,)
    assert verify_artifact(shards) == []  # TFDS read the folder and left it as it was
