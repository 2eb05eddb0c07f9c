"""The TensorFlow-free TFRecord/Example codec must produce bytes TensorFlow reads back exactly."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tasks.formats.errors import FormatError
from tasks.formats.tfrecord import (
    TFRecordWriter,
    decode_example,
    encode_example,
    read_labels_txt,
    read_records,
    shard_names,
    write_labels_txt,
)

FEATURES = {
    "image/encoded": bytes(range(256)) * 3,
    "image/format": b"raw",
    "image/class/label": [3, 0, 25, 7],
    "image/height": 60,
    "image/width": 160,
    "image/channels": 1,
    "image/key": b"captcha/1234",
    "neg": -5,
}


def test_example_bytes_parse_in_tensorflow_and_back() -> None:
    tf = pytest.importorskip("tensorflow")
    data = encode_example(FEATURES)
    parsed = tf.train.Example.FromString(data).features.feature
    assert parsed["image/encoded"].bytes_list.value[0] == FEATURES["image/encoded"]
    assert list(parsed["image/class/label"].int64_list.value) == [3, 0, 25, 7]
    assert parsed["image/height"].int64_list.value[0] == 60
    assert parsed["neg"].int64_list.value[0] == -5
    again = decode_example(tf.train.Example.FromString(data).SerializeToString())
    assert again["image/class/label"] == [3, 0, 25, 7] and again["neg"] == [-5]
    assert again["image/key"] == [b"captcha/1234"]


def test_records_read_by_tf_data(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    path = tmp_path / "x.tfrecord"
    records = [encode_example({"i": i, "b": b"v" * i}) for i in range(50)]
    with TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == records
    assert list(read_records(path)) == records


def test_corruption_and_truncation_name_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "x.tfrecord"
    with TFRecordWriter(path) as writer:
        for i in range(3):
            writer.write(encode_example({"i": i}))
    data = bytearray(path.read_bytes())
    record_len = len(data) // 3
    flipped = bytearray(data)
    flipped[record_len + 14] ^= 0xFF
    (tmp_path / "bad.tfrecord").write_bytes(bytes(flipped))
    with pytest.raises(FormatError, match=rf"bad.tfrecord, record 1, byte offset {record_len}: record data CRC"):
        list(read_records(tmp_path / "bad.tfrecord"))
    (tmp_path / "cut.tfrecord").write_bytes(bytes(data[:-3]))
    with pytest.raises(FormatError, match="truncated record"):
        list(read_records(tmp_path / "cut.tfrecord"))


def test_names_and_labels_file(tmp_path: Path) -> None:
    assert shard_names("cifar10", "train", 8)[0] == "cifar10-train.tfrecord-00000-of-00008"
    write_labels_txt(tmp_path / "labels.txt", ["airplane", "a:b"])
    assert (tmp_path / "labels.txt").read_text() == "0:airplane\n1:a:b\n"
    assert read_labels_txt(tmp_path / "labels.txt") == ["airplane", "a:b"]
    (tmp_path / "bad.txt").write_text("1:x\n")
    with pytest.raises(FormatError):
        read_labels_txt(tmp_path / "bad.txt")


def test_example_encoder_matches_encode_example() -> None:
    from tasks.formats.tfrecord import ExampleEncoder

    constant = {k: FEATURES[k] for k in ("image/format", "image/height", "image/width", "image/channels")}
    encoder = ExampleEncoder(constant, ["image/encoded", "image/class/label", "image/key", "neg"])
    for label in ([0], [127], [128, 3], [16384]):
        varying = {"image/encoded": b"\x00\x01" * 50, "image/class/label": label, "image/key": b"k" * 200,
                   "neg": -1}
        assert encoder.encode(varying) == encode_example({**constant, **varying})
    with pytest.raises(ValueError, match="both constant and varying"):
        ExampleEncoder(constant, ["image/format"])


def test_frame_batch_equals_record_by_record_writing(tmp_path: Path) -> None:
    import numpy as np

    from tasks.formats.tfrecord import ExampleEncoder

    rng = np.random.default_rng(0)
    encoder = ExampleEncoder({"image/format": b"raw", "image/height": 4}, ["image/encoded", "image/class/label",
                                                                           "image/key"])
    pixels = rng.integers(0, 256, (7, 48), dtype=np.uint8)
    labels = [[3], [200], [5], [70000], [1], [3], [127]]  # 1-, 2- and 3-byte varints: several layouts
    keys = [b"k1", b"key-22", b"k3", b"k4", b"a-much-longer-key", b"k6", b"k7"]
    framed = encoder.frame_batch({"image/class/label": labels, "image/key": keys}, {"image/encoded": pixels})
    with TFRecordWriter(tmp_path / "one-by-one") as writer:
        for row in range(7):
            writer.write(encoder.encode({"image/encoded": pixels[row].tobytes(), "image/class/label": labels[row],
                                         "image/key": keys[row]}))
    assert framed.tobytes() == (tmp_path / "one-by-one").read_bytes()
    (tmp_path / "framed").write_bytes(framed.tobytes())
    decoded = [decode_example(r) for r in read_records(tmp_path / "framed")]
    assert [d["image/class/label"] for d in decoded] == labels and [d["image/key"][0] for d in decoded] == keys


@pytest.mark.parametrize("workers", [2, 3])
def test_shards_written_by_threads_equal_one_thread(tmp_path: Path, workers: int) -> None:
    import numpy as np

    from tasks.data.shards import ShardSpec, write_split_shards
    from tasks.formats.examples import encode_keys, pixel_digests

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (500, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 300, 500).astype(np.int32)
    keys = encode_keys([f"k/{i}" for i in range(500)])
    progress: dict[int, list[int]] = {1: [], workers: []}
    for count in (1, workers):
        (tmp_path / str(count)).mkdir()
        write_split_shards(tmp_path / str(count), "train", images, labels, keys, pixel_digests(images), np.arange(500),
                           ShardSpec("t", num_shards=5), workers=count,
                           progress=lambda done, total, c=count: progress[c].append(done))
    one, many = sorted((tmp_path / "1").iterdir()), sorted((tmp_path / str(workers)).iterdir())
    assert [p.name for p in one] == [p.name for p in many] and len(one) == 5
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, many, strict=True))
    assert progress[1] == progress[workers] == [100, 200, 300, 400, 500]


def test_png_shards_decode_to_the_source_pixels(tmp_path: Path) -> None:
    import numpy as np

    from tasks.data.shards import ShardSpec, decode_stored_image, write_split_shards
    from tasks.formats.examples import encode_keys, pixel_digests

    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (20, 6, 5, 3), dtype=np.uint8)
    keys = encode_keys([f"k/{i}" for i in range(20)])
    names = write_split_shards(tmp_path, "test", images, np.arange(20, dtype=np.int32), keys, pixel_digests(images),
                               np.arange(20), ShardSpec("t", "png", num_shards=2))
    seen = 0
    for name in names:
        for record in read_records(tmp_path / name):
            features = decode_example(record)
            assert features["image/format"] == [b"png"]
            row = features["image/class/label"][0]
            assert features["image/key"] == [f"k/{row}".encode()]
            assert features["image/sha256"] == [hashlib.sha256(images[row].tobytes()).hexdigest().encode()]
            np.testing.assert_array_equal(decode_stored_image(features["image/encoded"][0], "png", (6, 5, 3)),
                                          images[row])
            seen += 1
    assert seen == 20


@pytest.mark.parametrize("heads", [1, 4])
def test_entry_columns_frame_the_same_bytes_as_per_row_values(heads: int) -> None:
    """The vectorised label/key columns against the per-row encoder, over several varint and key lengths."""
    import numpy as np

    from tasks.formats.tfrecord import ExampleEncoder, bytes_entry_column, int_entry_column

    rng = np.random.default_rng(heads)
    count = 300
    encoder = ExampleEncoder({"image/format": b"raw"}, ["image/encoded", "image/class/label", "image/key"])
    labels = rng.choice([0, 5, 127, 128, 300, 16383, 16384, 70000], size=(count, heads)).astype(np.int64)
    keys = np.asarray([b"k" * int(n) for n in rng.integers(0, 140, count)], dtype="S140")  # incl. empty keys
    pixels = rng.integers(0, 256, (count, 12), dtype=np.uint8)
    label_values = labels if heads > 1 else labels[:, 0]
    fast = encoder.frame_batch({"image/class/label": int_entry_column("image/class/label", label_values),
                                "image/key": bytes_entry_column("image/key", keys)}, {"image/encoded": pixels})
    slow = encoder.frame_batch({"image/class/label": labels.tolist(), "image/key": keys.tolist()},
                               {"image/encoded": pixels})
    assert fast.tobytes() == slow.tobytes()
    records = list(read_records_from_bytes(fast.tobytes()))
    assert [decode_example(r)["image/key"][0] for r in records] == keys.tolist()
    uniform = encoder.frame_batch({"image/class/label": int_entry_column("image/class/label", label_values[:1].repeat(
        count, axis=0)), "image/key": bytes_entry_column("image/key", np.full(count, b"same", "S8"))},
        {"image/encoded": pixels})
    assert len(list(read_records_from_bytes(uniform.tobytes()))) == count


def read_records_from_bytes(data: bytes):  # noqa: ANN201 - generator
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.tfrecord"
        path.write_bytes(data)
        yield from read_records(path)


def reference_key_hash(key: bytes, salt: str) -> int:
    """``key_hashes`` for one key in plain Python integers, written from its docstring."""
    import hashlib

    mask = 2**64 - 1

    def fmix64(value: int) -> int:
        for multiplier in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
            value ^= value >> 33
            value = (value * multiplier) & mask
        return value ^ (value >> 33)

    key = key.rstrip(b"\0")
    words = [int.from_bytes(key[i : i + 8].ljust(8, b"\0"), "little") for i in range(0, len(key), 8)]
    value = int.from_bytes(hashlib.sha256(salt.encode()).digest()[:8], "little")
    for word in words:
        value = fmix64(value ^ word)
    return fmix64(value ^ len(words))


def test_key_hashes_equal_the_reference_for_keys_of_every_length() -> None:
    import numpy as np

    from tasks.formats.examples import encode_keys, key_hashes

    keys = [b"", b"a", b"k" * 7, b"k" * 8, b"k" * 9, b"train/data_batch_1/00017", "é/ü".encode(), b"x" * 96]
    expected = [reference_key_hash(key, "shuffle:3") for key in keys]
    assert key_hashes(encode_keys([k.decode() for k in keys]), "shuffle:3").tolist() == expected
    # Any array width, str keys, and the company of other keys give the same hashes.
    assert key_hashes(np.asarray(keys, dtype="S100"), "shuffle:3").tolist() == expected
    assert key_hashes([k.decode() for k in keys], "shuffle:3").tolist() == expected
    assert key_hashes(np.asarray(keys[3:4]), "shuffle:3").tolist() == expected[3:4]
    assert key_hashes(keys, "shuffle:4").tolist() != expected


def test_stable_order_sorts_by_key_hash_and_ignores_input_order() -> None:
    import numpy as np

    from tasks.formats.examples import encode_keys, key_hashes, stable_order

    keys = [f"train/{i}" for i in range(2000)]
    order = stable_order(encode_keys(keys), "shuffle:3")
    np.testing.assert_array_equal(order, np.argsort(key_hashes(keys, "shuffle:3"), kind="stable"))
    assert sorted(order.tolist()) == list(range(2000))
    assert abs(np.corrcoef(order, np.arange(2000))[0, 1]) < 0.1  # shuffled, not merely rotated or reversed
    reversed_keys = keys[::-1]
    assert [reversed_keys[i] for i in stable_order(reversed_keys, "shuffle:3")] == [keys[i] for i in order]
    assert not np.array_equal(stable_order(keys, "shuffle:4"), order)


def test_split_batches_stream_the_split_in_file_order(tmp_path: Path) -> None:
    import numpy as np

    from tasks.data.shards import (
        ShardSpec,
        iter_shard_examples,
        iter_split_batches,
        load_split_arrays,
        save_dataset_info,
        write_split_shards,
    )
    from tasks.formats.dataset_info import DatasetInfo, SplitInfo
    from tasks.formats.examples import encode_keys, pixel_digests

    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (23, 4, 4, 1), dtype=np.uint8)
    labels = rng.integers(0, 5, 23).astype(np.int32)
    files = write_split_shards(tmp_path, "test", images, labels, encode_keys([f"k{i}" for i in range(23)]),
                               pixel_digests(images), np.arange(23), ShardSpec("t", num_shards=3))
    save_dataset_info(tmp_path, DatasetInfo("t", (4, 4, 1), 5, splits={"test": SplitInfo(23, tuple(files))}))
    batches = list(iter_split_batches(tmp_path, "test", batch_size=10))
    assert [len(b[0]) for b in batches] == [10, 10, 3] and batches[0][1].shape == (10,)
    order = [int(key.decode()[1:]) for _, _, key in iter_shard_examples(tmp_path, "test")]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), images[order])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), labels[order])
    whole_images, whole_labels = load_split_arrays(tmp_path, "test", limit=12)
    np.testing.assert_array_equal(whole_images, images[order[:12]])
    np.testing.assert_array_equal(whole_labels, labels[order[:12]])
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_split_batches(tmp_path, "test", batch_size=0))
