"""The data check itself: statistics per split, findings, and what the policies make of them. Plain numpy (no
Luigi, no TensorFlow). ``check_examples`` returns the content of ``datacheck.json`` (docs/DATACHECK.md) and the
examples each split loses to a ``drop`` policy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks.datacheck.duplicates import Catalogue, CopyGroup, label_texts, near_duplicate_pairs
from tasks.datacheck.duplicates import copy_groups as find_copy_groups
from tasks.datacheck.policies import DROP, DROP_MEANING, FAIL, CheckSettings
from tasks.datacheck.scan import PixelScan, SplitExamples, scan_pixels

SCHEMA_VERSION = 1
MAX_LISTED = 200  # items of a finding listed in datacheck.json (the counts are always whole)
SPLIT_ORDER = ("train", "validation", "test")  # a leak keeps the copy in the earliest of these


@dataclass
class CheckResult:
    """``report``: the content of datacheck.json; ``dropped``: per split, the positions a drop policy removes."""

    report: dict[str, Any]
    dropped: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        return list(self.report["failures"])

    @property
    def warnings(self) -> list[str]:
        return list(self.report["warnings"])


def split_rank(name: str) -> int:
    return SPLIT_ORDER.index(name) if name in SPLIT_ORDER else len(SPLIT_ORDER)


def check_examples(splits: Sequence[SplitExamples], class_names: Sequence[str], settings: CheckSettings,
                   progress: Callable[[int], None] | None = None) -> CheckResult:
    splits = sorted(splits, key=lambda split: split_rank(split.name))  # train first: copies are named in that order
    scans = {split.name: scan_pixels(split, progress) for split in splits}
    catalogue = build_catalogue(splits, class_names)
    stats = {split.name: split_statistics(split, scans[split.name], class_names, settings) for split in splits}
    groups = find_copy_groups(catalogue)
    findings = {
        "leak": leak_finding(groups),
        "conflict": conflict_finding(groups),
        "duplicate": duplicate_finding(groups),
        "degenerate": degenerate_finding(splits, scans, catalogue, settings),
        "near_duplicate": near_duplicate_finding(catalogue, scans, settings),
        "imbalance": imbalance_finding(stats, settings),
    }
    dropped = apply_policies(findings, settings, [s.name for s in splits])
    failures = [f["line"] for f in findings.values() if f["count"] and f["policy"] == FAIL]
    warnings = [f["line"] for f in findings.values() if f["count"] and f["policy"] != FAIL]
    report = {
        "schema": SCHEMA_VERSION, "classes": list(class_names), "settings": settings.to_json(),
        "splits": stats, "findings": findings, "failures": failures, "warnings": warnings,
        "dropped": {name: int(len(rows)) for name, rows in dropped.items()}, "passed": not failures,
    }
    return CheckResult(report, dropped)


def build_catalogue(splits: Sequence[SplitExamples], class_names: Sequence[str]) -> Catalogue:
    names = tuple(split.name for split in splits)
    return Catalogue(
        splits=names,
        split_of=np.concatenate([np.full(len(s), i, dtype=np.int64) for i, s in enumerate(splits)]
                                or [np.zeros(0, np.int64)]),
        index=np.concatenate([np.arange(len(s), dtype=np.int64) for s in splits] or [np.zeros(0, np.int64)]),
        keys=np.concatenate([np.asarray(s.keys[s.rows]) for s in splits] or [np.zeros(0, "S1")]),
        labels=np.concatenate([label_texts(s.label_rows(), class_names) for s in splits] or [np.zeros(0, object)]),
        digests=np.concatenate([np.asarray(s.digests[s.rows]) for s in splits] or [np.zeros(0, "S32")]),
    )


# ---- statistics ------------------------------------------------------------------------------------------------
def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Examples per class; with several heads, occurrences of each class over all heads."""
    flat = np.asarray(labels, dtype=np.int64).reshape(-1)
    return np.bincount(flat[(flat >= 0) & (flat < num_classes)], minlength=num_classes)[:num_classes]


def split_statistics(split: SplitExamples, scan: PixelScan, class_names: Sequence[str],
                     settings: CheckSettings) -> dict[str, Any]:
    counts = class_counts(split.label_rows(), len(class_names))
    present = counts[counts > 0]
    stats: dict[str, Any] = {
        "examples": len(split),
        "class_counts": counts.tolist(),
        "missing_classes": [class_names[int(i)] for i in np.flatnonzero(counts == 0)],
        "balance": {"smallest": int(present.min()) if len(present) else 0,
                    "largest": int(present.max()) if len(present) else 0,
                    "ratio": round(float(present.max() / present.min()), 3) if len(present) else None},
        "pixels": scan.channel_stats(),
        "degenerate": int(np.count_nonzero(scan.image_std < settings.degenerate_std)),
    }
    stats["original_sizes"] = size_statistics(split)
    return stats


