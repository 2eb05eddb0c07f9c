"""Train stage: Keras fit on the TFRecord shards; resumes after a kill; fails on a NaN loss.

TensorFlow is imported inside ``build`` only: checking completion or printing status stays fast.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import luigi

from tasks.base import ArtifactTask
from tasks.ops.dataset_info import DatasetInfo

MODEL_FILE = "model.keras"
DEFAULT_KEYS = ("model", "flip_left_right", "brightness", "contrast")


class Train(ArtifactTask):
    stage = "train"
    version = 2
    reads = ("examples",)
    provides = "model"

    dataset_defaults = luigi.DictParameter(
        default={}, description="the dataset's registry defaults: model and augmentation (set by the pipeline)")
    model = luigi.Parameter(default="", description="models/ builder name ('' = the dataset's default)")
    model_options = luigi.DictParameter(default={}, description="extra keyword arguments for the builder")
    epochs = luigi.IntParameter(default=10)
    batch_size = luigi.IntParameter(default=64)
    learning_rate = luigi.FloatParameter(default=1e-3)
    lr_schedule = luigi.ChoiceParameter(choices=["cosine", "constant"], default="cosine")
    jit_compile = luigi.BoolParameter(default=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                      description="XLA; measure first (docs/PERFORMANCE.md)")
    seed = luigi.IntParameter(default=0)
    patience = luigi.IntParameter(default=5, description="early stopping on val_loss")
    shuffle_buffer = luigi.IntParameter(default=10_000)
    augment = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                  description="the dataset's default augmentation (training only)")
    mixed_precision = luigi.BoolParameter(default=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    strategy = luigi.ChoiceParameter(choices=["default", "mirrored", "multi_worker"], default="default")
    input_autotune = luigi.BoolParameter(default=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                         significant=False,
                                         description="tf.data runtime tuning (off: parallelism = cores)")

    def dataset_default(self, name: str) -> Any:
        if name not in self.dataset_defaults:
            raise ValueError(f"Train has no dataset default for {name!r}; its pipeline passes "
                             f"{sorted(self.dataset_defaults)} (set Train.model explicitly outside a pipeline)")
        return self.dataset_defaults[name]

    def model_name(self) -> str:
        return self.model or self.dataset_default("model")

    def work_dir(self) -> Path:
        """Checkpoints and logs that must survive a killed process: outside the temporary build dir."""
        return self.artifact_root / self.stage / ".work" / f"{self.task_family}-{self.artifact_key}"

    def train_config(self, info: DatasetInfo) -> Any:
        from tasks.ops.input_pipeline import AugmentConfig
        from tasks.ops.training import TrainConfig

        augment = (AugmentConfig(bool(self.dataset_default("flip_left_right")),
                                 float(self.dataset_default("brightness")), float(self.dataset_default("contrast")))
                   if self.augment else AugmentConfig())
        return TrainConfig(
            model=self.model_name(), image_shape=info.image_shape, num_classes=info.num_classes,
            num_heads=info.num_heads, epochs=self.epochs, batch_size=self.batch_size,
            learning_rate=self.learning_rate, lr_schedule=self.lr_schedule, jit_compile=self.jit_compile,
            steps_per_epoch=max(1, math.ceil(info.count("train") / self.batch_size)),
            seed=self.seed, patience=self.patience,
            shuffle_buffer=self.shuffle_buffer, augment=augment, mixed_precision=self.mixed_precision,
            strategy=self.strategy, model_options=dict(self.model_options),
            input_autotune=self.input_autotune,
        )

    def build(self, out_dir: Path) -> dict[str, Any]:
        from tasks.ops.report import plot_training_curves
        from tasks.ops.shards import load_dataset_info, load_split_arrays
        from tasks.ops.training import fit

        shards = self.input_dir("examples")
        info = load_dataset_info(shards)
        files = {split: [str(shards / f) for f in spec.files] for split, spec in info.splits.items()}
        if "validation" not in files:
            raise ValueError(f"{shards}: no validation split; set ImageDirs.validation_fraction > 0")
        config = self.train_config(info)
        work = self.work_dir()
        work.mkdir(parents=True, exist_ok=True)
        samples, _ = load_split_arrays(shards, "train", limit=8)

        def on_epoch(epoch: int, logs: dict) -> None:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()) if isinstance(v, float))
            self.report_progress(epoch, self.epochs, f"epoch {epoch}/{self.epochs}: {shown}")

        model = fit(config, files["train"], files["validation"], work, sample_images=samples, on_epoch=on_epoch)
        model.save(out_dir / MODEL_FILE)
        shutil.copy(work / "history.csv", out_dir / "history.csv")
        shutil.copytree(work / "tensorboard", out_dir / "tensorboard")
        plot_training_curves(out_dir / "history.csv", out_dir / "training_curves.png")
        epochs_run = max(0, len((out_dir / "history.csv").read_text().splitlines()) - 1)
        train_info = {"model": config.model, "image_shape": list(config.image_shape),
                      "num_classes": config.num_classes, "num_heads": config.num_heads,
                      "epochs_completed": epochs_run}
        (out_dir / "train_info.json").write_text(json.dumps(train_info, indent=2, sort_keys=True))
        shutil.rmtree(work, ignore_errors=True)
        return {"epochs_completed": epochs_run, "model_file": MODEL_FILE}
