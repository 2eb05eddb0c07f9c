"""Champion/challenger comparison on paired predictions: the published (champion) model and the new (challenger)
one, judged on the same test examples. Plain Python and numpy: no Luigi, no TensorFlow.

`compare` takes both models' predicted classes on the challenger's test split and returns the ``comparison``
that ``publish.json`` holds: the examples left out (those the champion trained on, by their content key
``image/sha256``; those of a class the champion does not know, matched by name), both models' accuracy on the
paired rest (whole-example: a captcha is right when every character is), per-class recall deltas (per
character class over every position for multi-head models), the examples that flipped either way, and an
exact McNemar test on the discordant pairs. `paired_refusal` is the publish gate's rule on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_LISTED = 50  # flipped examples listed per direction (the counts are always whole)
UNKNOWN = -1  # a champion class the challenger has no class of that name for
EXACT_PAIRS = 50_000  # discordant pairs up to which the McNemar tail is summed in exact integers (< 1 s)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of ``min(b, c)`` out of ``n = b + c`` discordant pairs at
    probability 1/2 (the tail doubled, at most 1). ``n == 0`` gives 1.0.

    The tail sum of binomial coefficients is summed in exact integers up to `EXACT_PAIRS` discordant pairs (one
    rounding, in the final division); beyond, where the integers grow to tens of thousands of bits, in logarithms
    (relative error below 1e-8)."""
    if b < 0 or c < 0:
        raise ValueError(f"McNemar counts must be >= 0, got b={b}, c={c}")
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    if n <= EXACT_PAIRS:
        return min(1.0, 2 * _binomial_tail(n, k) / 2**n)
    return min(1.0, 2 * math.exp(_log_binomial_tail(n, k) - n * math.log(2)))


def _binomial_tail(n: int, k: int) -> int:
    """``sum(math.comb(n, i) for i in range(k + 1))``, each term from the one before (C(n, i) = C(n, i-1) (n-i+1)/i)."""
    term = total = 1
    for i in range(1, k + 1):
        term = term * (n - i + 1) // i
        total += term
    return total


def _log_binomial_tail(n: int, k: int) -> float:
    """``log(sum(math.comb(n, i) for i in range(k + 1)))``, each term's logarithm from ``math.lgamma``."""
    top = math.lgamma(n + 1)
    logs = [top - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)]
    largest = max(logs)
    return largest + math.log(math.fsum(math.exp(value - largest) for value in logs))


def class_mapping(champion_names: Sequence[str], challenger_names: Sequence[str]) -> np.ndarray:
    """For each champion class index, the challenger's index of the class with the same name, or `UNKNOWN`."""
    where = {name: index for index, name in enumerate(challenger_names)}
    return np.array([where.get(name, UNKNOWN) for name in champion_names], dtype=np.int64)


@dataclass(frozen=True)
class SplitExamples:
    """The challenger's test split in file order: keys, content keys (hex sha256), labels ((N,) or (N, heads), the
    challenger's class indices) and the challenger's class names."""

    keys: Sequence[str]
    digests: Sequence[str]
    labels: np.ndarray
    class_names: Sequence[str]

    def __post_init__(self) -> None:
        if not len(self.keys) == len(self.digests) == len(self.labels):
            raise ValueError(f"{len(self.keys)} keys, {len(self.digests)} digests and {len(self.labels)} labels "
                             "differ in number")


@dataclass(frozen=True)
class PairedSelection:
    """Which examples are paired, and how many were left out and why."""

    paired: np.ndarray  # bool (N,)
    trained_on: int
    unknown_class: int


def select_paired(examples: SplitExamples, mapping: np.ndarray, trained_on: frozenset[str] | None) -> PairedSelection:
    """Leave out the examples the champion trained on (``trained_on``: their content keys; None = unknown, none
    left out) and, of the rest, those with a class (any position's) the champion has no class of that name for."""
    seen = np.array([digest in trained_on for digest in examples.digests], dtype=bool) if trained_on is not None \
        else np.zeros(len(examples.digests), dtype=bool)
    known = np.zeros(len(examples.class_names), dtype=bool)
    known[mapping[mapping != UNKNOWN]] = True
    labels = examples.labels.reshape(len(examples.labels), -1)
    unknown = ~known[labels].all(axis=1) & ~seen
    return PairedSelection(~seen & ~unknown, int(seen.sum()), int(unknown.sum()))


