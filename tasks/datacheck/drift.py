"""Drift between two runs' data: classes that appeared or vanished, class proportions that moved, pixel
statistics that moved, each with a distance and the threshold it is judged by. Plain Python and numpy.

The datacheck artifact is keyed by its inputs only; drift is a property of a run (this run's data against the
previous run's), so ``tfpipe run`` computes it from the summaries the run log keeps (``data_summary``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DriftThresholds:
    """``DataCheck.drift_proportion`` and ``DataCheck.drift_pixels``."""

    proportion: float = 0.1  # total variation distance between two class distributions (0 same, 1 disjoint)
    pixels: float = 0.25  # shift of a channel's mean, in the previous run's standard deviations

    def __post_init__(self) -> None:
        if not 0 < self.proportion <= 1:
            raise ValueError(f"DataCheck.drift_proportion must be in (0, 1], got {self.proportion}")
        if self.pixels <= 0:
            raise ValueError(f"DataCheck.drift_pixels must be > 0, got {self.pixels}")


def data_summary(report: dict[str, Any], datacheck_key: str) -> dict[str, Any]:
    """What the run log keeps of a data check to compare the next run with: classes, counts, pixel statistics."""
    return {"datacheck": datacheck_key, "classes": report["classes"],
            "splits": {name: {"examples": s["examples"], "class_counts": s["class_counts"],
                              "pixels": {"mean": s["pixels"]["mean"], "std": s["pixels"]["std"]}}
                       for name, s in report["splits"].items()},
            "warnings": report["warnings"]}


def total_variation(previous: dict[str, int], current: dict[str, int]) -> float:
    names = sorted(set(previous) | set(current))
    p = np.asarray([previous.get(n, 0) for n in names], dtype=np.float64)
    q = np.asarray([current.get(n, 0) for n in names], dtype=np.float64)
    if p.sum() == 0 or q.sum() == 0:
        return 0.0 if p.sum() == q.sum() else 1.0
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def compare_summaries(previous: dict[str, Any], current: dict[str, Any],
                      thresholds: DriftThresholds) -> dict[str, Any]:
    """Drift of ``current`` from ``previous``: rows of (check, split, distance, threshold, drifted, detail)."""
    rows: list[dict[str, Any]] = []
    old_counts = _counts_by_name(previous)
    new_counts = _counts_by_name(current)
    old_classes = {n for counts in old_counts.values() for n, c in counts.items() if c}
    new_classes = {n for counts in new_counts.values() for n, c in counts.items() if c}
    appeared, vanished = sorted(new_classes - old_classes), sorted(old_classes - new_classes)
    rows.append(_row("classes", "", float(len(appeared) + len(vanished)), 0.0,
                     _class_change_text(appeared, vanished), appeared=appeared, vanished=vanished))
    for split in sorted(set(old_counts) & set(new_counts)):
        distance = total_variation(old_counts[split], new_counts[split])
        rows.append(_row("class proportions", split, distance, thresholds.proportion,
                         _moved_classes(old_counts[split], new_counts[split])))
        rows.extend(_pixel_rows(split, previous["splits"][split]["pixels"], current["splits"][split]["pixels"],
                                thresholds))
    drifted = [r for r in rows if r["drifted"]]
    return {"previous_datacheck": previous.get("datacheck"), "current_datacheck": current.get("datacheck"),
            "thresholds": asdict(thresholds), "rows": rows,
            "warnings": [f"data drift: {r['check']}{' (' + r['split'] + ')' if r['split'] else ''} "
                         f"{r['distance']:.3f} > {r['threshold']}: {r['detail']}" for r in drifted]}


def _row(check: str, split: str, distance: float, threshold: float, detail: str, **extra: Any) -> dict[str, Any]:
    return {"check": check, "split": split, "distance": round(distance, 4), "threshold": threshold,
            "drifted": bool(distance > threshold), "detail": detail, **extra}


def _counts_by_name(summary: dict[str, Any]) -> dict[str, dict[str, int]]:
    names = summary["classes"]
    return {split: dict(zip(names, s["class_counts"], strict=False)) for split, s in summary["splits"].items()}


def _class_change_text(appeared: list[str], vanished: list[str]) -> str:
    parts = []
    if appeared:
        parts.append(f"new classes {', '.join(appeared[:10])}{' ...' if len(appeared) > 10 else ''}")
    if vanished:
        parts.append(f"vanished classes {', '.join(vanished[:10])}{' ...' if len(vanished) > 10 else ''}")
    return "; ".join(parts) or "the same classes"


def _moved_classes(previous: dict[str, int], current: dict[str, int], shown: int = 3) -> str:
    """The classes whose share moved most, as ``name 10.0% -> 2.5%``."""
    old_total, new_total = max(sum(previous.values()), 1), max(sum(current.values()), 1)
    shares = {n: (previous.get(n, 0) / old_total, current.get(n, 0) / new_total) for n in set(previous) | set(current)}
    moved = sorted(shares.items(), key=lambda item: -abs(item[1][1] - item[1][0]))[:shown]
    return ", ".join(f"{n} {a:.1%} -> {b:.1%}" for n, (a, b) in moved if a != b) or "no class moved"


def _pixel_rows(split: str, previous: dict[str, list[float]], current: dict[str, list[float]],
                thresholds: DriftThresholds) -> list[dict[str, Any]]:
    if len(previous["mean"]) != len(current["mean"]):
        return [_row("pixel statistics", split, float("inf"), thresholds.pixels,
                     f"channels changed from {len(previous['mean'])} to {len(current['mean'])}")]
    shifts = [abs(new - old) / max(std, 1.0) for old, new, std in
              zip(previous["mean"], current["mean"], previous["std"], strict=True)]
    worst = int(np.argmax(shifts)) if shifts else 0
    detail = ", ".join(f"channel {c} mean {old:.1f} -> {new:.1f}" for c, (old, new) in
                       enumerate(zip(previous["mean"], current["mean"], strict=True)))
    return [_row("pixel statistics", split, shifts[worst] if shifts else 0.0, thresholds.pixels, detail)]
