"""The stage names of every pipeline and the task that ends a run at each of them."""

from __future__ import annotations

import luigi

from tasks.base import ArtifactTask
from tasks.datasets import decode_task

STAGES = ("download", "decode", "imagedirs", "tfrecords", "train", "evaluate", "freeze")


def stage_task(dataset: str, stage: str, source: str = "", checksum: str = "") -> ArtifactTask:
    """The task instance that produces ``stage`` for this dataset (tasks import lazily: no TensorFlow)."""
    chain = {"dataset": dataset, "source": source, "checksum": checksum}
    if stage == "download":
        return decode_task(**chain).requires()
    if stage == "decode":
        return decode_task(**chain)
    if stage == "imagedirs":
        from tasks.imagedirs import ImageDirs

        return ImageDirs(**chain)
    if stage == "tfrecords":
        from tasks.tfrecords import TFRecords

        return TFRecords(**chain)
    if stage == "train":
        from tasks.train import Train

        return Train(**chain)
    if stage == "evaluate":
        from tasks.evaluate import Evaluate

        return Evaluate(**chain)
    if stage == "freeze":
        from tasks.freeze import Freeze

        return Freeze(**chain)
    raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")


class Pipeline(luigi.WrapperTask):
    """A whole pipeline as one Luigi task: ``luigi --module pipelines.cifar10 Cifar10 --local-scheduler``."""

    dataset_name = ""
    source = luigi.Parameter(default="", description="URL or path of the raw data ('' = the default)")
    checksum = luigi.Parameter(default="", description="sha256:<hex> or md5:<hex> of the source")
    until = luigi.ChoiceParameter(choices=STAGES, default="freeze", description="last stage to run")

    def requires(self) -> ArtifactTask:
        return stage_task(self.dataset_name, self.until, self.source, self.checksum)
