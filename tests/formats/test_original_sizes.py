"""The optional ``original_size`` column of the decoded-examples layout: written only on request, read back row
for row, refused when misused; the decoders of one-size sources (CIFAR, MNIST, captcha) do not write it."""

from __future__ import annotations

import json
from pathlib import Path

import luigi
import numpy as np
import pytest

from pipelines.registry import get_dataset
from pipelines.stages import decode_task
from tasks.datasets.captcha.files import LABELS_CSV_FILE
from tasks.datasets.captcha.generate import generate_captchas
from tasks.datasets.captcha.labels_csv import write_labels_csv
from tasks.datasets.cifar.codec import CIFAR10
from tasks.formats.arrays import HEADER_NAME, column_file
from tasks.formats.errors import FormatError
from tasks.formats.examples import (
    ORIGINAL_SIZE_COLUMN,
    encode_keys,
    load_original_sizes,
    load_split,
    open_split_writer,
)
from tests.fakes.cifar import write_cifar_archive
from tests.fakes.idx import write_fake_mnist

BASE_COLUMNS = {"image", "label", "key", "sha256"}


def batch(count: int, start: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(start)
    return {"image": rng.integers(0, 256, (count, 4, 4, 1), dtype=np.uint8),
            "label": np.arange(start, start + count, dtype=np.int32),
            "key": encode_keys([f"k{i}" for i in range(start, start + count)], width=8)}


def header_columns(split_dir: Path) -> dict[str, dict]:
    return json.loads((split_dir / HEADER_NAME).read_text())["columns"]


def test_a_writer_without_the_flag_writes_the_four_columns_only(tmp_path: Path) -> None:
    with open_split_writer(tmp_path, "train", (4, 4, 1), num_heads=1, key_bytes=8) as writer:
        writer.append(**batch(3))
    assert set(header_columns(tmp_path / "train")) == BASE_COLUMNS
    assert not column_file(tmp_path / "train", ORIGINAL_SIZE_COLUMN).exists()
    assert set(load_split(tmp_path, "train")) == BASE_COLUMNS
    assert load_original_sizes(tmp_path, "train") is None


def test_recorded_sizes_come_back_row_for_row_across_appends(tmp_path: Path) -> None:
    first, second = [(30, 40), (64, 64)], [(90, 17), (1, 5000), (480, 640)]
    with open_split_writer(tmp_path, "test", (4, 4, 1), num_heads=1, key_bytes=8, record_original_size=True) as writer:
        writer.append(**batch(2), original_size=first)
        writer.append(**batch(3, start=2), original_size=np.asarray(second, dtype=np.int64))
    assert header_columns(tmp_path / "test")[ORIGINAL_SIZE_COLUMN] == {"dtype": "<i4", "shape": [2]}
    sizes = load_original_sizes(tmp_path, "test")
    assert sizes is not None and sizes.dtype == np.int32 and sizes.shape == (5, 2)
    assert sizes.tolist() == [list(s) for s in first + second]
    columns = load_split(tmp_path, "test")
    assert set(columns) == BASE_COLUMNS | {ORIGINAL_SIZE_COLUMN}
    assert columns["label"].tolist() == [0, 1, 2, 3, 4]  # the other columns are unchanged by the extra one


def test_an_empty_split_records_no_sizes_but_has_the_column(tmp_path: Path) -> None:
    with open_split_writer(tmp_path, "test", (4, 4, 1), num_heads=1, record_original_size=True):
        pass
    sizes = load_original_sizes(tmp_path, "test")
    assert sizes is not None and sizes.shape == (0, 2)


@pytest.mark.parametrize(
    "record,sizes,match",
    [
        (True, None, "needs it"),
        (False, [(3, 4), (5, 6)], "without record_original_size"),
        (True, [3, 4], r"\(N, 2\) rows"),
        (True, [(3, 4, 1), (5, 6, 1)], r"\(N, 2\) rows"),
        (True, [(3, 4), (0, 6)], "outside"),
        (True, [(3, 4), (-2, 6)], "outside"),
        (True, [(3, 4)], "differ in length"),  # one size for two images
    ],
)
def test_misused_sizes_are_refused(tmp_path: Path, record: bool, sizes: list | None, match: str) -> None:
    writer = open_split_writer(tmp_path, "train", (4, 4, 1), num_heads=1, key_bytes=8, record_original_size=record)
    with pytest.raises(ValueError, match=match):
        writer.append(**batch(2), original_size=sizes)
    writer.abort()


def test_a_size_column_of_the_wrong_type_is_a_format_error(tmp_path: Path) -> None:
    split_dir = tmp_path / "train"
    with open_split_writer(tmp_path, "train", (4, 4, 1), num_heads=1, key_bytes=8, record_original_size=True) as w:
        w.append(**batch(2), original_size=[(3, 4), (5, 6)])
    header = json.loads((split_dir / HEADER_NAME).read_text())
    header["columns"][ORIGINAL_SIZE_COLUMN] = {"dtype": "<i2", "shape": [4]}  # the same 16 bytes, read otherwise
    (split_dir / HEADER_NAME).write_text(json.dumps(header))
    with pytest.raises(FormatError, match=f"{ORIGINAL_SIZE_COLUMN}.bin: column 'original_size' is int16"):
        load_original_sizes(tmp_path, "train")


# ---- decoders of sources that are all one size leave the column out ----------------------------------------
def mnist_source(folder: Path) -> str:
    write_fake_mnist(folder, n_train=40, n_test=10, seed=1)
    return str(folder)


def cifar_source(folder: Path) -> str:
    archive = folder / CIFAR10.archive_name
    archive.parent.mkdir(parents=True)
    write_cifar_archive(archive, CIFAR10, 30, 10, seed=7)
    return str(archive)


def captcha_source(folder: Path) -> str:
    rows = generate_captchas(folder, 12, seed=3, workers=1)
    write_labels_csv(folder / LABELS_CSV_FILE, rows)
    return str(folder)


@pytest.mark.parametrize("name,write_source", [("mnist", mnist_source), ("cifar10", cifar_source),
                                               ("captcha", captcha_source)])
def test_one_size_decoders_record_no_original_size(name: str, write_source, tmp_path: Path,  # noqa: ANN001
                                                   luigi_config: object) -> None:
    task = decode_task(get_dataset(name), source=write_source(tmp_path / "src"))
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    decoded = task.artifact_dir
    for split in ("train", "test"):
        assert set(header_columns(decoded / split)) == BASE_COLUMNS
        assert load_original_sizes(decoded, split) is None