def compare(examples: SplitExamples, challenger: np.ndarray, champion: np.ndarray, champion_names: Sequence[str], *,
            champion_version: int, metric: str, trained_on: frozenset[str] | None,
            max_listed: int = MAX_LISTED) -> dict[str, Any]:
    """The ``comparison`` of the champion's predictions (its own class indices, ``champion_names``) with the
    challenger's (the challenger's indices) on ``examples``; both shaped like ``examples.labels``."""
    labels = np.asarray(examples.labels, dtype=np.int64)
    challenger, champion = np.asarray(challenger, dtype=np.int64), np.asarray(champion, dtype=np.int64)
    _check_predictions(labels, challenger, champion, len(examples.class_names), len(champion_names))
    mapping = class_mapping(champion_names, examples.class_names)
    selection = select_paired(examples, mapping, trained_on)
    champion_mapped = mapping[champion]  # UNKNOWN never equals a label
    position_right = {"champion": champion_mapped == labels, "challenger": challenger == labels}
    right = {who: hits.reshape(len(labels), -1).all(axis=1) for who, hits in position_right.items()}
    paired = selection.paired
    right_to_wrong = paired & right["champion"] & ~right["challenger"]
    wrong_to_right = paired & ~right["champion"] & right["challenger"]
    b, c = int(right_to_wrong.sum()), int(wrong_to_right.sum())
    count = int(paired.sum())

    def listed(mask: np.ndarray) -> dict[str, Any]:
        rows = [_flipped_row(examples, int(i), champion[i], challenger[i], champion_names)
                for i in np.flatnonzero(mask)[:max_listed]]
        return {"count": int(mask.sum()), "examples": rows}

    return {
        "champion_version": int(champion_version),
        "metric": metric,
        "examples": count,
        "champion": _mean(right["champion"][paired]),
        "challenger": _mean(right["challenger"][paired]),
        "trained_on_known": trained_on is not None,
        "left_out": {"trained_on": selection.trained_on, "unknown_class": selection.unknown_class},
        "per_class": per_class_deltas(labels[paired], position_right["champion"][paired],
                                      position_right["challenger"][paired], examples.class_names),
        "flipped": {"right_to_wrong": listed(right_to_wrong), "wrong_to_right": listed(wrong_to_right)},
        "mcnemar": {"b": b, "c": c, "p_value": mcnemar_exact(b, c)},
    }


def per_class_deltas(labels: np.ndarray, champion_right: np.ndarray, challenger_right: np.ndarray,
                     class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Per true class present among ``labels`` (every position of a multi-head label): its count, both models'
    recall and the challenger's minus the champion's."""
    flat = labels.reshape(-1)
    counts = np.bincount(flat, minlength=len(class_names))
    champion_hits = np.bincount(flat, weights=champion_right.reshape(-1), minlength=len(class_names))
    challenger_hits = np.bincount(flat, weights=challenger_right.reshape(-1), minlength=len(class_names))
    rows = []
    for index in (int(i) for i in np.flatnonzero(counts)):
        champion, challenger = champion_hits[index] / counts[index], challenger_hits[index] / counts[index]
        rows.append({"class": class_names[index], "count": int(counts[index]), "champion_recall": float(champion),
                     "challenger_recall": float(challenger), "delta": float(challenger - champion)})
    return rows


def paired_refusal(comparison: dict[str, Any], *, significance: float, tolerance: float | None) -> str:
    """'' unless the challenger is worse on the paired examples: significantly (McNemar, challenger wrong more
    often than right among the discordant pairs, ``p_value < significance``), or by more than ``tolerance``
    (an absolute drop of the metric; None: no such rule). Nothing paired: ''."""
    count = comparison["examples"]
    if not count:
        return ""
    version, metric = comparison["champion_version"], comparison["metric"]
    champion, challenger = comparison["champion"], comparison["challenger"]
    test = comparison["mcnemar"]
    b, c, p_value = test["b"], test["c"], test["p_value"]
    if b > c and p_value < significance:
        return (f"significantly worse than version {version} on the same {count} test examples: {metric} "
                f"{challenger:.4f} vs {champion:.4f}, McNemar b={b} c={c} p={p_value:.3g} < {significance:g}")
    drop = (b - c) / count  # champion's right minus challenger's right, over the paired: exact up to one rounding
    if tolerance is not None and drop > tolerance:
        return (f"{metric} {challenger:.4f} is {drop:.4f} below version {version}'s {champion:.4f} "
                f"on the same {count} test examples (tolerance {tolerance:g}; McNemar p={p_value:.3g})")
    return ""


def _flipped_row(examples: SplitExamples, index: int, champion: np.ndarray, challenger: np.ndarray,
                 champion_names: Sequence[str]) -> dict[str, Any]:
    return {"index": index, "key": examples.keys[index],
            "label": _label_text(examples.labels[index], examples.class_names),
            "champion": _label_text(champion, champion_names),
            "challenger": _label_text(challenger, examples.class_names)}


def _label_text(label: np.ndarray | int, names: Sequence[str]) -> str:
    """A class name, or the names of every position joined (a captcha's text)."""
    return "".join(names[int(i)] for i in np.asarray(label).reshape(-1))


def _mean(hits: np.ndarray) -> float | None:
    return float(hits.mean()) if hits.size else None


def _check_predictions(labels: np.ndarray, challenger: np.ndarray, champion: np.ndarray, challenger_classes: int,
                       champion_classes: int) -> None:
    if challenger.shape != labels.shape or champion.shape != labels.shape:
        raise ValueError(f"predictions {challenger.shape} (challenger) and {champion.shape} (champion) do not match "
                         f"the labels' shape {labels.shape}")
    for what, values, classes in (("labels", labels, challenger_classes),
                                  ("challenger predictions", challenger, challenger_classes),
                                  ("champion predictions", champion, champion_classes)):
        if values.size and (values.min() < 0 or values.max() >= classes):
            raise ValueError(f"{what} hold classes outside 0..{classes - 1}")
