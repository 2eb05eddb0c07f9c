"""CIFAR codec: writer -> reader round trips, the real shared fixtures, and every schema violation."""

from __future__ import annotations

import hashlib
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.datasets.cifar.codec import (
    CIFAR10,
    CIFAR10_LABEL_NAMES,
    CIFAR100,
    CifarSpec,
    chw_rows_to_hwc,
    iter_split,
    read_cifar_batch,
    read_label_names,
)
from tasks.formats.errors import FormatError
from tests.fakes.cifar import write_cifar_archive, write_cifar_batch, write_meta

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
REAL_META_DIR = FIXTURES / "cifar10_real_meta"
HF_CIFAR10 = FIXTURES / "cifar10_hf_dummy" / "cifar-10-batches-py"
HF_CIFAR100 = FIXTURES / "cifar100_hf_dummy" / "cifar-100-python"


def _needs(path: Path) -> Any:
    return pytest.mark.skipif(not path.exists(), reason=f"shared fixture {path} not present")


def _random_images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def _read(path: Path, spec: CifarSpec = CIFAR10) -> Any:
    return read_cifar_batch(
        path, num_classes=spec.num_classes, label_key=spec.label_key, num_coarse_classes=spec.num_coarse_classes
    )


def _dump(path: Path, batch: dict[Any, Any], protocol: int = 2) -> Path:
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    return path


def _valid_cifar10_dict(count: int = 3) -> dict[bytes, Any]:
    return {
        b"batch_label": b"training batch 1 of 5",
        b"labels": list(range(count)),
        b"data": np.zeros((count, 3072), np.uint8),
        b"filenames": [b"f%d.png" % i for i in range(count)],
    }


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar10_batch_round_trip(tmp_path: Path, protocol: int) -> None:
    images = _random_images(7)
    labels = [0, 1, 2, 3, 9, 9, 5]
    path = tmp_path / "data_batch_1"
    write_cifar_batch(path, images, labels, spec=CIFAR10, protocol=protocol, filenames=[f"n{i}.png" for i in range(7)])

    batch = _read(path)

    np.testing.assert_array_equal(batch.images, images)
    assert batch.images.dtype == np.uint8 and batch.images.shape == (7, 32, 32, 3)
    assert batch.labels.dtype == np.int64 and batch.labels.tolist() == labels
    assert batch.coarse_labels is None
    assert batch.filenames == [f"n{i}.png" for i in range(7)]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar100_batch_round_trip(tmp_path: Path, protocol: int) -> None:
    images = _random_images(4, seed=1)
    fine, coarse = [0, 42, 99, 17], [0, 8, 19, 3]
    path = tmp_path / "train"
    write_cifar_batch(path, images, fine, spec=CIFAR100, protocol=protocol, coarse_labels=coarse)

    batch = _read(path, CIFAR100)

    np.testing.assert_array_equal(batch.images, images)
    assert batch.labels.tolist() == fine
    assert batch.coarse_labels is not None and batch.coarse_labels.tolist() == coarse
    assert batch.filenames is not None and len(batch.filenames) == 4


def test_written_batch_has_the_real_keys_and_planar_layout(tmp_path: Path) -> None:
    images = np.zeros((1, 32, 32, 3), np.uint8)
    images[0, 0, 1] = (10, 20, 30)  # pixel at row 0, column 1
    path = tmp_path / "test"
    write_cifar_batch(path, images, [5], spec=CIFAR100, coarse_labels=[1], batch_label="testing batch 1 of 1")

    raw = pickle.loads(path.read_bytes(), encoding="bytes")

    assert set(raw) == {b"batch_label", b"fine_labels", b"coarse_labels", b"data", b"filenames"}
    assert raw[b"data"].shape == (1, 3072) and raw[b"data"].dtype == np.uint8
    assert (raw[b"data"][0, 1], raw[b"data"][0, 1025], raw[b"data"][0, 2049]) == (10, 20, 30)
    assert raw[b"batch_label"] == b"testing batch 1 of 1"


