"""IDX codec: round trips for every dtype, plain and gzip, and a located IdxFormatError for every malformation."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from tasks.datasets.mnist.idx import (
    DTYPE_CODES,
    IMAGES_MAGIC,
    LABELS_MAGIC,
    MAX_DATA_BYTES,
    encode_idx,
    read_idx,
    read_idx_images,
    read_idx_labels,
    read_idx_pair,
    write_idx,
)
from tasks.formats.errors import FormatError, IdxFormatError
from tests.fakes.idx import MNIST_FILES, mnist_file_names, write_fake_mnist

DTYPES = ["uint8", "int8", "int16", "int32", "float32", "float64"]


def _values(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is None:
        return rng.normal(0, 1e3, shape).astype(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def _images(count: int = 5, rows: int = 4, cols: int = 3) -> np.ndarray:
    return _values("uint8", (count, rows, cols), seed=count)


def _labels(count: int = 5) -> np.ndarray:
    return (np.arange(count) % 10).astype(np.uint8)


def _write_raw(path: Path, payload: bytes, gzipped: bool) -> Path:
    path.write_bytes(gzip.compress(payload, mtime=0) if gzipped else payload)
    return path


def _header(magic: int, *dims: int) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims)


def _check_located(error: IdxFormatError, path: Path, offset: int, gzipped: bool) -> None:
    message = str(error)
    assert isinstance(error, FormatError)
    assert str(path) in message and path.name in message
    assert error.offset == offset
    assert error.decompressed is gzipped
    if gzipped:
        assert f"byte offset {offset} of the decompressed stream:" in message
    else:
        assert f"byte offset {offset}:" in message and "decompressed" not in message


@pytest.fixture(params=[False, True], ids=["plain", "gzip"])
def gzipped(request: pytest.FixtureRequest) -> bool:
    return request.param


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("shape", [(7,), (3, 4, 5), (2, 3, 1, 2), (0, 28, 28)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_every_dtype(tmp_path: Path, dtype: str, shape: tuple[int, ...], gzipped: bool) -> None:
    array = _values(dtype, shape)
    path = tmp_path / "a.idx"
    write_idx(path, array, gzip=gzipped)
    decoded = read_idx(path)
    assert decoded.dtype == np.dtype(dtype) and decoded.dtype.isnative
    assert decoded.shape == shape
    np.testing.assert_array_equal(decoded, array)
    assert decoded.flags.writeable


def test_layout_is_big_endian_row_major(tmp_path: Path) -> None:
    array = np.array([[1, 2, 3], [256, -2, 0x1234]], np.int16)
    path = tmp_path / "a.idx"
    write_idx(path, array)
    raw = path.read_bytes()
    assert raw[:4] == b"\x00\x00\x0b\x02"
    assert raw[4:12] == b"\x00\x00\x00\x02\x00\x00\x00\x03"
    assert raw[12:] == b"\x00\x01\x00\x02\x00\x03\x01\x00\xff\xfe\x12\x34"
    assert raw == encode_idx(array)


def test_writer_accepts_non_contiguous_input(tmp_path: Path) -> None:
    array = _values("int32", (4, 6))[:, ::2].T
    path = tmp_path / "a.idx"
    write_idx(path, array, gzip=True)
    np.testing.assert_array_equal(read_idx(path), array)


def test_images_and_labels_round_trip(tmp_path: Path, gzipped: bool) -> None:
    images, labels = _images(), _labels()
    write_idx(tmp_path / "images", images, gzip=gzipped)
    write_idx(tmp_path / "labels", labels, gzip=gzipped)
    assert (tmp_path / "labels").read_bytes()[:2] == (b"\x1f\x8b" if gzipped else b"\x00\x00")
    got_images = read_idx_images(tmp_path / "images")
    got_labels = read_idx_labels(tmp_path / "labels")
    assert got_images.dtype == np.uint8 and got_images.shape == (5, 4, 3)
    assert got_labels.dtype == np.uint8 and got_labels.shape == (5,)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    pair = read_idx_pair(tmp_path / "images", tmp_path / "labels", num_classes=10)
    np.testing.assert_array_equal(pair[0], images)
    np.testing.assert_array_equal(pair[1], labels)


def test_mnist_magics(tmp_path: Path) -> None:
    write_idx(tmp_path / "images", _images())
    write_idx(tmp_path / "labels", _labels())
    assert int.from_bytes((tmp_path / "labels").read_bytes()[:4], "big") == LABELS_MAGIC == 2049
    assert int.from_bytes((tmp_path / "images").read_bytes()[:4], "big") == IMAGES_MAGIC == 2051


def test_gzip_output_is_reproducible(tmp_path: Path) -> None:
    write_idx(tmp_path / "a.gz", _images(), gzip=True)
    write_idx(tmp_path / "b.gz", _images(), gzip=True)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


def test_compression_is_detected_by_content_not_name(tmp_path: Path) -> None:
    labels = _labels(12)
    plain_named_gz = tmp_path / "train-labels-idx1-ubyte.gz"
    gzip_named_plain = tmp_path / "train-labels-idx1-ubyte"
    write_idx(plain_named_gz, labels, gzip=False)
    write_idx(gzip_named_plain, labels, gzip=True)
    assert plain_named_gz.read_bytes()[:2] == b"\x00\x00"
    assert gzip_named_plain.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx_labels(plain_named_gz), labels)
    np.testing.assert_array_equal(read_idx_labels(gzip_named_plain), labels)


def test_writer_rejects_what_idx_cannot_hold(tmp_path: Path) -> None:
    for bad in (np.zeros(3, np.uint16), np.zeros(3, np.int64), np.zeros(3, bool), np.zeros(3, np.float16)):
        with pytest.raises(ValueError, match="no dtype code"):
            write_idx(tmp_path / "x", bad)
    with pytest.raises(ValueError, match="1 to 255 dimensions"):
        write_idx(tmp_path / "x", np.uint8(3))


def test_supported_dtype_codes() -> None:
    assert {code: dtype.str for code, dtype in DTYPE_CODES.items()} == {
        0x08: "|u1", 0x09: "|i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8",
    }  # fmt: skip


# ------------------------------------------------------------------------------------------ malformed header


def test_empty_file_is_a_truncated_header(tmp_path: Path, gzipped: bool) -> None:
    path = _write_raw(tmp_path / "empty", b"", gzipped)
    with pytest.raises(IdxFormatError, match="header truncated: the file ends after 0 of the 4 magic bytes") as caught:
        read_idx(path)
    _check_located(caught.value, path, 0, gzipped)


def test_truncated_magic(tmp_path: Path, gzipped: bool) -> None:
    path = _write_raw(tmp_path / "short", b"\x00\x00", gzipped)
    with pytest.raises(IdxFormatError, match="ends after 2 of the 4 magic bytes") as caught:
        read_idx_labels(path)
    _check_located(caught.value, path, 2, gzipped)


def test_magic_without_leading_zero_bytes(tmp_path: Path, gzipped: bool) -> None:
    path = _write_raw(tmp_path / "not-idx", b"\x89PNG\r\n\x1a\n" + bytes(16), gzipped)
    with pytest.raises(IdxFormatError, match="bad magic 0x89504e47: an IDX file starts with two zero bytes") as caught:
        read_idx(path)
    _check_located(caught.value, path, 0, gzipped)


def test_unknown_dtype_code(tmp_path: Path, gzipped: bool) -> None:
    path = _write_raw(tmp_path / "dtype", _header(0x00000A01, 1) + b"\x00", gzipped)
    with pytest.raises(IdxFormatError, match="unknown dtype code 0x0a in magic 0x00000a01") as caught:
        read_idx(path)
    _check_located(caught.value, path, 2, gzipped)


def test_zero_dimensions(tmp_path: Path, gzipped: bool) -> None:
    path = _write_raw(tmp_path / "scalar", _header(0x00000800) + b"\x07", gzipped)
    with pytest.raises(IdxFormatError, match="declares zero dimensions") as caught:
        read_idx(path)
    _check_located(caught.value, path, 3, gzipped)


def test_truncated_dimensions(tmp_path: Path, gzipped: bool) -> None:
    payload = _header(IMAGES_MAGIC, 60000, 28)[:-2]  # magic + 6 of the 12 dimension bytes
    path = _write_raw(tmp_path / "dims", payload, gzipped)
    with pytest.raises(
        IdxFormatError, match="3 dimensions need 12 bytes after the magic, the file ends after 6"
    ) as caught:
        read_idx_images(path)
    _check_located(caught.value, path, 10, gzipped)


def test_absurd_dimensions_are_refused_before_allocating(tmp_path: Path, gzipped: bool) -> None:
    path = _write_raw(tmp_path / "huge", _header(IMAGES_MAGIC, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), gzipped)
    with pytest.raises(IdxFormatError, match=f"over the {MAX_DATA_BYTES}-byte cap") as caught:
        read_idx_images(path)
    _check_located(caught.value, path, 4, gzipped)


def test_size_cap_counts_bytes_not_values(tmp_path: Path) -> None:
    path = tmp_path / "f64"
    write_idx(path, np.zeros((4, 4), np.float64))  # 128 data bytes
    assert read_idx(path, max_bytes=128).shape == (4, 4)
    with pytest.raises(IdxFormatError, match="4 x 4 of 8-byte values make 128 bytes, over the 127-byte cap") as caught:
        read_idx(path, max_bytes=127)
    _check_located(caught.value, path, 4, False)


@pytest.mark.parametrize(("dims", "axis"), [((3, 0, 28), 1), ((3, 28, 0), 2)], ids=["rows", "cols"])
def test_images_with_zero_rows_or_cols(tmp_path: Path, gzipped: bool, dims: tuple[int, ...], axis: int) -> None:
    path = _write_raw(tmp_path / "flat", _header(IMAGES_MAGIC, *dims), gzipped)
    with pytest.raises(IdxFormatError, match=f"dimension {axis} is zero") as caught:
        read_idx_images(path)
    _check_located(caught.value, path, 4 + 4 * axis, gzipped)
    assert read_idx(path).shape == dims  # the generic reader has no such requirement


def test_images_file_read_as_labels(tmp_path: Path, gzipped: bool) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, _images(), gzip=gzipped)
    with pytest.raises(IdxFormatError, match=r"magic 0x00000803 \(2051\) is not the idx1-ubyte label magic") as caught:
        read_idx_labels(path)
    _check_located(caught.value, path, 0, gzipped)


def test_labels_file_read_as_images(tmp_path: Path, gzipped: bool) -> None:
    path = tmp_path / "train-labels-idx1-ubyte"
    write_idx(path, _labels(), gzip=gzipped)
    with pytest.raises(IdxFormatError, match=r"magic 0x00000801 \(2049\) is not the idx3-ubyte image magic") as caught:
        read_idx_images(path)
    _check_located(caught.value, path, 0, gzipped)


@pytest.mark.parametrize("array", [np.zeros(5, np.int16), np.zeros((5, 1), np.uint8)], ids=["int16", "2-d"])
def test_labels_need_the_exact_magic(tmp_path: Path, array: np.ndarray) -> None:
    path = tmp_path / "labels"
    write_idx(path, array)
    with pytest.raises(IdxFormatError, match="is not the idx1-ubyte label magic 0x00000801") as caught:
        read_idx_labels(path)
    _check_located(caught.value, path, 0, False)


# ------------------------------------------------------------------------------------------ malformed data


def test_truncated_data(tmp_path: Path, gzipped: bool) -> None:
    payload = encode_idx(_images(5, 4, 3))  # 16-byte header + 60 data bytes
    path = _write_raw(tmp_path / "cut", payload[:-7], gzipped)
    with pytest.raises(
        IdxFormatError, match=r"truncated data: dims \(5, 4, 3\) of uint8 need 60 bytes from offset 16, got 53"
    ) as caught:
        read_idx_images(path)
    _check_located(caught.value, path, 16 + 53, gzipped)


def test_truncated_wide_data(tmp_path: Path) -> None:
    payload = encode_idx(np.zeros((2, 3), np.float32))  # 12-byte header + 24 data bytes
    path = _write_raw(tmp_path / "cut", payload[:-1], False)
    with pytest.raises(IdxFormatError, match="of float32 need 24 bytes from offset 12, got 23") as caught:
        read_idx(path)
    _check_located(caught.value, path, 35, False)


def test_trailing_bytes(tmp_path: Path, gzipped: bool) -> None:
    payload = encode_idx(_labels(5))  # 8 + 5 bytes
    path = _write_raw(tmp_path / "long", payload + b"\x00\x00\x00", gzipped)
    match = "trailing bytes after the 5-byte data" if gzipped else "3 trailing bytes after the 5-byte data"
    with pytest.raises(IdxFormatError, match=match) as caught:
        read_idx_labels(path)
    _check_located(caught.value, path, 13, gzipped)


# ------------------------------------------------------------------------------------------ broken gzip


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / "cut.gz"
    write_idx(path, _images(50, 28, 28), gzip=True)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IdxFormatError, match="corrupt or truncated gzip stream while reading the data") as caught:
        read_idx_images(path)
    assert isinstance(caught.value.__cause__, EOFError)
    _check_located(caught.value, path, 16, True)


def test_corrupt_deflate_data(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.gz"
    write_idx(path, _images(50, 28, 28), gzip=True)
    raw = bytearray(path.read_bytes())
    raw[10:30] = b"\xff" * 20  # the deflate stream starts right after the 10-byte gzip header
    path.write_bytes(bytes(raw))
    with pytest.raises(IdxFormatError, match="corrupt or truncated gzip stream") as caught:
        read_idx_images(path)
    assert str(path) in str(caught.value) and "decompressed stream" in str(caught.value)


def test_gzip_crc_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "crc.gz"
    write_idx(path, _labels(20), gzip=True)
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF  # CRC32 of the uncompressed data, checked at the end of the member
    path.write_bytes(bytes(raw))
    with pytest.raises(IdxFormatError, match="CRC check failed") as caught:
        read_idx_labels(path)
    _check_located(caught.value, path, 28, True)


def test_garbage_after_gzip_member(tmp_path: Path) -> None:
    path = tmp_path / "tail.gz"
    write_idx(path, _labels(20), gzip=True)
    path.write_bytes(path.read_bytes() + b"junk")
    with pytest.raises(IdxFormatError, match="corrupt or truncated gzip stream while reading past the data") as caught:
        read_idx_labels(path)
    _check_located(caught.value, path, 28, True)


def test_gzip_magic_alone(tmp_path: Path) -> None:
    path = _write_raw(tmp_path / "stub.gz", b"\x1f\x8b", False)
    with pytest.raises(IdxFormatError, match="corrupt or truncated gzip stream while reading the magic") as caught:
        read_idx(path)
    _check_located(caught.value, path, 0, True)


# ------------------------------------------------------------------------------------------ pairs


def test_pair_count_mismatch_names_both_files(tmp_path: Path, gzipped: bool) -> None:
    images_path, labels_path = tmp_path / "some-images", tmp_path / "some-labels"
    write_idx(images_path, _images(6), gzip=gzipped)
    write_idx(labels_path, _labels(5), gzip=gzipped)
    with pytest.raises(IdxFormatError, match="6 images .* holds 5 labels") as caught:
        read_idx_pair(images_path, labels_path)
    assert str(labels_path) in str(caught.value)
    _check_located(caught.value, images_path, 4, gzipped)


def test_pair_label_out_of_range(tmp_path: Path, gzipped: bool) -> None:
    labels = _labels(20)
    labels[[13, 17]] = [10, 200]
    images_path, labels_path = tmp_path / "images", tmp_path / "labels"
    write_idx(images_path, _images(20), gzip=gzipped)
    write_idx(labels_path, labels, gzip=gzipped)
    with pytest.raises(
        IdxFormatError, match=r"label 10 of sample 13 is not below num_classes=10 \(2 bad labels"
    ) as caught:
        read_idx_pair(images_path, labels_path, num_classes=10)
    _check_located(caught.value, labels_path, 8 + 13, gzipped)
    images, got = read_idx_pair(images_path, labels_path, num_classes=201)  # in range for a wider label set
    np.testing.assert_array_equal(got, labels)
    assert len(images) == 20


def test_pair_rejects_impossible_num_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        read_idx_pair(tmp_path / "i", tmp_path / "l", num_classes=0)


# ------------------------------------------------------------------------------------------ fake MNIST


@pytest.mark.parametrize("fashion", [False, True], ids=["digits", "fashion"])
def test_fake_mnist_writes_official_files_pixel_exact(tmp_path: Path, gzipped: bool, fashion: bool) -> None:
    fake = write_fake_mnist(tmp_path, 30, 20, gzip=gzipped, fashion=fashion, seed=3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(mnist_file_names(gzipped).values())
    assert set(fake["paths"]) == set(MNIST_FILES)
    for split, count in (("train", 30), ("test", 20)):
        images_path, labels_path = fake["paths"][f"{split}_images"], fake["paths"][f"{split}_labels"]
        assert images_path.read_bytes()[:2] == (b"\x1f\x8b" if gzipped else b"\x00\x00")
        images, labels = read_idx_pair(images_path, labels_path, num_classes=10)
        assert images.shape == (count, 28, 28) and images.dtype == np.uint8
        np.testing.assert_array_equal(images, fake[f"{split}_images"])
        np.testing.assert_array_equal(labels, fake[f"{split}_labels"])
        assert np.bincount(labels, minlength=10).tolist() == [count // 10] * 10


def test_fake_mnist_names_match_the_real_archives() -> None:
    assert mnist_file_names(True) == {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }


def test_fake_mnist_is_deterministic(tmp_path: Path) -> None:
    a = write_fake_mnist(tmp_path / "a", 20, 10, seed=1)
    b = write_fake_mnist(tmp_path / "b", 20, 10, seed=1)
    c = write_fake_mnist(tmp_path / "c", 20, 10, seed=2)
    for key in MNIST_FILES:
        assert a["paths"][key].read_bytes() == b["paths"][key].read_bytes()
    assert not np.array_equal(a["train_images"], c["train_images"])


@pytest.mark.parametrize("fashion", [False, True], ids=["digits", "fashion"])
def test_fake_mnist_is_learnable(tmp_path: Path, fashion: bool) -> None:
    """Nearest class mean, fitted on 300 train images, must beat chance (10%) on the test split by far."""
    fake = write_fake_mnist(tmp_path, 300, 100, fashion=fashion)
    train = fake["train_images"].reshape(300, -1) / 255.0
    centroids = np.stack([train[fake["train_labels"] == k].mean(axis=0) for k in range(10)])
    test = fake["test_images"].reshape(100, -1) / 255.0
    distances = ((test[:, None, :] - centroids[None]) ** 2).sum(axis=-1)
    accuracy = float((distances.argmin(axis=1) == fake["test_labels"]).mean())
    assert accuracy > 0.5
