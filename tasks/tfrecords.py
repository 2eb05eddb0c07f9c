"""TFRecord stage: deterministic, sharded, TFDS-named shards of every split, plus labels.txt."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import luigi

from tasks.base import ArtifactTask
from tasks.datasets import DatasetChain
from tasks.imagedirs import ImageDirs
from tasks.ops.examples import DatasetInfo, load_split
from tasks.ops.imagedirs import load_assignment
from tasks.ops.shards import ShardSpec, save_dataset_info, write_split_shards


class TFRecords(DatasetChain, ArtifactTask):
    stage = "tfrecords"
    version = 2

    image_format = luigi.ChoiceParameter(choices=["raw", "png"], default="raw")
    num_shards = luigi.IntParameter(default=0, description="0: from target_shard_mb")
    target_shard_mb = luigi.FloatParameter(default=64.0)
    shuffle_seed = luigi.IntParameter(default=0)
    workers = luigi.IntParameter(default=2, significant=False, description="threads writing shards")

    def requires(self) -> ArtifactTask:
        return ImageDirs(**self.chain())

    def build(self, out_dir: Path) -> dict[str, Any]:
        image_dirs = self.input_dir()
        decoded = self.requires().requires().artifact_dir
        info = DatasetInfo.load(image_dirs)
        spec = ShardSpec(self.dataset, self.image_format, self.num_shards, self.target_shard_mb,
                         self.shuffle_seed)
        splits = {}
        for split, (source_split, rows) in load_assignment(image_dirs).items():
            arrays = load_split(decoded, source_split)
            files = write_split_shards(
                out_dir, split, arrays["image"], arrays["label"], arrays["key"], rows, spec,
                progress=lambda done, total, s=split: self.report_progress(done, total, f"{s} {done}/{total}"),
                workers=self.workers,
            )
            splits[split] = {"count": int(len(rows)), "files": files}
        shutil.copy(image_dirs / "labels.txt", out_dir / "labels.txt")
        save_dataset_info(out_dir, {
            "dataset": info.dataset, "image_shape": list(info.image_shape),
            "num_classes": info.num_classes, "num_heads": info.num_heads,
            "image_format": self.image_format, "splits": splits,
        })
        return {"records": {split: s["count"] for split, s in splits.items()}}