def size_statistics(split: SplitExamples) -> dict[str, Any] | None:
    """Heights, widths and aspect ratios of the source images, when the decoder recorded them."""
    if split.original_sizes is None or not len(split):
        return None
    sizes = np.asarray(split.original_sizes[split.rows], dtype=np.int64).reshape(-1, 2)
    heights, widths = sizes[:, 0], sizes[:, 1]
    aspect = widths / np.maximum(heights, 1)
    distinct = np.unique(sizes, axis=0)

    def summary(values: np.ndarray) -> dict[str, float]:
        return {"min": round(float(values.min()), 3), "median": round(float(np.median(values)), 3),
                "max": round(float(values.max()), 3)}

    return {"height": summary(heights), "width": summary(widths), "aspect_ratio": summary(aspect),
            "distinct_sizes": int(len(distinct)), "varies": bool(len(distinct) > 1)}


# ---- findings --------------------------------------------------------------------------------------------------
def finding(kind: str, count: int, items: list[dict[str, Any]], line: str) -> dict[str, Any]:
    """A finding as datacheck.json holds it; ``all_items`` (every item, for a drop policy) is removed before."""
    return {"kind": kind, "count": int(count), "items": items[:MAX_LISTED], "listed": min(len(items), MAX_LISTED),
            "line": line, "all_items": items}


def _names(group: CopyGroup, limit: int = 3) -> str:
    shown = [f"{m.split}:{m.key}" for m in group.members[:limit]]
    more = len(group.members) - limit
    return " = ".join(shown) + (f" (+{more})" if more > 0 else "")


def leak_finding(groups: list[CopyGroup]) -> dict[str, Any]:
    leaks = [g for g in groups if len(g.splits) > 1]
    pairs: dict[str, int] = {}
    for group in leaks:
        splits = sorted(group.splits, key=split_rank)
        for i, first in enumerate(splits):
            for second in splits[i + 1:]:
                pairs[f"{first}/{second}"] = pairs.get(f"{first}/{second}", 0) + 1
    where = ", ".join(f"{count} {pair}" for pair, count in pairs.items())
    named = "; ".join(_names(g) for g in leaks[:5]) + (f"; and {len(leaks) - 5} more" if len(leaks) > 5 else "")
    line = f"{len(leaks)} images leak across splits ({where}): {named}" if leaks else ""
    return finding("leak", len(leaks), [dict(g.to_json(), splits=g.splits) for g in leaks], line)


def conflict_finding(groups: list[CopyGroup]) -> dict[str, Any]:
    conflicts = [g for g in groups if len(g.labels) > 1]
    named = "; ".join(f"{_names(g)} labelled {' and '.join(g.labels)}" for g in conflicts[:5])
    named += f"; and {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
    line = f"{len(conflicts)} images appear under two or more labels: {named}" if conflicts else ""
    return finding("conflict", len(conflicts), [dict(g.to_json(), labels=g.labels) for g in conflicts], line)


def duplicate_finding(groups: list[CopyGroup]) -> dict[str, Any]:
    within = []
    for group in groups:
        for split in group.splits:
            members = [m for m in group.members if m.split == split]
            if len(members) > 1:
                within.append(CopyGroup(group.digest, tuple(members)))
    extra = sum(len(g.members) - 1 for g in within)
    named = "; ".join(_names(g) for g in within[:5]) + (f"; and {len(within) - 5} more" if len(within) > 5 else "")
    line = f"{extra} duplicate images within a split ({len(within)} groups): {named}" if within else ""
    return finding("duplicate", extra, [g.to_json() for g in within], line)


def degenerate_finding(splits: Sequence[SplitExamples], scans: dict[str, PixelScan], catalogue: Catalogue,
                       settings: CheckSettings) -> dict[str, Any]:
    items = []
    offset = 0
    for split in splits:
        scan = scans[split.name]
        for index in np.flatnonzero(scan.image_std < settings.degenerate_std):
            member = catalogue.member(offset + int(index))
            items.append(dict(member.to_json(), mean=round(float(scan.image_mean[index]), 2),
                              std=round(float(scan.image_std[index]), 3)))
        offset += len(split)
    named = ", ".join(f"{i['split']}:{i['key']}" for i in items[:5]) + (
        f" and {len(items) - 5} more" if len(items) > 5 else "")
    line = (f"{len(items)} constant or nearly blank images (pixel spread < {settings.degenerate_std}): {named}"
            if items else "")
    return finding("degenerate", len(items), items, line)


