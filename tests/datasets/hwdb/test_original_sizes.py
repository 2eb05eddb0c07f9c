"""HWDB records each sample's bitmap (height, width), row for row with its decoded image, across chunks and
with the test samples of unknown characters left out."""

from __future__ import annotations

from pathlib import Path

import luigi
import numpy as np

from pipelines.registry import get_dataset
from pipelines.stages import decode_task
from tasks.datasets.hwdb.gnt import iter_gnt
from tasks.formats.examples import load_class_names, load_original_sizes, load_split
from tests.fakes.hwdb import DEFAULT_CHARS, write_fake_hwdb

TEST_ONLY = "鳌"  # a GB2312 character the training files never show: its test samples are skipped


def test_decode_hwdb_records_every_sample_size_in_order(tmp_path: Path, luigi_config: object) -> None:
    fake = write_fake_hwdb(tmp_path / "src", chars=DEFAULT_CHARS[:5], train_files=2, test_files=1,
                           per_char_per_file=2, test_only_chars=TEST_ONLY, seed=5)
    task = decode_task(get_dataset("hwdb"), source=str(fake.root), image_size=12, chunk_rows=3)
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    decoded = task.artifact_dir
    known = set(load_class_names(decoded))
    assert TEST_ONLY not in known
    for split, files in (("train", fake.train_files), ("test", fake.test_files)):
        expected = [sample.bitmap.shape for path in files for sample in iter_gnt(path) if sample.tag in known]
        sizes = load_original_sizes(decoded, split)
        assert sizes is not None and sizes.dtype == np.int32
        assert [tuple(row) for row in sizes.tolist()] == expected
        assert len(load_split(decoded, split)["image"]) == len(expected)
        assert len(set(expected)) > len(expected) // 2  # the fake's samples really differ in size
