"""A Train run from its plan without Luigi (tasks/training/run.py, head.py): keras fit on tiny shards, a head on
tiny random features composed with a tiny backbone, and the history of a fine-tuning appended to the head's."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tasks.formats.dataset_info import DatasetInfo, SplitInfo
from tasks.training.head import append_history
from tasks.training.plan import TrainingPlan

SHAPE = (6, 5, 3)
DEFAULTS = {"model": "mlp", "batch_size": 16, "learning_rate": 0.01, "target_steps": 4, "min_epochs": 1,
            "max_epochs": 2, "patience": 5, "flip_left_right": False, "brightness": 0.0, "contrast": 0.0,
            "translate": 0.0}


def write_examples(directory: Path, splits: dict[str, int], classes: int = 3) -> DatasetInfo:
    """A TFRecord artifact as the tfrecords stage leaves it: shards per split and tfpipe_info.json."""
    from tasks.data.shards import save_dataset_info
    from tests.data.test_input_pipeline import write_shards

    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    infos = {}
    for split, count in splits.items():
        images = rng.integers(0, 256, size=(count, *SHAPE), dtype=np.uint8)
        paths = write_shards(directory, images, np.arange(count) % classes, split=split)
        infos[split] = SplitInfo(count, tuple(Path(p).name for p in paths))
    info = DatasetInfo("toy", SHAPE, classes, splits=infos)
    save_dataset_info(directory, info)
    return info


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_fit_writes_the_artifact_and_returns_the_manifest_fields(tmp_path: Path) -> None:
    write_examples(tmp_path / "shards", {"train": 48, "validation": 12})
    plan = TrainingPlan(tmp_path / "shards", dataset_defaults=DEFAULTS, model_options={"hidden_units": [8]})
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    seen: list[tuple[int, int, str]] = []
    from tasks.training.run import train

    manifest = train(plan, out, work, progress=lambda *report: seen.append(report))
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "model.keras", "tensorboard", "train_info.json",
                                                     "training_curves.png"]
    assert [row["epoch"] for row in rows(out / "history.csv")] == ["0", "1"]
    assert json.loads((out / "train_info.json").read_text()) == {"model": "mlp", "image_shape": list(SHAPE),
                                                                 "num_classes": 3, "num_heads": 1,
                                                                 "epochs_completed": 2}
    assert (manifest["epochs_completed"], manifest["model_file"], manifest["class_weights"]) == (2, "model.keras",
                                                                                                None)
    assert (manifest["budget"]["epochs"], manifest["steps"], manifest["num_replicas_in_sync"]) == (2, 6, 1)
    assert [(done, total) for done, total, _ in seen] == [(1, 2), (2, 2)] and seen[0][2].startswith("epoch 1/2: ")
    assert not work.exists()


def test_a_split_without_validation_is_refused_before_training(tmp_path: Path) -> None:
    from tasks.training.run import train

    write_examples(tmp_path / "shards", {"train": 6})
    with pytest.raises(ValueError, match="no validation split; set ImageDirs.validation_fraction > 0"):
        train(TrainingPlan(tmp_path / "shards", dataset_defaults=DEFAULTS), tmp_path, tmp_path / "work")


def test_a_head_on_random_features_becomes_one_model_on_images(tmp_path: Path) -> None:
    from models.backbone_spec import parse_backbone
    from tasks.training.fit import TrainConfig
    from tasks.training.head import train_on_features
    from tests.fakes.backbones import small_classifier

    shape = (16, 16, 3)
    small_classifier(shape, width=8).save(tmp_path / "backbone.keras")
    features = tmp_path / "features"
    features.mkdir()
    rng = np.random.default_rng(1)
    for name, count in (("train.view1", 24), ("train.view2", 24), ("validation", 12)):
        np.save(features / f"{name}.features.npy", rng.normal(size=(count, 8)).astype(np.float32))
        np.save(features / f"{name}.labels.npy", np.arange(count) % 3)
    (features / "features.json").write_text(json.dumps({"views": 2, "feature_dim": 8}))
    plan = TrainingPlan(tmp_path / "no-shards", features_dir=features, backbone="backbone.keras",
                        backbone_spec=parse_backbone(str(tmp_path / "backbone.keras")), head_hidden_units=4)
    config = TrainConfig(model="mlp", image_shape=shape, num_classes=3, num_heads=1, epochs=2, batch_size=16,
                         steps_per_epoch=3, train_examples=48)
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    model = train_on_features(plan, config, DatasetInfo("toy", shape, 3), work, out)
    assert tuple(model.input_shape) == (None, *shape) and tuple(model.output_shape) == (None, 3)
    probabilities = np.asarray(model(rng.random((2, *shape), dtype=np.float32)))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert (out / "head.keras").stat().st_size > 0
    assert [row["epoch"] for row in rows(work / "history.csv")] == ["0", "1"]
    assert plan.trained_model_name(config) == "feature head on backbone.keras"


def test_fine_tuning_epochs_are_appended_after_the_heads(tmp_path: Path) -> None:
    head, more = tmp_path / "history.csv", tmp_path / "more.csv"
    head.write_text("epoch,accuracy,loss,val_loss\r\n0,0.5,1.0,1.1\r\n1,0.6,0.9,1.0\r\n")
    more.write_text("epoch,accuracy,learning_rate,loss,val_loss\r\n0,0.7,1e-05,0.8,0.9\r\n1,0.8,1e-05,0.7,0.8\r\n")
    append_history(head, more)
    assert rows(head) == [
        {"epoch": "0", "accuracy": "0.5", "loss": "1.0", "val_loss": "1.1", "learning_rate": ""},
        {"epoch": "1", "accuracy": "0.6", "loss": "0.9", "val_loss": "1.0", "learning_rate": ""},
        {"epoch": "2", "accuracy": "0.7", "loss": "0.8", "val_loss": "0.9", "learning_rate": "1e-05"},
        {"epoch": "3", "accuracy": "0.8", "loss": "0.7", "val_loss": "0.8", "learning_rate": "1e-05"},
    ]
    assert head.read_text().splitlines()[0] == "epoch,accuracy,loss,val_loss,learning_rate"
