"""How long and how hard a training run trains: the dataset's defaults resolved against the data's size and
the user's overrides. Pure Python (no TensorFlow, no Luigi); Train records the result in its manifest.

The rules are named and versioned (``BUDGET_RULE``, ``BALANCE_RULE``); the names are part of Train's key (its
dataset defaults), so changing a rule never reuses a model trained under the old one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# Epochs = the fewest that give ``target_steps`` optimizer steps, clamped to [min_epochs, max_epochs].
BUDGET_RULE = "target-steps/v1"
# Class weights n / (K * n_k) when the largest class of the training split is this many times the smallest.
BALANCE_RULE = "balanced-above-3x/v1"
IMBALANCE_RATIO = 3.0
CLASS_WEIGHTING = ("auto", "balanced", "none")


@dataclass(frozen=True)
class Budget:
    """The resolved numbers of one training run (what its manifest records)."""

    epochs: int
    batch_size: int
    learning_rate: float
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    patience: int
    rule: str
    epochs_from: str  # "the budget rule" or "Train.epochs"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def rule_epochs(steps_per_epoch: int, target_steps: int, min_epochs: int, max_epochs: int) -> int:
    """The budget rule: enough passes for ``target_steps`` steps, within [min_epochs, max_epochs]."""
    wanted = math.ceil(target_steps / max(steps_per_epoch, 1))
    return max(min_epochs, min(max_epochs, wanted))


def resolve_budget(defaults: Mapping[str, Any], train_examples: int, *, epochs: int = 0, batch_size: int = 0,
                   learning_rate: float = 0.0, patience: int = 0, max_steps: int = 0) -> Budget:
    """The run's budget: each override that is set (non-zero) wins, the dataset's ``defaults`` fill the rest."""
    batch = batch_size or int(defaults["batch_size"])
    if batch < 1:
        raise ValueError(f"Train.batch_size must be >= 1, got {batch}")
    steps_per_epoch = max(1, math.ceil(train_examples / batch))
    chosen = epochs or rule_epochs(steps_per_epoch, int(defaults["target_steps"]), int(defaults["min_epochs"]),
                                   int(defaults["max_epochs"]))
    if chosen < 1:
        raise ValueError(f"Train.epochs must be >= 1, got {chosen}")
    total = steps_per_epoch * chosen
    total = min(total, max_steps) if max_steps else total
    warmup = int(round(float(defaults.get("warmup_fraction", 0.0)) * total))
    return Budget(epochs=chosen, batch_size=batch, learning_rate=learning_rate or float(defaults["learning_rate"]),
                  steps_per_epoch=steps_per_epoch, total_steps=total, warmup_steps=min(warmup, total - 1),
                  patience=patience or int(defaults["patience"]), rule=str(defaults.get("budget_rule", BUDGET_RULE)),
                  epochs_from="Train.epochs" if epochs else "the budget rule")


def class_weights(counts: Sequence[int], choice: str = "auto") -> list[float] | None:
    """Per-class loss weights n / (K * n_k) over the classes present, or None (every class weighs 1).

    ``auto`` weighs only when the classes differ a lot (``IMBALANCE_RATIO``); ``balanced`` always; ``none``
    never. A class absent from the training split keeps weight 1 (it has no examples to weigh).
    """
    if choice not in CLASS_WEIGHTING:
        raise ValueError(f"Train.class_weighting must be one of {', '.join(CLASS_WEIGHTING)}, got {choice!r}")
    present = [count for count in counts if count > 0]
    if choice == "none" or len(present) < 2:
        return None
    if choice == "auto" and max(present) < IMBALANCE_RATIO * min(present):
        return None
    total, classes = sum(present), len(present)
    return [total / (classes * count) if count > 0 else 1.0 for count in counts]
