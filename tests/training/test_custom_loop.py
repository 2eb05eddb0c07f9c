"""The custom training loop on one device (the cluster strategies' loop, in process): max_steps, checkpoints every
N steps and the resume from them, the NaN guard, history.csv and TensorBoard as fit writes them; per-worker input
shards that are disjoint and cover the data."""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tasks.data.input_pipeline import make_dataset  # noqa: E402
from tasks.training.custom_loop import LoopPlan, train_on_cluster  # noqa: E402
from tasks.training.fit import TrainConfig, TrainingDivergedError, fit  # noqa: E402
from tasks.training.plan import TrainingJob  # noqa: E402
from tests.data.test_input_pipeline import NUM_SHARDS, SHAPE, make_data, write_shards  # noqa: E402


def learnable(tmp_path: Path) -> tuple[list[str], list[str]]:
    """Dim images (label 0) and bright ones (label 1): a small model learns them in a few steps."""
    images, _ = make_data(240, seed=1)
    brightness = np.random.default_rng(2).uniform(0.0, 1.0, size=240)
    images = (images * brightness[:, None, None, None]).astype(np.uint8)
    labels = (brightness > 0.5).astype(np.int64)
    (tmp_path / "train").mkdir()
    (tmp_path / "validation").mkdir()
    return (write_shards(tmp_path / "train", images[:200], labels[:200]),
            write_shards(tmp_path / "validation", images[200:], labels[200:], split="validation"))


def config(**changes: object) -> TrainConfig:
    base = TrainConfig(model="mlp", image_shape=SHAPE, num_classes=2, num_heads=1, epochs=3, batch_size=20,
                       steps_per_epoch=10, shuffle_buffer=200, model_options={"hidden_units": [16], "dropout": 0.0})
    return dataclasses.replace(base, **changes)


def run(tmp_path: Path, files: tuple[list[str], list[str]], work: str = "work", **changes: object) -> dict:
    return train_on_cluster(TrainingJob(config(**changes), tuple(files[0]), tuple(files[1]), "raw", tmp_path / work,
                                        is_chief=True, model_file=tmp_path / f"{work}.keras"))


