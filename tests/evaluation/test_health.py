"""Model health: chance level, did-not-learn, gap, classes never predicted (tasks/evaluation/health.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.evaluation.health import assess, balanced_scores, chance_level

NAMES = ["a", "b", "c", "d"]


def history(val_losses: list[float], accuracy: float = 0.9, val_accuracy: float = 0.85) -> list[dict[str, float]]:
    return [{"epoch": float(i), "loss": 1.0, "accuracy": accuracy, "val_loss": v, "val_accuracy": val_accuracy}
            for i, v in enumerate(val_losses)]


def test_balanced_scores_match_scikit_learn() -> None:
    from sklearn import metrics
    rng = np.random.default_rng(0)
    truth = rng.choice(4, size=500, p=[0.7, 0.2, 0.08, 0.02])
    predicted = np.where(rng.random(500) < 0.7, truth, rng.integers(0, 4, 500))
    confusion = np.zeros((4, 4), np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    scores = balanced_scores(confusion)
    assert scores["balanced_accuracy"] == pytest.approx(metrics.balanced_accuracy_score(truth, predicted))
    assert scores["macro_f1"] == pytest.approx(metrics.f1_score(truth, predicted, average="macro"))


def test_chance_is_the_majority_share_or_a_uniform_guess() -> None:
    assert chance_level(np.diag([70, 10, 10, 10])) == pytest.approx(0.7)
    assert chance_level(np.diag([10, 10, 10, 10])) == pytest.approx(0.25)
    assert chance_level(np.diag([10, 10, 10, 10]), num_heads=4) == pytest.approx(0.25 ** 4)


def test_a_model_at_chance_did_not_learn() -> None:
    confusion = np.zeros((4, 4), np.int64)
    confusion[:, 0] = 25  # always "a"
    health = assess(metric="top1_accuracy", value=0.25, confusion=confusion, class_names=NAMES,
                    history=history([1.5, 1.45, 1.42]))
    assert not health.learned
    assert health.warnings[0].startswith("did not learn: test top1_accuracy 0.250 is at chance level (0.250)")
    assert health.classes_never_predicted == ["b", "c", "d"]
    assert any("3 of 4 classes in the test split are never predicted" in w for w in health.warnings)


def test_a_loss_that_never_went_below_ln_k_did_not_learn() -> None:
    health = assess(metric="top1_accuracy", value=0.6, confusion=np.diag([15, 15, 15, 15]) + 3, class_names=NAMES,
                    history=history([1.6, 1.5, math.log(4) + 0.01]))
    assert not health.learned and "not below ln 4" in health.warnings[0]


def test_a_healthy_model_has_no_warning_and_its_best_epoch() -> None:
    health = assess(metric="top1_accuracy", value=0.95, confusion=np.diag([25, 25, 25, 25]), class_names=NAMES,
                    history=history([0.9, 0.2, 0.3], accuracy=0.97, val_accuracy=0.95))
    assert health.learned and health.warnings == []
    assert health.best_epoch == 2 and health.train_validation_gap == pytest.approx(0.02)


def test_a_large_gap_is_named() -> None:
    health = assess(metric="top1_accuracy", value=0.7, confusion=np.diag([25, 25, 25, 25]), class_names=NAMES,
                    history=history([0.9, 0.8], accuracy=0.99, val_accuracy=0.7))
    assert health.learned
    assert any(w.startswith("overfitting: at the best epoch (2)") for w in health.warnings)


def test_a_test_split_of_one_class_cannot_judge_and_says_so() -> None:
    confusion = np.zeros((4, 4), np.int64)
    confusion[0, 0] = 5
    learned = assess(metric="top1_accuracy", value=1.0, confusion=confusion, class_names=NAMES,
                     history=history([1.2, 0.4]))
    assert learned.learned and "holds 5 image(s) of 1 class" in learned.warnings[0]
    guessing = assess(metric="top1_accuracy", value=1.0, confusion=confusion, class_names=NAMES,
                      history=history([1.5, 1.45]))
    assert not guessing.learned and any("not below ln 4" in w for w in guessing.warnings)
