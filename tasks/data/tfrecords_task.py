"""TFRecord stage: deterministic, sharded, TFDS-named shards of every split, plus labels.txt, tfpipe's description
of the examples (tasks/data/shards.py ``save_dataset_info``) and TFDS's (tasks/data/tfds_metadata.py), so
``tfds.builder_from_directory`` loads the folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import luigi

from tasks.data.imagedirs import load_assignment
from tasks.data.shards import ShardSpec, save_dataset_info, write_split_shards
from tasks.data.tfds_metadata import write_tfds_metadata
from tasks.formats.dataset_info import DatasetInfo, SplitInfo
from tasks.formats.examples import load_split
from tasks.formats.files import LABELS_FILE
from tasks.formats.tfrecord import read_labels_txt
from tasks.store.task import ArtifactTask


class TFRecords(ArtifactTask):
    stage = "tfrecords"
    version = 4
    reads = ("decoded", "image_dirs")
    provides = "examples"

    dataset = luigi.Parameter(description="the dataset's name, the prefix of its shard files")
    image_format = luigi.ChoiceParameter(choices=["raw", "png"], default="raw")
    num_shards = luigi.IntParameter(default=0, description="0: from target_shard_mb")
    target_shard_mb = luigi.FloatParameter(default=64.0)
    shuffle_seed = luigi.IntParameter(default=0)
    workers = luigi.IntParameter(default=2, significant=False, description="threads writing shards")

    def build(self, out_dir: Path) -> dict[str, Any]:
        image_dirs, decoded = self.input_dir("image_dirs"), self.input_dir("decoded")
        info = DatasetInfo.load(image_dirs)
        spec = ShardSpec(self.dataset, self.image_format, self.num_shards, self.target_shard_mb,
                         self.shuffle_seed)
        splits = {}
        for split, (source_split, rows) in load_assignment(image_dirs).items():
            arrays = load_split(decoded, source_split)

            def progress(done: int, total: int, s: str = split) -> None:
                self.report_progress(done, total, f"{s} {done}/{total}")

            files = write_split_shards(
                out_dir, split, arrays["image"], arrays["label"], arrays["key"], arrays["sha256"], rows, spec,
                progress=progress, workers=self.workers,
            )
            splits[split] = SplitInfo(int(len(rows)), tuple(files))
        shutil.copy(image_dirs / LABELS_FILE, out_dir / LABELS_FILE)
        examples = info.with_splits(splits, dataset=self.dataset, image_format=self.image_format)
        save_dataset_info(out_dir, examples)
        write_tfds_metadata(out_dir, examples, read_labels_txt(out_dir / LABELS_FILE))
        return {"records": {split: s.count for split, s in splits.items()}}
