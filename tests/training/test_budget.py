"""The training budget rule and class weighting (tasks/training/budget.py)."""

from __future__ import annotations

import pytest

from pipelines.registry import DATASETS
from pipelines.stages import train_defaults
from tasks.training.budget import BUDGET_RULE, class_weights, resolve_budget, rule_epochs

DEFAULTS = {"batch_size": 64, "learning_rate": 1e-3, "target_steps": 3000, "min_epochs": 5, "max_epochs": 60,
            "warmup_fraction": 0.05, "patience": 10, "budget_rule": BUDGET_RULE}


def test_small_data_gets_many_epochs_large_data_few() -> None:
    small = resolve_budget(DEFAULTS, 1_456)  # scikit-learn's digits' train split: 23 steps an epoch
    large = resolve_budget(DEFAULTS, 54_000)
    assert small.epochs == 60 and small.steps_per_epoch == 23
    assert large.epochs == 5 and large.total_steps == 5 * 844
    assert small.epochs_from == "the budget rule"


def test_rule_epochs_reaches_the_target_within_bounds() -> None:
    assert rule_epochs(100, 3000, 5, 60) == 30
    assert rule_epochs(1, 3000, 5, 60) == 60
    assert rule_epochs(10_000, 3000, 5, 60) == 5


def test_user_values_win_over_the_dataset_defaults() -> None:
    budget = resolve_budget(DEFAULTS, 1_000, epochs=3, batch_size=10, learning_rate=0.01, patience=2)
    assert (budget.epochs, budget.batch_size, budget.learning_rate, budget.patience) == (3, 10, 0.01, 2)
    assert budget.steps_per_epoch == 100 and budget.total_steps == 300 and budget.warmup_steps == 15
    assert budget.epochs_from == "Train.epochs"


def test_max_steps_bounds_the_total_and_the_warmup() -> None:
    budget = resolve_budget(DEFAULTS, 640, epochs=10, max_steps=4)
    assert budget.total_steps == 4 and 0 <= budget.warmup_steps < 4


def test_a_bad_batch_size_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        resolve_budget({**DEFAULTS, "batch_size": 0}, 100)


def test_every_dataset_declares_training_defaults_the_rule_can_resolve() -> None:
    for dataset in DATASETS.values():
        defaults = train_defaults(dataset)
        budget = resolve_budget(defaults, 10_000)
        assert budget.epochs >= 1 and budget.learning_rate > 0, dataset.name
        assert defaults["budget_rule"] == BUDGET_RULE


@pytest.mark.parametrize(("counts", "choice", "expected"), [
    ([100, 90, 80], "auto", None),  # balanced enough
    ([300, 100, 0], "auto", [0.6666666666666666, 2.0, 1.0]),  # 3x: weighed; an absent class keeps 1
    ([100, 90], "balanced", [0.95, 190 / 180]),
    ([1000, 1], "none", None),
    ([5], "auto", None),
])
def test_class_weights(counts: list[int], choice: str, expected: list[float] | None) -> None:
    assert class_weights(counts, choice) == expected


def test_class_weights_refuse_an_unknown_choice() -> None:
    with pytest.raises(ValueError, match="class_weighting"):
        class_weights([1, 2], "inverse")


def test_split_label_counts_reads_the_labels_without_tensorflow(tmp_path) -> None:
    import subprocess
    import sys

    from tasks.data.shards import save_dataset_info
    from tasks.formats.dataset_info import DatasetInfo, SplitInfo
    from tasks.formats.tfrecord import TFRecordWriter, encode_example

    labels = [0] * 20 + [2] * 7 + [3] * 3
    names = ["toy-train.tfrecord-00000-of-00002", "toy-train.tfrecord-00001-of-00002"]
    for index, name in enumerate(names):
        with TFRecordWriter(tmp_path / name) as writer:
            for label in labels[index::2]:
                writer.write(encode_example({"image/encoded": b"\0", "image/class/label": (label,)}))
    info = DatasetInfo("toy", (1, 1, 1), 5, splits={"train": SplitInfo(len(labels), tuple(names))})
    save_dataset_info(tmp_path, info)
    script = ("import sys; from pathlib import Path; from tasks.data.shards import split_label_counts; "
              f"print(split_label_counts(Path({str(tmp_path)!r}), 'train', 5)); "
              "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[20,", "0,", "7,", "3,", "0]", "False"]
