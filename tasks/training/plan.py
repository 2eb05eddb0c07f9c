"""What a Train run was asked, as plain data: Train's parameters with its dataset's defaults and inputs
(``TrainingPlan``), resolved against the data into a ``TrainConfig``; and the job one process trains
(``TrainingJob``). No Luigi, no TensorFlow: the Train task maps its parameters to a plan, and
tasks/training/run.py trains it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.formats.dataset_info import DatasetInfo
from tasks.training.budget import Budget
from tasks.training.strategies import CLUSTER_LIMITS

if TYPE_CHECKING:
    from tasks.training.fit import TrainConfig


def shard_files(shards: Path, info: DatasetInfo) -> dict[str, list[str]]:
    """Each split's TFRecord shard paths."""
    return {split: [str(shards / name) for name in split_info.files] for split, split_info in info.splits.items()}


@dataclass(frozen=True)
class TrainingPlan:
    """Train's parameters (same names, same defaults: tests/training/test_plan.py holds them equal), the
    dataset's registry defaults, and where its inputs are. Values of 0 or '' mean "the dataset's"."""

    examples_dir: Path  # the TFRecord shards (tasks/data/)
    dataset_defaults: Mapping[str, Any] = field(default_factory=dict)
    features_dir: Path | None = None  # with a bottleneck stage: its cached features, to train a head on
    backbone: str = ""  # that stage's backbone, as given (the trained model's name)
    backbone_spec: Any = None  # ... and parsed (models.backbone_spec.BackboneSpec)
    model: str = ""
    head_hidden_units: int = 0
    head_dropout: float = 0.0
    fine_tune_layers: int = 0
    fine_tune_epochs: int = 3
    fine_tune_learning_rate: float = 1e-5
    model_options: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 0
    batch_size: int = 0
    learning_rate: float = 0.0
    class_weighting: str = "auto"
    optimizer: str = "adam"
    momentum: float = 0.0
    lr_schedule: str = "cosine"
    jit_compile: bool = False
    seed: int = 0
    patience: int = 0
    shuffle_buffer: int = 10_000
    augment: bool = True
    mixed_precision: bool = False
    strategy: str = "default"
    cpu_devices: int = 0
    max_steps: int = 0
    checkpoint_every_steps: int = 0
    cluster_timeout: float = 600.0
    input_autotune: bool = False

    @property
    def on_features(self) -> bool:
        """A head on a bottleneck stage's features, rather than a whole model on the images."""
        return self.features_dir is not None

    def dataset_default(self, name: str) -> Any:
        if name not in self.dataset_defaults:
            raise ValueError(f"Train has no dataset default for {name!r}; its pipeline passes "
                             f"{sorted(self.dataset_defaults)} (set Train.model explicitly outside a pipeline)")
        return self.dataset_defaults[name]

    def model_name(self) -> str:
        return self.model or self.dataset_default("model")

    def trained_model_name(self, config: TrainConfig) -> str:
        if self.on_features:
            return f"feature head on {self.backbone}"
        return config.model

    def budget(self, info: DatasetInfo) -> Budget:
        """Epochs, batch, learning rate, warm-up and patience: the user's values where set, else the dataset's
        defaults sized to its training split by the budget rule."""
        from tasks.training.budget import resolve_budget

        return resolve_budget(self.dataset_defaults, info.count("train"), epochs=self.epochs,
                              batch_size=self.batch_size, learning_rate=self.learning_rate, patience=self.patience,
                              max_steps=self.max_steps)

    def class_weights(self, info: DatasetInfo) -> list[float] | None:
        """Loss weights per class from the training split's label counts (single-label datasets only)."""
        from tasks.training.budget import class_weights

        if info.num_heads != 1:
            return None
        from tasks.data.shards import split_label_counts

        counts = split_label_counts(self.examples_dir, "train", info.num_classes)
        return class_weights(counts, self.class_weighting)

    def train_config(self, info: DatasetInfo) -> TrainConfig:
        from tasks.data.input_pipeline import AugmentConfig
        from tasks.training.fit import TrainConfig

        augment = (AugmentConfig(bool(self.dataset_default("flip_left_right")),
                                 float(self.dataset_default("brightness")), float(self.dataset_default("contrast")),
                                 float(self.dataset_default("translate")))
                   if self.augment else AugmentConfig())
        budget = self.budget(info)
        weights = self.class_weights(info)
        return TrainConfig(
            model=self.model_name(), image_shape=info.image_shape, num_classes=info.num_classes,
            num_heads=info.num_heads, epochs=budget.epochs, batch_size=budget.batch_size,
            learning_rate=budget.learning_rate, lr_schedule=self.lr_schedule, jit_compile=self.jit_compile,
            optimizer=self.optimizer, momentum=self.momentum,
            steps_per_epoch=budget.steps_per_epoch, warmup_steps=budget.warmup_steps,
            train_examples=info.count("train"), validation_examples=info.count("validation"),
            seed=self.seed, patience=budget.patience,
            shuffle_buffer=self.shuffle_buffer, augment=augment, mixed_precision=self.mixed_precision,
            strategy=self.strategy, cpu_devices=self.cpu_devices, model_options=dict(self.model_options),
            input_autotune=self.input_autotune, max_steps=self.max_steps,
            checkpoint_every_steps=self.checkpoint_every_steps,
            class_weights=tuple(weights) if weights else (),
        )

    def training_replicas(self) -> int:
        """The replicas sharing each training batch, as far as they are known before TensorFlow starts: the
        logical CPUs of mirrored (its GPUs are counted by fit), the workers of a multi_worker cluster; else one
        (every parameter-server worker reads the whole split)."""
        if self.strategy == "mirrored":
            return max(1, self.cpu_devices)
        if self.strategy == "multi_worker":
            from tasks.training.cluster import cluster_from_env

            return cluster_from_env(self.strategy).num_workers
        return 1

    def check_cluster_options(self) -> None:
        """The options the custom loop does not have are refused before any work, with the reason."""
        chosen = {"features": self.on_features, "mixed_precision": self.mixed_precision,
                  "jit_compile": self.jit_compile, "cpu_devices": bool(self.cpu_devices)}
        for option, reason in CLUSTER_LIMITS.items():
            if chosen[option]:
                raise ValueError(f"Train.strategy={self.strategy} with {option}: {reason}")

    def job(self, config: TrainConfig, info: DatasetInfo, work_dir: Path, **where: Any) -> TrainingJob:
        """The job of one process training ``config`` on this plan's shards; ``where``: the rest of
        ``TrainingJob``'s fields (who is chief, where it writes)."""
        files = shard_files(self.examples_dir, info)
        return TrainingJob(config=config, train_files=tuple(files["train"]),
                           validation_files=tuple(files["validation"]), image_format=info.image_format,
                           work_dir=work_dir, **where)


@dataclass(frozen=True)
class TrainingJob:
    """One process's training run, ``model.fit``'s (tasks/training/run.py ``fit_and_save``) or the custom
    loop's on a cluster (tasks/training/custom_loop.py ``train_on_cluster``): picklable, since both may run in
    a fresh process. One type for both: they train the same config on the same shards into the same work
    directory; each runner ignores the fields that are the other's (noted below)."""

    config: TrainConfig
    train_files: tuple[str, ...]
    validation_files: tuple[str, ...]
    image_format: str  # the custom loop's input pipelines (fit's read it from the first record)
    work_dir: Path
    is_chief: bool = True  # custom loop: the member that writes history, best weights and the model
    scratch_dir: Path | None = None  # custom loop, not the chief: where its own checkpoints go
    model_file: Path | None = None  # where the trained model is saved (the chief's, on a cluster)
    sample_images: Any = None  # fit: a few training images shown in TensorBoard
