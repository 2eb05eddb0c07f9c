"""Image-directories stage: ``<split>/<class>/<n>.png`` with a validation split carved by stable hash."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import luigi

from tasks.data.imagedirs import assign_splits, write_image_dirs
from tasks.formats.dataset_info import DatasetInfo, SplitInfo
from tasks.formats.examples import load_class_names, load_split
from tasks.formats.files import LABELS_FILE
from tasks.store.task import ArtifactTask


class ImageDirs(ArtifactTask):
    stage = "imagedirs"
    version = 2
    reads = ("decoded",)
    provides = "image_dirs"

    validation_fraction = luigi.FloatParameter(default=0.1)
    workers = luigi.IntParameter(default=2, significant=False)

    def build(self, out_dir: Path) -> dict[str, Any]:
        decoded = self.input_dir("decoded")
        info = DatasetInfo.load(decoded)
        class_names = load_class_names(decoded)
        keys = {split: load_split(decoded, split)["key"] for split in info.splits}
        assignment = assign_splits(keys, self.validation_fraction)
        counts = write_image_dirs(
            decoded, out_dir, assignment, class_names,
            multi_head=info.num_heads > 1, folder_style=info.folder_style, workers=self.workers,
            progress=lambda done, total: self.report_progress(done, total, f"PNG {done}/{total}"),
        )
        shutil.copy(decoded / LABELS_FILE, out_dir / LABELS_FILE)
        splits = {split: SplitInfo(counts[split], source=source) for split, (source, _) in assignment.items()}
        info.with_splits(splits).save(out_dir)
        return {"records": counts}