def test_chw_to_hwc_puts_red_plane_in_channel_0() -> None:
    row = np.zeros((1, 3072), np.uint8)
    row[0, :1024], row[0, 1024:2048], row[0, 2048:] = 1, 2, 3
    image = chw_rows_to_hwc(row)
    assert image.shape == (1, 32, 32, 3)
    assert image[0, 5, 7].tolist() == [1, 2, 3]


def test_chw_to_hwc_equals_the_transpose_and_fills_a_given_slice() -> None:
    rows = np.random.default_rng(5).integers(0, 256, (37, 3072), dtype=np.uint8)
    expected = rows.reshape(37, 3, 32, 32).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(chw_rows_to_hwc(rows), expected)
    np.testing.assert_array_equal(chw_rows_to_hwc(rows[::2]), expected[::2])  # strided input rows
    target = np.zeros((50, 32, 32, 3), np.uint8)
    assert chw_rows_to_hwc(rows, target[5:42]) is not None
    np.testing.assert_array_equal(target[5:42], expected)
    assert not target[:5].any() and not target[42:].any()
    assert chw_rows_to_hwc(rows[:0]).shape == (0, 32, 32, 3)
    with pytest.raises(ValueError, match="out must be"):
        chw_rows_to_hwc(rows, target[:10])


@pytest.mark.parametrize("spec", [CIFAR10, CIFAR100], ids=["cifar10", "cifar100"])
def test_meta_round_trip(tmp_path: Path, spec: CifarSpec) -> None:
    path = tmp_path / spec.meta_file
    write_meta(path, spec)
    assert read_label_names(path, spec.label_names_key) == list(spec.label_names)
    if spec.coarse_label_names_key:
        assert read_label_names(path, spec.coarse_label_names_key) == list(spec.coarse_label_names or ())


def test_missing_meta_key_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "meta"
    write_meta(path, CIFAR100)
    with pytest.raises(FormatError, match="label_names"):
        read_label_names(path, "label_names")


@pytest.mark.parametrize("spec,n_batches", [(CIFAR10, 5), (CIFAR100, 1)], ids=["cifar10", "cifar100"])
def test_archive_round_trip_through_iter_split(tmp_path: Path, spec: CifarSpec, n_batches: int) -> None:
    archive = tmp_path / spec.archive_name
    source = write_cifar_archive(archive, spec, n_train=23, n_test=6, seed=3)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path / "out", filter="data")
    expected = {spec.top_folder, *(f"{spec.top_folder}/{n}" for n in (*spec.train_batches, *spec.test_batches))}
    assert expected | {f"{spec.top_folder}/{spec.meta_file}"} <= names

    for split in ("train", "test"):
        batches = list(iter_split(tmp_path / "out", spec, split))
        assert [name for name, _ in batches] == list(spec.batches(split))
        images = np.concatenate([b.images for _, b in batches])
        labels = np.concatenate([b.labels for _, b in batches])
        np.testing.assert_array_equal(images, source[f"{split}_images"])
        np.testing.assert_array_equal(labels, source[f"{split}_labels"])
        if spec.num_coarse_classes:
            coarse = np.concatenate([b.coarse_labels for _, b in batches])
            np.testing.assert_array_equal(coarse, source[f"{split}_coarse_labels"])
    meta = tmp_path / "out" / spec.top_folder / spec.meta_file
    assert read_label_names(meta, spec.label_names_key) == source["label_names"]
    assert len(list(iter_split(tmp_path / "out", spec, "train"))) == n_batches


def test_archive_is_byte_reproducible_and_seed_dependent(tmp_path: Path) -> None:
    digests = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        path = tmp_path / f"{name}.tar.gz"
        write_cifar_archive(path, CIFAR10, n_train=10, n_test=2, seed=seed)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1] != digests[2]


