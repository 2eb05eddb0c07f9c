"""The comparison of two sides of ``tfpipe compare`` (pipelines/commands/compare/sides.py): dicts in, one dict out,
no printing. ``--json`` prints it; the table is rendered from it, so the two always agree.

Deltas are ``B - A``. Parameters are compared by ``Family.param`` (as ``--set`` names them); a parameter whose
artifact is gone from one side (``tfpipe gc``) is counted as unknown, not as a difference.
"""

from __future__ import annotations

from typing import Any

ARTIFACT_KIND = "evaluate artifact"  # a side named by its folder rather than a run (sides.py)
MOVED_CLASSES = 5  # per split: the classes whose share of the examples moved most
SIDES = ("a", "b")
HEADER_FIELDS = ("label", "kind", "run_id", "name", "pipeline", "time", "exit_code", "published",
                 "source_location", "gone", "health")
# Shown first, in this order, after the dataset's own metric; the rest follow by name.
LEADING_METRICS = ("top1_accuracy", "top_k_accuracy")


def compare_sides(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Everything ``tfpipe compare`` shows about two sides."""
    return {
        "a": {field: a.get(field) for field in HEADER_FIELDS},
        "b": {field: b.get(field) for field in HEADER_FIELDS},
        "parameters": compare_params(a, b),
        "sources": compare_sources(a["sources"], b["sources"]),
        "data": compare_data(a, b),
        "metrics": compare_metrics(a, b),
        "per_class": per_class_deltas(a.get("per_class"), b.get("per_class")),
        "artifacts": compare_artifacts(a, b),
    }


def delta(a: Any, b: Any) -> float | int | None:
    """``b - a`` of two numbers, else None (one side does not know)."""
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    return b - a if numbers else None


# ---- parameters, sources, artifacts ------------------------------------------------------------------------
def family_of(artifact: str) -> str:
    """``stage/Family-key`` or ``Family-key`` -> ``Family``."""
    return artifact.split("/")[-1].rsplit("-", 1)[0]


def knows_family(side: dict[str, Any], family: str) -> bool:
    """Whether a side can tell a family's parameters: not when its artifact is gone (``tfpipe gc``); an evaluate
    artifact knows only what it read, not what ran after it."""
    if side.get("kind") == ARTIFACT_KIND:
        return family in {family_of(name) for name in side["artifacts"].values()}
    return family not in {family_of(name) for name in side.get("gone", [])}


def compare_params(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``differ``: {name: {a, b}} (None where a side's stages lack it); ``equal``: {name: value}; ``unknown``:
    names one side cannot tell (its artifact gone, or after an evaluate artifact)."""
    sides = {"a": a, "b": b}
    differ: dict[str, dict[str, Any]] = {}
    equal: dict[str, Any] = {}
    unknown: list[str] = []
    for name in sorted(set(a["params"]) | set(b["params"])):
        family = name.split(".", 1)[0]
        values = {"a": a["params"].get(name), "b": b["params"].get(name)}
        if any(values[s] is None and not knows_family(sides[s], family) for s in SIDES):
            unknown.append(name)
        elif values["a"] == values["b"]:
            equal[name] = values["a"]
        else:
            differ[name] = values
    return {"differ": differ, "equal": equal, "unknown": unknown}


def compare_sources(a: dict[str, str], b: dict[str, str]) -> dict[str, Any]:
    """The source fingerprints by role; ``same`` when both sides read the same contents."""
    return {"same": sorted(a.values()) == sorted(b.values()), "a": a, "b": b}


def compare_artifacts(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Per stage, ``Family-key`` of each side where they differ (a stage one side lacks: None), and how many agree;
    the stages after an evaluate artifact are left out (it cannot know them)."""
    keys_a, keys_b = a["artifacts"], b["artifacts"]
    stages = [stage for stage in list(keys_a) + [s for s in keys_b if s not in keys_a]
              if all(stage in side["artifacts"] or side["kind"] != ARTIFACT_KIND for side in (a, b))]
    differ = [{"stage": stage, "a": keys_a.get(stage), "b": keys_b.get(stage)} for stage in stages
              if keys_a.get(stage) != keys_b.get(stage)]
    return {"differ": differ, "same": len(stages) - len(differ)}


# ---- data ------------------------------------------------------------------------------------------------------
def class_counts(summary: dict[str, Any], split: str) -> dict[str, int]:
    return dict(zip(summary["classes"], summary["splits"][split]["class_counts"], strict=False))


def moved_classes(old: dict[str, int], new: dict[str, int]) -> list[dict[str, Any]]:
    """The classes whose share of a split moved most (shares of 0..1), largest move first; unmoved ones left out."""
    old_total, new_total = sum(old.values()) or 1, sum(new.values()) or 1
    shares = {name: (old.get(name, 0) / old_total, new.get(name, 0) / new_total)
              for name in list(old) + [n for n in new if n not in old]}
    moved = sorted((name for name, (a, b) in shares.items() if a != b),
                   key=lambda name: (-abs(shares[name][1] - shares[name][0]), name))[:MOVED_CLASSES]
    return [{"class": name, "a": shares[name][0], "b": shares[name][1], "delta": shares[name][1] - shares[name][0]}
            for name in moved]


def split_statistics(summaries: dict[str, dict[str, Any] | None], split: str) -> dict[str, Any]:
    """One split's examples, pixel statistics and (when both sides checked it) the classes that moved."""
    per_side = {s: (summaries[s] or {}).get("splits", {}).get(split) for s in SIDES}
    row: dict[str, Any] = {
        "split": split,
        "examples": {s: (per_side[s] or {}).get("examples") for s in SIDES},
        "pixel_mean": {s: ((per_side[s] or {}).get("pixels") or {}).get("mean") for s in SIDES},
        "pixel_std": {s: ((per_side[s] or {}).get("pixels") or {}).get("std") for s in SIDES},
        "moved": [],
    }
    row["examples"]["delta"] = delta(row["examples"]["a"], row["examples"]["b"])
    if per_side["a"] and per_side["b"]:
        row["moved"] = moved_classes(class_counts(summaries["a"] or {}, split), class_counts(summaries["b"] or {},
                                                                                             split))
    return row


def compare_data(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The data check's statistics side by side: classes that appeared or vanished, each split, the warnings."""
    summaries: dict[str, dict[str, Any] | None] = {"a": a.get("data_summary"), "b": b.get("data_summary")}
    known = {s: bool(summaries[s]) for s in SIDES}
    classes = {s: list((summaries[s] or {}).get("classes", [])) for s in SIDES}
    splits = [split for s in SIDES for split in (summaries[s] or {}).get("splits", {})]
    ordered = list(dict.fromkeys(splits))
    both = all(known.values())
    return {
        "known": known,
        "classes": {"a": len(classes["a"]) if known["a"] else None, "b": len(classes["b"]) if known["b"] else None,
                    "appeared": sorted(set(classes["b"]) - set(classes["a"])) if both else [],
                    "vanished": sorted(set(classes["a"]) - set(classes["b"])) if both else []},
        "splits": [split_statistics(summaries, split) for split in ordered],
        "warnings": {"a": list(a.get("data_warnings") or []), "b": list(b.get("data_warnings") or [])},
    }


# ---- metrics -------------------------------------------------------------------------------------------------
def metric_order(metrics: dict[str, Any], dataset_metrics: list[str]) -> list[str]:
    """The dataset's metric, top-1 and top-k, the other rates by name, then the counts (examples, classes, k)."""
    first = list(dict.fromkeys(n for n in (*dataset_metrics, *LEADING_METRICS) if n in metrics))
    return first + sorted(set(metrics) - set(first), key=lambda n: (isinstance(metrics[n], int), n))


def compare_metrics(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Every number both evaluations (or run records) hold, the dataset's metric first, with ``b - a``."""
    dataset_metrics = [m for m in (a.get("dataset_metric"), b.get("dataset_metric")) if m]
    known = {**a["metrics"], **b["metrics"]}
    rows = [{"metric": name, "a": a["metrics"].get(name), "b": b["metrics"].get(name),
             "delta": delta(a["metrics"].get(name), b["metrics"].get(name)), "dataset_metric": name in dataset_metrics}
            for name in metric_order(known, dataset_metrics)]
    return {"dataset_metric": dataset_metrics[0] if dataset_metrics else None, "rows": rows}


def per_class_deltas(a: list[dict[str, Any]] | None, b: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Per class name: recall and precision of each side and ``b - a``, the largest change first (classes that
    only one side has come last). ``unknown``: the sides without per-class numbers."""
    unknown = [s for s, rows in zip(SIDES, (a, b), strict=True) if rows is None]
    if unknown:
        return {"rows": [], "unknown": unknown}
    by_side = {"a": {row["class"]: row for row in a or []}, "b": {row["class"]: row for row in b or []}}
    names = list(by_side["a"]) + [name for name in by_side["b"] if name not in by_side["a"]]
    rows = [class_row(name, by_side["a"].get(name), by_side["b"].get(name)) for name in names]
    return {"rows": sorted(rows, key=change_order), "unknown": []}


def class_row(name: str, a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
    row: dict[str, Any] = {"class": name}
    for measure in ("recall", "precision", "support"):
        row[f"{measure}_a"] = None if a is None else a.get(measure)
        row[f"{measure}_b"] = None if b is None else b.get(measure)
    row["recall_delta"] = delta(row["recall_a"], row["recall_b"])
    row["precision_delta"] = delta(row["precision_a"], row["precision_b"])
    return row


def change_order(row: dict[str, Any]) -> tuple[int, float, str]:
    """Rows both sides know first, by the larger of their recall and precision changes; then the others."""
    changes = [abs(row[key]) for key in ("recall_delta", "precision_delta") if row[key] is not None]
    return (0 if changes else 1, -max(changes, default=0.0), row["class"])
