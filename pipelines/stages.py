"""The stage chain of a pipeline: a declared sequence of stages, and the Luigi wrapper task that runs one.

Every stage after decode is a task class that declares the kinds of artifact it ``reads`` and the kind it
``provides``; the chain hands each stage the latest earlier stage providing each kind it reads. So a stage
never names another stage's class, and an optional stage (switched on by a pipeline parameter) slots in
without edits to the others: a stage that provides ``examples`` between ``tfrecords`` and ``train`` feeds
train, evaluate and freeze.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import luigi

from pipelines.registry import DATASETS, Dataset, get_dataset
from tasks.data.imagedirs_task import ImageDirs
from tasks.data.tfrecords_task import TFRecords
from tasks.datacheck.task import DataCheck
from tasks.evaluation.task import Evaluate
from tasks.export.freeze_task import Freeze
from tasks.export.publish_task import Publish
from tasks.features.task import Bottleneck
from tasks.store.task import ArtifactTask
from tasks.training.budget import BALANCE_RULE, BUDGET_RULE
from tasks.training.task import Train

SOURCE_STAGE = "download"
DECODE_STAGE = "decode"
# What the first stage is called where the data is made rather than downloaded (``tfpipe status`` shows the
# generator's stage): ``--until`` takes either name.
SOURCE_STAGE_ALIASES = tuple(sorted({d.generator.stage for d in DATASETS.values() if d.generator is not None}
                                    - {SOURCE_STAGE}))


@dataclass(frozen=True)
class Stage:
    """One stage after decode. ``switch`` names the Pipeline parameter that turns an optional stage on;
    its value is passed to the stage's task under the same name."""

    task: type[ArtifactTask]
    switch: str = ""
    options: tuple[str, ...] = ()  # further Pipeline parameters handed to the task when the stage is on

    @property
    def name(self) -> str:
        return self.task.stage


STAGES: tuple[Stage, ...] = (Stage(ImageDirs), Stage(TFRecords), Stage(DataCheck), Stage(Bottleneck, switch="backbone"),
                             Stage(Train), Stage(Evaluate), Stage(Freeze),
                             Stage(Publish, switch="publish", options=("name",)))


def stage_names(stages: Sequence[Stage] = STAGES) -> tuple[str, ...]:
    """The stages of a chain, in order (what ``tfpipe status`` lists)."""
    return (SOURCE_STAGE, DECODE_STAGE, *(stage.name for stage in stages))


def until_choices(stages: Sequence[Stage] = STAGES) -> tuple[str, ...]:
    """What ``--until`` accepts: every stage, the first one under its generator's name too."""
    return (*stage_names(stages), *SOURCE_STAGE_ALIASES)


def canonical_stage(name: str) -> str:
    """``name`` of ``until_choices`` as ``stage_names`` calls it."""
    return SOURCE_STAGE if name in SOURCE_STAGE_ALIASES else name


def train_defaults(dataset: Dataset) -> dict[str, Any]:
    """What Train receives (and keys on): the dataset's model, augmentation and training defaults, and the names
    of the rules that turn them into a budget and class weights (``tasks/training/budget.py``)."""
    return {**dataset.train_defaults(), "budget_rule": BUDGET_RULE, "balance_rule": BALANCE_RULE}


def dataset_params(task: type[luigi.Task], dataset: Dataset) -> dict[str, Any]:
    """The registry's values for the parameters a task class declares (``dataset``, ``dataset_defaults``)."""
    params = dict(task.get_params())
    values: dict[str, Any] = {}
    if "dataset" in params:
        values["dataset"] = dataset.name
    if "dataset_defaults" in params:
        values["dataset_defaults"] = train_defaults(dataset)
    if "dataset_augmentation" in params:
        values["dataset_augmentation"] = dataset.augmentation_defaults()
    if "dataset_metric" in params:
        values["dataset_metric"] = dataset.metric
    return values


def decode_task(dataset: Dataset, *, source: str = "", checksum: str = "", **params: Any) -> ArtifactTask:
    """The decode stage of ``dataset``, reading its sources (the user's ``source``, or the official files)."""
    sources = dataset.source_tasks(source, checksum)
    return dataset.decode(upstream=sources, **dataset.decode_params, **dataset_params(dataset.decode, dataset),
                          **params)


def build_chain(dataset: Dataset, *, source: str = "", checksum: str = "", stages: Sequence[Stage] = STAGES,
                switches: dict[str, Any] | None = None) -> dict[str, list[luigi.Task]]:
    """Every stage's task instances, in order: ``{"download": [...], "decode": [task], "imagedirs": [task], ...}``.

    Optional stages whose switch is off are left out.
    """
    switches = switches or {}
    decode = decode_task(dataset, source=source, checksum=checksum)
    chain: dict[str, list[luigi.Task]] = {SOURCE_STAGE: list(decode.requires().values()), DECODE_STAGE: [decode]}
    provided: dict[str, luigi.Task] = {decode.provides: decode}
    for stage in stages:
        options: dict[str, Any] = {}
        if stage.switch:
            if not switches.get(stage.switch):
                continue
            declared = dict(stage.task.get_params())
            options = {name: switches[name] for name in (stage.switch, *stage.options)
                       if name in declared and name in switches}
        missing = [kind for kind in stage.task.reads if kind not in provided]
        if missing:
            raise ValueError(f"stage {stage.name} reads {', '.join(missing)}, which no stage before it provides")
        upstream = {kind: provided[kind] for kind in (*stage.task.reads, *stage.task.optional_reads)
                    if kind in provided}
        task = stage.task(upstream=upstream, **options, **dataset_params(stage.task, dataset))
        chain[stage.name] = [task]
        provided[stage.task.provides] = task
    return chain