def test_fake_images_differ_by_class(tmp_path: Path) -> None:
    source = write_cifar_archive(tmp_path / "c.tar.gz", CIFAR10, n_train=400, n_test=0, seed=0)
    images, labels = source["train_images"].astype(np.float64), source["train_labels"]
    class_means = np.stack([images[labels == c].mean(axis=0) for c in range(10)])
    # mean images of different classes are far apart compared to pixel noise
    gaps = [np.abs(class_means[a] - class_means[b]).mean() for a in range(10) for b in range(a + 1, 10)]
    assert min(gaps) > 5.0


def test_iter_split_reports_missing_batch(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="data_batch_1"):
        list(iter_split(tmp_path, CIFAR10, "train"))
    with pytest.raises(ValueError, match="split"):
        list(iter_split(tmp_path, CIFAR10, "validation"))


# ------------------------------------------------------------------------------------- real fixtures


@_needs(REAL_META_DIR / "batches.meta")
def test_real_batches_meta_gives_the_ten_names() -> None:
    assert read_label_names(REAL_META_DIR / "batches.meta") == list(CIFAR10_LABEL_NAMES)


@_needs(REAL_META_DIR / "batches.meta.BOM_CORRUPTED_negative")
def test_bom_corrupted_meta_raises_format_error() -> None:
    path = REAL_META_DIR / "batches.meta.BOM_CORRUPTED_negative"
    with pytest.raises(FormatError, match="does not look like a pickle") as caught:
        read_label_names(path)
    assert str(path) in str(caught.value)


@_needs(HF_CIFAR10)
@pytest.mark.parametrize("split,names", [("train", CIFAR10.train_batches), ("test", CIFAR10.test_batches)])
def test_hf_cifar10_dummy_list_of_arrays_batches(split: str, names: tuple[str, ...]) -> None:
    batches = list(iter_split(HF_CIFAR10.parent, CIFAR10, split))
    assert [n for n, _ in batches] == list(names)
    for _, batch in batches:
        assert batch.images.shape == (2, 32, 32, 3) and batch.images.dtype == np.uint8
        assert batch.labels.shape == (2,) and ((batch.labels >= 0) & (batch.labels < 10)).all()
        assert batch.filenames is None and batch.coarse_labels is None
        assert batch.images.std() > 10  # real photographs, not a constant image
    first = dict(batches)[names[0]]
    assert first.labels.tolist() == ([6, 9] if split == "train" else [3, 8])


@_needs(HF_CIFAR100)
@pytest.mark.parametrize("split", ["train", "test"])
def test_hf_cifar100_dummy_fine_and_coarse(split: str) -> None:
    ((name, batch),) = list(iter_split(HF_CIFAR100, CIFAR100, split))
    assert name == split
    assert batch.images.shape == (5, 32, 32, 3)
    assert ((batch.labels >= 0) & (batch.labels < 100)).all()
    assert batch.coarse_labels is not None and ((batch.coarse_labels >= 0) & (batch.coarse_labels < 20)).all()
    assert batch.filenames is None


@_needs(HF_CIFAR100 / "train")
def test_hf_cifar100_first_train_record_is_the_real_cattle() -> None:
    batch = _read(HF_CIFAR100 / "train", CIFAR100)
    # the first CIFAR-100 training image is fine label 19 (cattle), coarse label 11
    assert (int(batch.labels[0]), int(batch.coarse_labels[0])) == (19, 11)  # type: ignore[index]


# ------------------------------------------------------------------------------------ schema violations


def _assert_format_error(path: Path, match: str, spec: CifarSpec = CIFAR10) -> FormatError:
    with pytest.raises(FormatError, match=match) as caught:
        _read(path, spec)
    assert str(path) in str(caught.value)
    return caught.value


def test_3071_values_per_image(tmp_path: Path) -> None:
    batch = _valid_cifar10_dict()
    batch[b"data"] = np.zeros((3, 3071), np.uint8)
    _assert_format_error(_dump(tmp_path / "b", batch), r"shape \(3, 3071\)")


