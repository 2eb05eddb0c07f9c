"""Training on a bottleneck stage's cached features: a head trained in seconds on the feature vectors, composed
with the backbone into ONE model on images, and optionally fine-tuned end to end (the backbone's top layers
unfrozen) with its epochs appended to the head's history. No Luigi; TensorFlow inside the functions only.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.formats.dataset_info import DatasetInfo
from tasks.training.files import FINE_TUNE_DIR, HEAD_FILE, HISTORY_FILE
from tasks.training.plan import TrainingPlan, shard_files

if TYPE_CHECKING:
    import keras

    from tasks.training.fit import TrainConfig

Split = tuple[np.ndarray, np.ndarray]  # (features (N, D) float32, labels int32)


def feature_splits(features_dir: Path) -> tuple[Split, Split]:
    """((features, labels) to train on, (features, labels) to validate on), labels int32. The training split
    is its augmented views, all of them, when the stage made views; else the plain features."""
    from tasks.features.task import feature_description, load_features

    views = int(feature_description(features_dir)["views"])
    parts = [load_features(features_dir, f"train.view{v}") for v in range(1, views + 1)] or [
        load_features(features_dir, "train")]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]).astype(np.int32))
    features, labels = load_features(features_dir, "validation")
    return train, (features, labels.astype(np.int32))


def train_on_features(plan: TrainingPlan, config: TrainConfig, info: DatasetInfo, work_dir: Path, out_dir: Path,
                      on_epoch: Any = None) -> keras.Model:
    """The head on ``plan``'s cached features (saved alone to ``out_dir/head.keras``), composed with the backbone
    into one model on images; fine-tuned when ``plan.fine_tune_layers`` > 0. History in ``work_dir``."""
    from models.backbones import load_backbone
    from models.heads import compose
    from tasks.training.fit import fit_head

    assert plan.features_dir is not None, "a plan on features (plan.on_features) names their directory"
    train, validation = feature_splits(plan.features_dir)
    head = fit_head(config, train, validation, work_dir, hidden_units=plan.head_hidden_units,
                    dropout=plan.head_dropout, on_epoch=on_epoch)
    head.save(out_dir / HEAD_FILE)
    if plan.fine_tune_layers <= 0:
        return compose(load_backbone(plan.backbone_spec, info.image_shape), head)
    return fine_tuned(plan, config, info, head, work_dir)


def fine_tuned(plan: TrainingPlan, config: TrainConfig, info: DatasetInfo, head: keras.Model,
               work_dir: Path) -> keras.Model:
    """Backbone (top ``plan.fine_tune_layers`` unfrozen) + the trained head, trained end to end from the images
    at ``plan.fine_tune_learning_rate`` (constant); its epochs are appended to history.csv after the head's."""
    from models.backbones import load_backbone
    from models.heads import compose
    from tasks.training.fit import fine_tune

    files = shard_files(plan.examples_dir, info)
    tuned = dataclasses.replace(config, epochs=plan.fine_tune_epochs, learning_rate=plan.fine_tune_learning_rate,
                                lr_schedule="constant")
    (work_dir / FINE_TUNE_DIR).mkdir(exist_ok=True)

    def build() -> keras.Model:
        backbone = load_backbone(plan.backbone_spec, info.image_shape, trainable_top_layers=plan.fine_tune_layers)
        return compose(backbone, head)

    model = fine_tune(tuned, build, files["train"], files["validation"], work_dir / FINE_TUNE_DIR)
    append_history(work_dir / HISTORY_FILE, work_dir / FINE_TUNE_DIR / HISTORY_FILE)
    return model


def append_history(history: Path, more: Path) -> None:
    """Append ``more``'s epochs to ``history`` (CSVLogger files), numbered on from its last epoch; columns
    only one of them has are left empty in the other's rows."""
    with open(history, newline="") as handle:
        first = list(csv.DictReader(handle))
    with open(more, newline="") as handle:
        second = list(csv.DictReader(handle))
    offset = len(first)
    for row in second:
        row["epoch"] = str(int(row["epoch"]) + offset)
    columns = list(dict.fromkeys([*(first[0] if first else {}), *(second[0] if second else {})]))
    with open(history, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows([*first, *second])
