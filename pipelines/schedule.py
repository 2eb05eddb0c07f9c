"""Scheduled retraining under plain Luigi: ``DailyRetrain`` for one day, and Luigi's own ``RangeDaily`` over it.

    luigi --module pipelines.schedule RangeDaily --of DailyRetrain --start 2026-11-01 \\
        --DailyRetrain-dataset images --DailyRetrain-source /data/photos --DailyRetrain-publish

Each day's ``DailyRetrain`` runs the pipeline (every stage cached as always: an unchanged source costs stat
calls) and records what the day ended with in ``<root>/daily/<name>/<date>.json`` (the freeze artifact, its
metric, whether it was published), which is the day's completion target for ``RangeDaily``.
"""

from __future__ import annotations

import json
from pathlib import Path

import luigi
from luigi.task import flatten
from luigi.tools.range import RangeDaily

from pipelines.stages import pipeline_task, register_wrappers
from tasks.store.layout import DAILY_DIR
from tasks.store.task import ArtifactStore, ArtifactTask

register_wrappers()
__all__ = ["DailyRetrain", "RangeDaily"]


class DailyRetrain(luigi.Task):
    date = luigi.DateParameter(description="the day this run stands for")
    dataset = luigi.Parameter(description="the pipeline: a registered dataset name")
    source = luigi.Parameter(default="", description="URL or path of the raw data ('' = the dataset's own)")
    checksum = luigi.Parameter(default="")
    until = luigi.Parameter(default="")
    backbone = luigi.Parameter(default="")
    publish = luigi.BoolParameter(default=False)
    name = luigi.Parameter(default="", description="published name ('' = the pipeline's)")

    def requires(self) -> luigi.Task:
        wrapper = pipeline_task(self.dataset)
        return wrapper(source=self.source, checksum=self.checksum, until=self.until, backbone=self.backbone,
                       publish=self.publish, name=self.name)

    def output(self) -> luigi.LocalTarget:
        name = self.name or self.dataset
        return luigi.LocalTarget(str(Path(ArtifactStore().root) / DAILY_DIR / name / f"{self.date:%Y-%m-%d}.json"))

    def run(self) -> None:
        final = [task for task in flatten(self.requires().requires()) if isinstance(task, ArtifactTask)]
        record: dict[str, object] = {"date": f"{self.date:%Y-%m-%d}", "pipeline": self.dataset,
                                     "artifacts": {task.stage: str(task.artifact_dir.resolve()) for task in final}}
        for task in final:
            manifest = task.output().manifest()
            record.update({key: manifest[key] for key in ("metrics", "value", "published", "published_version")
                           if key in manifest})
        with self.output().open("w") as handle:
            json.dump(record, handle, indent=2, sort_keys=True)