def history(work: Path) -> list[dict[str, str]]:
    with open(work / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_max_steps_stops_the_loop_and_checkpoints_come_every_n_steps(tmp_path: Path) -> None:
    files = learnable(tmp_path)
    result = run(tmp_path, files, max_steps=13, checkpoint_every_steps=4)
    assert result["steps"] == 13 and result["num_replicas_in_sync"] == 1
    rows = history(tmp_path / "work")
    assert [row["epoch"] for row in rows] == ["0", "1"]  # 10 steps, then 3 of the second epoch
    assert list(rows[0]) == ["epoch", "accuracy", "learning_rate", "loss", "val_accuracy", "val_loss"]
    kept = sorted(int(p.stem.split("-")[1]) for p in (tmp_path / "work" / "checkpoints").glob("ckpt-*.index"))
    assert kept == [12, 13]  # every 4 steps within an epoch, at each epoch end; the last two kept
    assert (tmp_path / "work.keras").exists()
    events = list((tmp_path / "work" / "tensorboard" / "validation").glob("events.out.tfevents.*"))
    assert len(events) == 1
    tags = {value.tag for record in tf.data.TFRecordDataset(str(events[0])).as_numpy_iterator()
            for value in tf.compat.v1.Event.FromString(record).summary.value}
    assert {"epoch_loss", "epoch_accuracy"} <= tags


def test_a_rerun_resumes_from_the_last_checkpoint_and_learns(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = learnable(tmp_path)
    run(tmp_path, files, max_steps=10, lr_schedule="constant", learning_rate=0.01)
    result = run(tmp_path, files, epochs=4, lr_schedule="constant", learning_rate=0.01)
    assert "at step 10" in capsys.readouterr().out  # resumed, not restarted
    assert result["steps"] == 40
    rows = history(tmp_path / "work")
    assert [row["epoch"] for row in rows] == ["0", "1", "2", "3"]
    assert float(rows[-1]["val_accuracy"]) > 0.8  # chance: 0.5


def test_a_non_finite_loss_fails_with_training_diverged(tmp_path: Path) -> None:
    files = learnable(tmp_path)
    with pytest.raises(TrainingDivergedError, match="non-finite in epoch 1"):
        run(tmp_path, files, optimizer="sgd", learning_rate=1e30, lr_schedule="constant")
    assert not (tmp_path / "work.keras").exists()


def test_loop_plan_caps_steps_and_checkpoint_interval() -> None:
    assert LoopPlan.of(config(max_steps=0)) == LoopPlan(10, 30, 10)
    assert LoopPlan.of(config(max_steps=25, checkpoint_every_steps=4)) == LoopPlan(10, 25, 4)
    assert LoopPlan.of(config(checkpoint_every_steps=50)) == LoopPlan(10, 30, 10)


@pytest.mark.parametrize("workers", [2, NUM_SHARDS + 1])  # file-level shards, then record-level
def test_input_shards_are_disjoint_and_cover_every_record(tmp_path: Path, workers: int) -> None:
    images, labels = make_data(60, seed=3)
    labels = np.arange(60)  # a label per record, to tell them apart
    files = write_shards(tmp_path, images, labels)
    seen: list[int] = []
    for index in range(workers):
        part = make_dataset(files, image_shape=SHAPE, batch_size=7, training=True, shuffle_buffer=50, seed=index,
                            shard=(workers, index))
        seen += [int(v) for _, batch in part for v in batch.numpy()]
    assert sorted(seen) == list(range(60))


def test_fit_stops_at_max_steps_too(tmp_path: Path) -> None:
    files = learnable(tmp_path)
    stats: dict = {}
    fit(config(max_steps=13, checkpoint_every_steps=4), files[0], files[1], tmp_path / "fit", stats=stats)
    assert stats["steps"] == 13
    assert [row["epoch"] for row in history(tmp_path / "fit")] == ["0", "1"]


class _Killed(Exception):
    """Stands for the process dying once an epoch's backup is written."""


def test_fit_resumed_after_an_epoch_ends_with_the_uninterrupted_weights(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    from tasks.training import fit as training

    files = learnable(tmp_path)
    settings = config(epochs=3, model_options={"hidden_units": [16], "dropout": 0.3}, augment=training.AugmentConfig(
        flip_left_right=True, brightness=0.1), shuffle_buffer=50)
    whole = fit(settings, files[0], files[1], tmp_path / "whole").get_weights()

    class DieAfterSecondEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == 1:
                raise _Killed

    real_reporter = training.EpochReporter
    monkeypatch.setattr(training, "EpochReporter", lambda report: DieAfterSecondEpoch())
    with pytest.raises(_Killed):
        fit(settings, files[0], files[1], tmp_path / "resumed", on_epoch=lambda *_: None)
    monkeypatch.setattr(training, "EpochReporter", real_reporter)
    assert training.resumed_epoch(tmp_path / "resumed") == 2
    resumed = fit(settings, files[0], files[1], tmp_path / "resumed").get_weights()
    for one, two in zip(whole, resumed, strict=True):
        np.testing.assert_array_equal(one, two)
    assert [row["epoch"] for row in history(tmp_path / "resumed")] == ["0", "1", "2"]


def test_no_worker_reads_only_empty_shards(tmp_path: Path) -> None:
    from tasks.training.custom_loop import sharded_training_input

    images, _ = make_data(6, seed=4)
    full = write_shards(tmp_path, images, np.arange(6))[:2]  # two shards of the three hold all six records
    empty = [tmp_path / "empty-1.tfrecord", tmp_path / "empty-2.tfrecord"]
    for path in empty:
        path.write_bytes(b"")
    # Every second file for each of two workers: without the empty shards left out, worker 1 would get both.
    dataset_fn = sharded_training_input(config(batch_size=2), (full[0], str(empty[0]), full[1], str(empty[1])),
                                        "raw")
    for index in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index, num_replicas_in_sync=2)
        assert len(list(dataset_fn(context).take(2))) == 2


def test_splits_smaller_than_a_batch_train_and_validate(tmp_path: Path) -> None:
    files = learnable(tmp_path)
    small = (files[0][:1], files[1][:1])  # the first shard of each: 67 training and 14 validation records
    result = run(tmp_path, small, batch_size=128, steps_per_epoch=1, train_examples=67, epochs=2)
    assert result["steps"] == 2
    rows = history(tmp_path / "work")
    assert len(rows) == 2 and all(0.0 <= float(row["val_accuracy"]) <= 1.0 for row in rows)
