"""Whether to trust a model: chance level, best epoch, train/validation gap, classes never predicted, and the
one-line warnings the run summary, the report, ``tfpipe history`` and the publish gate share. Pure Python and
numpy (no TensorFlow, no Luigi).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.training.curves import best_epoch

# A model is "near chance" when its accuracy is within this share of the way from chance to perfect.
NEAR_CHANCE_SHARE = 0.1
# Train accuracy above validation accuracy by more than this at the best epoch is named as overfitting.
GAP_WARNING = 0.15
HEALTH_KEY = "health"  # metrics.json's section


@dataclass(frozen=True)
class Health:
    learned: bool
    chance_level: float
    metric: str
    value: float
    best_epoch: int | None = None
    epochs_completed: int | None = None
    train_accuracy: float | None = None  # at the best epoch
    validation_accuracy: float | None = None  # at the best epoch
    best_val_loss: float | None = None
    loss_at_chance: float | None = None  # ln K: the loss of a model that predicts the class shares
    train_validation_gap: float | None = None
    classes_never_predicted: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def balanced_scores(confusion: np.ndarray) -> dict[str, float]:
    """Balanced accuracy (mean recall over the classes present in the truth) and macro-F1 (mean F1 over the
    classes present in the truth or the predictions), as scikit-learn computes them."""
    confusion = np.asarray(confusion, dtype=np.float64)
    hits, support, predicted = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    present = support > 0
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=present)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(hits), where=denominator > 0)
    labelled = present | (predicted > 0)
    return {"balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
            "macro_f1": float(f1[labelled].mean()) if labelled.any() else 0.0}


def chance_level(confusion: np.ndarray, num_heads: int = 1) -> float:
    """What a model that learned nothing scores: always the most frequent class (per head; all heads right
    for a multi-head sequence metric), never less than a uniform guess."""
    confusion = np.asarray(confusion)
    support = confusion.sum(axis=1)
    total = support.sum()
    per_character = max(float(support.max() / total) if total else 0.0, 1.0 / max(len(support), 1))
    return per_character ** num_heads


def read_history(path: Path) -> list[dict[str, float]]:
    """The rows of a Keras ``history.csv`` as floats (empty cells dropped); none when there is no file."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as handle:
        return [{key: float(value) for key, value in row.items() if key and value not in ("", None)}
                for row in csv.DictReader(handle)]


def best_row(history: Sequence[dict[str, float]]) -> tuple[int, dict[str, float]] | None:
    """(1-based epoch, row) of the lowest finite validation loss: the weights Train keeps."""
    epoch = best_epoch([row.get("val_loss", math.nan) for row in history])
    return None if epoch is None else (epoch, history[epoch - 1])


def assess(*, metric: str, value: float, confusion: np.ndarray, class_names: Sequence[str],
           history: Sequence[dict[str, float]], num_heads: int = 1) -> Health:
    """The model's health from its test metric, test confusion matrix and training history."""
    confusion = np.asarray(confusion)
    num_classes = len(class_names)
    chance = chance_level(confusion, num_heads if metric == "sequence_accuracy" else 1)
    margin = NEAR_CHANCE_SHARE * (1.0 - chance)
    warnings: list[str] = []
    learned = True
    support = confusion.sum(axis=1)
    if (support > 0).sum() < 2:  # a constant guess scores as well as any model: the validation loss decides
        warnings.append(f"the test split holds {int(support.sum())} image(s) of {int((support > 0).sum())} class: "
                        f"its {metric} cannot tell a model from a constant guess; add images")
    elif value <= chance + margin:
        learned = False
        warnings.append(f"did not learn: test {metric} {value:.3f} is at chance level ({chance:.3f})")
    loss_at_chance = math.log(num_classes) if num_classes > 1 else None
    best = best_row(history)
    best_epoch = train_accuracy = validation_accuracy = best_val_loss = gap = None
    if best is not None:
        best_epoch, row = best
        best_val_loss = row.get("val_loss")
        train_accuracy, validation_accuracy = row.get("accuracy"), row.get("val_accuracy")
        if loss_at_chance is not None and best_val_loss is not None and best_val_loss >= loss_at_chance:
            if learned:
                warnings.append(f"did not learn: the best validation loss {best_val_loss:.3f} is not below "
                                f"ln {num_classes} = {loss_at_chance:.3f}, a uniform guess's")
            learned = False
        if train_accuracy is not None and validation_accuracy is not None:
            gap = train_accuracy - validation_accuracy
            if gap > GAP_WARNING:
                warnings.append(f"overfitting: at the best epoch ({best_epoch}) train accuracy {train_accuracy:.3f} "
                                f"is {gap:.3f} above validation accuracy {validation_accuracy:.3f}")
    predicted = confusion.sum(axis=0)
    never = [str(class_names[i]) for i in range(num_classes) if support[i] > 0 and predicted[i] == 0]
    if never:
        shown = ", ".join(never[:10]) + (f" and {len(never) - 10} more" if len(never) > 10 else "")
        warnings.append(f"{len(never)} of {int((support > 0).sum())} classes in the test split are never "
                        f"predicted: {shown}")
    return Health(learned=learned, chance_level=chance, metric=metric, value=float(value), best_epoch=best_epoch,
                  epochs_completed=len(history) or None, train_accuracy=train_accuracy,
                  validation_accuracy=validation_accuracy, best_val_loss=best_val_loss,
                  loss_at_chance=loss_at_chance, train_validation_gap=gap, classes_never_predicted=never,
                  warnings=warnings)
