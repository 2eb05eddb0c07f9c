"""Train stage: Keras fit (default, mirrored) or tfpipe's custom loop on a cluster (multi_worker,
parameter_server) over the TFRecord shards, or a head on a bottleneck stage's features; resumes after a kill;
fails on a NaN loss.

The task declares the parameters, maps them to a ``TrainingPlan`` (tasks/training/plan.py) and hands it to
``train`` (tasks/training/run.py), which does the rest without Luigi. TensorFlow is imported inside ``build``
only: checking completion or printing status stays fast.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import luigi

from tasks.store.task import ArtifactTask, opened_root
from tasks.training.budget import CLASS_WEIGHTING
from tasks.training.files import MODEL_FILE as MODEL_FILE  # where the trained model is (read by later stages)
from tasks.training.files import WORK_DIR
from tasks.training.plan import TrainingPlan
from tasks.training.strategies import check_strategy


class StrategyParameter(luigi.Parameter):
    """default, mirrored, multi_worker or parameter_server (tasks/training/strategies.py)."""

    def normalize(self, x: str) -> str:
        return check_strategy(x)


class Train(ArtifactTask):
    stage = "train"
    version = 4
    reads = ("examples",)
    optional_reads = ("features",)  # with a bottleneck stage: train a head on its cached features
    provides = "model"
    # One accelerator token ([resources] gpu in luigi.cfg, or luigid's own config): Luigi workers on one
    # scheduler run at most that many Train and Bottleneck tasks at once.
    resources = {"gpu": 1}

    dataset_defaults: luigi.DictParameter[dict[str, Any]] = luigi.DictParameter(
        default={}, description="the dataset's registry defaults: model and augmentation (set by the pipeline)")
    model = luigi.Parameter(default="", description="models/ builder name ('' = the dataset's default)")
    head_hidden_units = luigi.IntParameter(default=0, description="on bottleneck features: units of one hidden "
                                                                   "layer before the softmax (0 = none)")
    head_dropout = luigi.FloatParameter(default=0.0, description="on bottleneck features: dropout before the softmax")
    fine_tune_layers = luigi.IntParameter(default=0, description="on bottleneck features: after the head, unfreeze "
                                                                 "the backbone's top N layers and train end to end")
    fine_tune_epochs = luigi.IntParameter(default=3)
    fine_tune_learning_rate = luigi.FloatParameter(default=1e-5, description="lower than the head's: the "
                                                                             "pretrained weights move little")
    model_options: luigi.DictParameter[dict[str, Any]] = luigi.DictParameter(
        default={}, description="extra keyword arguments for the builder")
    epochs = luigi.IntParameter(default=0, description="passes over the training split (0: the dataset's budget "
                                                        "rule, tasks/training/budget.py)")
    batch_size = luigi.IntParameter(default=0, description="the global batch (0: the dataset's)")
    learning_rate = luigi.FloatParameter(default=0.0, description="the peak learning rate, reached after the "
                                                                   "warm-up (0: the dataset's)")
    class_weighting = luigi.ChoiceParameter(choices=CLASS_WEIGHTING, default="auto",
                                            description="weigh the loss by inverse class frequency: auto = only "
                                                        "when the largest class is >= 3x the smallest")
    optimizer = luigi.ChoiceParameter(choices=["adam", "sgd"], default="adam")
    momentum = luigi.FloatParameter(default=0.0, description="sgd: momentum (0 = plain gradient descent)")
    lr_schedule = luigi.ChoiceParameter(choices=["cosine", "constant"], default="cosine")
    jit_compile = luigi.BoolParameter(default=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                      description="XLA; measure first (docs/PERFORMANCE.md)")
    seed = luigi.IntParameter(default=0)
    patience = luigi.IntParameter(default=0, description="early stopping: epochs without a better val_loss "
                                                          "(0: the dataset's)")
    shuffle_buffer = luigi.IntParameter(default=10_000)
    augment = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                  description="the dataset's default augmentation (training only)")
    mixed_precision = luigi.BoolParameter(default=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    strategy = StrategyParameter(default="default", description="default (one device), mirrored (every local GPU, "
                                                                 "or Train.cpu_devices logical CPUs), multi_worker "
                                                                 "or parameter_server (a TF_CONFIG cluster; "
                                                                 "docs/DISTRIBUTED.md)")
    cpu_devices = luigi.IntParameter(default=0, description="mirrored: split the CPU into N logical devices")
    max_steps = luigi.IntParameter(default=0, description="stop after N optimizer steps (0: epochs x steps/epoch)")
    checkpoint_every_steps = luigi.IntParameter(default=0, description="resumable checkpoint every N steps (0: "
                                                                         "every epoch)")
    cluster_timeout = luigi.FloatParameter(default=600.0, significant=False,
                                           description="multi_worker/parameter_server: seconds the chief waits for "
                                                       "every cluster member to join")
    input_autotune = luigi.BoolParameter(default=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                         significant=False,
                                         description="tf.data runtime tuning (off: parallelism = cores)")

    def work_dir(self) -> Path:
        """Checkpoints and logs that must survive a killed process: outside the temporary build dir."""
        return self.artifact_root / self.stage / WORK_DIR / f"{self.task_family}-{self.artifact_key}"

    def rendezvous(self) -> Path:
        """Where the members of a cluster strategy meet (tasks/training/cluster.py): a folder every member's host
        shares, so not on a bucket root, whose hosts each have their own mirror."""
        from tasks.training.cluster import rendezvous_dir
        from tasks.training.strategies import is_cluster_strategy

        root = opened_root()
        if root.bucket is not None and is_cluster_strategy(self.strategy):
            raise ValueError(f"Train.strategy={self.strategy} meets its cluster in a shared folder of the artifact "
                             f"root; {root.location.url} is a bucket: use a shared local root (NFS) for cluster "
                             "training, or strategy default/mirrored")
        return rendezvous_dir(self.artifact_root, f"{self.task_family}-{self.artifact_key}")

    def training_plan(self) -> TrainingPlan:
        """This task's parameters (each the plan's field of the same name; mappings as plain dicts) and its
        inputs."""
        from tasks.features.task import Bottleneck

        features = self.requires().get("features")
        if features is not None and not isinstance(features, Bottleneck):
            raise TypeError(f"{self.task_family} trains a head on a Bottleneck's features, not on "
                            f"{features.task_family}'s")
        params = {f.name: getattr(self, f.name) for f in fields(TrainingPlan) if f.name in self.param_kwargs}
        params.update(dataset_defaults=dict(self.dataset_defaults), model_options=dict(self.model_options))
        return TrainingPlan(**params, examples_dir=self.input_dir("examples"),
                            features_dir=self.input_dir("features") if features else None,
                            backbone=features.backbone if features else "",
                            backbone_spec=features.spec() if features else None)

    def build(self, out_dir: Path) -> dict[str, Any]:
        from tasks.training.run import train

        return train(self.training_plan(), out_dir, self.work_dir(), rendezvous=self.rendezvous(),
                     progress=self.report_progress, status=self.show_status)