def test_3071_values_in_list_form(tmp_path: Path) -> None:
    batch = _valid_cifar10_dict(2)
    batch[b"data"] = [np.zeros(3072, np.uint8), np.zeros(3071, np.uint8)]
    error = _assert_format_error(_dump(tmp_path / "b", batch), r"shape \(3071,\)")
    assert error.index == 1


@pytest.mark.parametrize("dtype", [np.int32, np.float32, np.float64])
def test_wrong_dtype(tmp_path: Path, dtype: type) -> None:
    batch = _valid_cifar10_dict()
    batch[b"data"] = np.zeros((3, 3072), dtype)
    _assert_format_error(_dump(tmp_path / "b", batch), f"dtype {np.dtype(dtype)}, expected uint8")


def test_label_out_of_range(tmp_path: Path) -> None:
    batch = _valid_cifar10_dict()
    batch[b"labels"] = [0, 10, 1]
    error = _assert_format_error(_dump(tmp_path / "b", batch), r"label 10 outside \[0, 10\)")
    assert error.index == 1 and error.member == "labels"


def test_negative_label(tmp_path: Path) -> None:
    batch = _valid_cifar10_dict()
    batch[b"labels"] = [0, 1, -1]
    _assert_format_error(_dump(tmp_path / "b", batch), "label -1 outside")


def test_coarse_label_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "train"
    write_cifar_batch(path, _random_images(2), [3, 4], spec=CIFAR100, coarse_labels=[0, 20])
    error = _assert_format_error(path, r"'coarse_labels': label 20 outside \[0, 20\)", CIFAR100)
    assert error.index == 1


def test_missing_coarse_labels_for_cifar100(tmp_path: Path) -> None:
    batch = {b"fine_labels": [1], b"data": np.zeros((1, 3072), np.uint8)}
    _assert_format_error(_dump(tmp_path / "train", batch), "missing key 'coarse_labels'", CIFAR100)


def test_label_count_mismatch(tmp_path: Path) -> None:
    batch = _valid_cifar10_dict()
    batch[b"labels"] = [0, 1]
    _assert_format_error(_dump(tmp_path / "b", batch), "2 labels for 3 images")


def test_non_int_label(tmp_path: Path) -> None:
    batch = _valid_cifar10_dict()
    batch[b"labels"] = [0, 1.0, 2]
    _assert_format_error(_dump(tmp_path / "b", batch), "expected int, found float")


def test_missing_data_key(tmp_path: Path) -> None:
    batch = _valid_cifar10_dict()
    del batch[b"data"]
    _assert_format_error(_dump(tmp_path / "b", batch), "missing key 'data'")


def test_filenames_count_mismatch(tmp_path: Path) -> None:
    batch = _valid_cifar10_dict()
    batch[b"filenames"] = [b"one.png"]
    _assert_format_error(_dump(tmp_path / "b", batch), "'filenames'")


def test_filename_not_utf8_names_its_index(tmp_path: Path) -> None:
    batch = _valid_cifar10_dict()
    batch[b"filenames"] = [b"a.png", b"b\xff.png", b"c.png"]
    _assert_format_error(_dump(tmp_path / "b", batch), "not UTF-8")
    with pytest.raises(FormatError, match="member 'filenames', record 1: key 'filenames': not UTF-8"):
        read_cifar_batch(tmp_path / "b", num_classes=10)


def test_not_a_dict(tmp_path: Path) -> None:
    _assert_format_error(_dump(tmp_path / "b", [1, 2, 3]), "expected a pickled dict")


@pytest.mark.parametrize("protocol", [2, 5])
def test_truncated_batch_file(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "data_batch_1"
    write_cifar_batch(path, _random_images(5), [1, 2, 3, 4, 5], spec=CIFAR10, protocol=protocol)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    _assert_format_error(path, "truncated or malformed")