def near_duplicate_finding(catalogue: Catalogue, scans: dict[str, PixelScan],
                           settings: CheckSettings) -> dict[str, Any]:
    hashes = np.concatenate([scans[name].phash for name in catalogue.splits] or [np.zeros(0, np.uint64)])
    spread = np.concatenate([scans[name].image_std for name in catalogue.splits] or [np.zeros(0)])
    pairs = near_duplicate_pairs(hashes, catalogue.split_of, settings.near_duplicate_distance,
                                 ignore=spread < settings.degenerate_std, digests=catalogue.digests)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0], pairs[:, 2]))] if len(pairs) else pairs
    items: list[dict[str, Any]] = [
        {"first": catalogue.member(int(i)).to_json(), "second": catalogue.member(int(j)).to_json(), "bits": int(bits)}
        for i, j, bits in pairs]
    named = "; ".join(f"{p['first']['split']}:{p['first']['key']} ~ {p['second']['split']}:{p['second']['key']}"
                      for p in items[:3])
    line = (f"{len(pairs)} near-duplicate pairs across splits (perceptual hashes within "
            f"{settings.near_duplicate_distance} bits): {named}" if len(pairs) else "")
    return finding("near_duplicate", len(pairs), items, line)


def imbalance_finding(stats: dict[str, dict[str, Any]], settings: CheckSettings) -> dict[str, Any]:
    """Classes missing from a split, and splits whose largest class outnumbers the smallest beyond the ratio."""
    items: list[dict[str, Any]] = []
    parts = []
    for split, s in stats.items():
        missing, ratio = s["missing_classes"], s["balance"]["ratio"]
        if missing and s["examples"]:
            items.append({"split": split, "missing_classes": missing})
            parts.append(f"{split} lacks {len(missing)} classes ({', '.join(missing[:5])}"
                         f"{', ...' if len(missing) > 5 else ''})")
        if ratio is not None and ratio > settings.imbalance_ratio:
            items.append({"split": split, "ratio": ratio, "smallest": s["balance"]["smallest"],
                          "largest": s["balance"]["largest"]})
            parts.append(f"{split}: largest class {s['balance']['largest']} examples, smallest "
                         f"{s['balance']['smallest']} (ratio {ratio} > {settings.imbalance_ratio})")
    return finding("imbalance", len(items), items, "class imbalance: " + "; ".join(parts) if parts else "")


def apply_policies(findings: dict[str, dict[str, Any]], settings: CheckSettings,
                   split_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Each finding's policy and action, in place; returns the positions dropped per split."""
    drops: dict[str, set[int]] = {name: set() for name in split_names}
    for kind, result in findings.items():
        policy = settings.policy(kind)
        result["policy"] = policy
        every_item = result.pop("all_items")
        if not result["count"]:
            result["action"] = "none"
            continue
        if policy == DROP:
            removed = _drop_positions(kind, every_item)
            for split, index in removed:
                drops[split].add(index)
            result["action"] = f"dropped {len(removed)} examples: {DROP_MEANING[kind]}"
            result["dropped"] = len(removed)
            result["line"] += f" (dropped {len(removed)}: {DROP_MEANING[kind]})"
        else:
            result["action"] = "failed the run" if policy == FAIL else "warned"
    return {split: np.asarray(sorted(rows), dtype=np.int64) for split, rows in drops.items()}


def _drop_positions(kind: str, items: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(split, position) of every example a ``drop`` removes, each once."""
    removed: set[tuple[str, int]] = set()
    for item in items:
        if kind == "near_duplicate":
            later = max(item["first"], item["second"], key=lambda m: split_rank(m["split"]))
            removed.add((later["split"], later["index"]))
        elif kind == "degenerate":
            removed.add((item["split"], item["index"]))
        elif kind == "conflict":
            removed.update((m["split"], m["index"]) for m in item["members"])
        elif kind == "leak":
            keep = min(split_rank(m["split"]) for m in item["members"])
            removed.update((m["split"], m["index"]) for m in item["members"] if split_rank(m["split"]) != keep)
        else:  # duplicates within a split: the first copy stays
            removed.update((m["split"], m["index"]) for m in item["members"][1:])
    return sorted(removed)