def params_set_by_pipeline(stages: Sequence[Stage] = STAGES) -> set[tuple[str | None, str]]:
    """``(family or None for any, parameter)`` pairs the chain passes explicitly, so a configured value would be
    ignored: ``--set`` refuses them instead."""
    names: set[tuple[str | None, str]] = {(None, "upstream"), (None, "dataset"), (None, "dataset_defaults"),
                                          (None, "dataset_augmentation"), (None, "dataset_metric"),
                                          ("Download", "source"), ("Download", "checksum")}
    for dataset in DATASETS.values():
        names.update((dataset.decode.get_task_family(), param) for param in dataset.decode_params)
    names.update((stage.task.get_task_family(), name) for stage in stages if stage.switch
                 for name in (stage.switch, *stage.options))
    return names


def chain_until(chain: dict[str, list[luigi.Task]], until: str) -> list[luigi.Task]:
    """The tasks that end a run at ``until`` (a stage switched off is not a place to stop)."""
    if until not in chain:
        raise ValueError(f"unknown or switched-off stage {until!r}; stages: {', '.join(chain)}")
    return chain[until]


class Pipeline(luigi.WrapperTask):
    """A whole pipeline as one Luigi task: ``luigi --module pipelines.cifar10 Cifar10 --local-scheduler``.

    Subclasses (made by ``pipeline_task``) set ``dataset_name``; ``stages`` may be extended with optional
    stages whose switch is a parameter of the subclass.
    """

    dataset_name: ClassVar[str] = ""
    stages: ClassVar[tuple[Stage, ...]] = STAGES

    source = luigi.Parameter(default="", description="URL or path of the raw data ('' = the dataset's own)")
    checksum = luigi.Parameter(default="", description="sha256:<hex> or md5:<hex> of the source; role=digest,... "
                                                       "for datasets of several files")
    until = luigi.Parameter(default="", description="last stage to run ('' = the last one switched on)")
    backbone = luigi.Parameter(default="", description="a frozen backbone for bottleneck features and transfer "
                                                       "learning ('' = train the dataset's own model)")
    publish = luigi.BoolParameter(default=False, description="promote the frozen model if it passes the gate")
    name = luigi.Parameter(default="", description="published name ('' = the pipeline's)")
    run_digest = luigi.Parameter(default="", description="a digest of the tasks this run builds; `tfpipe run` sets it "
                                                         "so that runs differing only in --set are different tasks to "
                                                         "a central luigid (it does not change what is built)")

    def switches(self) -> dict[str, Any]:
        names = {name for stage in self.stages if stage.switch for name in (stage.switch, *stage.options)}
        return {name: getattr(self, name) for name in names}

    def chain(self) -> dict[str, list[luigi.Task]]:
        return build_chain(get_dataset(self.dataset_name), source=self.source, checksum=self.checksum,
                           stages=self.stages, switches=self.switches())

    def requires(self) -> list[luigi.Task]:
        if self.until and self.until not in until_choices(self.stages):
            raise ValueError(f"unknown stage {self.until!r}; stages: {', '.join(until_choices(self.stages))}")
        chain = self.chain()
        return chain_until(chain, canonical_stage(self.until) if self.until else list(chain)[-1])


def class_name(dataset: str) -> str:
    """The wrapper task's Luigi family: ``fashion_mnist`` -> ``FashionMnist``."""
    return "".join(part.capitalize() for part in dataset.replace("-", "_").split("_"))


_WRAPPERS: dict[str, type[Pipeline]] = {}


def pipeline_task(dataset: str, base: type[Pipeline] = Pipeline) -> type[Pipeline]:
    """The wrapper task class of a registered dataset (made once, then reused)."""
    get_dataset(dataset)
    if dataset not in _WRAPPERS or not issubclass(_WRAPPERS[dataset], base):
        doc = f"The {dataset} pipeline: `tfpipe run {dataset}` or `luigi --module pipelines.{dataset} " \
              f"{class_name(dataset)} --local-scheduler`."
        _WRAPPERS[dataset] = type(class_name(dataset), (base,), {"dataset_name": dataset, "__doc__": doc,
                                                                 "__module__": f"pipelines.{dataset}"})
    return _WRAPPERS[dataset]


def register_wrappers() -> None:
    """A wrapper task for every registered dataset, so each is known to Luigi's command line."""
    for name in DATASETS:
        pipeline_task(name)
