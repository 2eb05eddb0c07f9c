"""``tfpipe compare A B [--all] [--json]``: the command, and the table it prints from the comparison dict."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from pipelines.commands.common import Subparsers, add_artifacts_argument
from pipelines.commands.compare.diff import SIDES, compare_sides
from pipelines.commands.compare.sides import side_finder

NAME = "compare"
PER_CLASS_SHOWN = 10  # rows of the per-class table without --all
MAX_CELL = 44  # characters of a table cell; longer values are cut (--json has them whole)
SIDE_TITLES = {"a": "A", "b": "B"}


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="two runs (ids from tfpipe history) or two evaluate artifacts side "
                                              "by side: parameters, sources, data, metrics, per-class deltas")
    for side in SIDE_TITLES.values():
        parser.add_argument(f"run_{side.lower()}", metavar=side,
                            help="a run id as `tfpipe history` prints it (or a unique prefix), or an evaluate "
                                 "artifact: its folder, its URL on a bucket root, or evaluate/Evaluate-<key> "
                                 "under the root")
    parser.add_argument("--all", action="store_true",
                        help="every parameter and every class, not only those that differ or changed most")
    parser.add_argument("--json", action="store_true", help="the whole comparison as JSON")
    add_artifacts_argument(parser)


def run(args: argparse.Namespace) -> int:
    finder = side_finder()
    comparison = compare_sides(finder.side(args.run_a), finder.side(args.run_b))
    if args.json:
        print(json.dumps(comparison, indent=2, ensure_ascii=False))
        return 0
    print("\n".join(render(comparison, show_all=args.all)))
    return 0


# ---- cells and tables ----------------------------------------------------------------------------------------
def cell(value: Any) -> str:
    """A value as a table shows it: numbers to four places, lists joined, unknowns as ``-``."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return ", ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in value) or "-"
    return str(value)


def signed(value: float | int | None) -> str:
    if value is None:
        return ""
    return f"{value:+d}" if isinstance(value, int) else f"{value:+.4f}"


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Rows padded to columns (each at most MAX_CELL wide)."""
    if not rows:
        return []
    widths = [min(MAX_CELL, max(len(row[i]) for row in rows)) for i in range(len(rows[0]))]
    return [(indent + "  ".join(clip(c, w).ljust(w) for c, w in zip(row, widths, strict=True))).rstrip()
            for row in rows]


# ---- the sections ----------------------------------------------------------------------------------------------
def render(comparison: dict[str, Any], *, show_all: bool = False) -> list[str]:
    """The table ``tfpipe compare`` prints, made from `compare_sides`'s dict alone (or that dict read back from
    ``--json``)."""
    return [*header_lines(comparison), *parameter_lines(comparison["parameters"], show_all),
            *source_lines(comparison["sources"]), *data_lines(comparison["data"]),
            *metric_lines(comparison["metrics"]), *per_class_lines(comparison["per_class"], show_all),
            *artifact_lines(comparison["artifacts"])]


def header_lines(comparison: dict[str, Any]) -> list[str]:
    lines = []
    for s in SIDES:
        head = comparison[s]
        what = f"run {head['run_id']} ({head['name']})" if head["kind"] == "run" else f"{head['kind']} {head['label']}"
        lines.append(f"{SIDE_TITLES[s]}: {what}")
    rows = [("", SIDE_TITLES["a"], SIDE_TITLES["b"])]
    for label, field in (("pipeline", "pipeline"), ("time", "time"), ("exit code", "exit_code"),
                         ("published", "published"), ("source location", "source_location")):
        rows.append((label, cell(comparison["a"][field]), cell(comparison["b"][field])))
    rows.append(("model health", health_text(comparison["a"]["health"]), health_text(comparison["b"]["health"])))
    lines += table(rows)
    for s in SIDES:
        lines += [f"  {SIDE_TITLES[s]}: model health: {warning}" for warning in comparison[s]["health"] or []]
    for s in SIDES:
        gone = comparison[s]["gone"] or []
        if gone:
            lines.append(f"{SIDE_TITLES[s]}: {len(gone)} of this run's artifacts are gone (removed by tfpipe gc?): "
                         f"{', '.join(gone)}; shown is what its run record and remaining artifacts know")
    return lines


def health_text(warnings: list[str] | None) -> str:
    if warnings is None:
        return "-"
    return f"{len(warnings)} warning(s)" if warnings else "no warnings"


def parameter_lines(params: dict[str, Any], show_all: bool) -> list[str]:
    differ, equal, unknown = params["differ"], params["equal"], params["unknown"]
    head = f"parameters: {len(differ)} differ, {len(equal)} equal"
    head += f", {len(unknown)} known to one side only (artifact gone, or after an evaluation)" if unknown else ""
    head += "; --all shows every one" if equal and not show_all else ""
    rows = [(name, cell(values["a"]), cell(values["b"])) for name, values in differ.items()]
    if show_all:
        rows += [(name, cell(value), cell(value)) for name, value in equal.items()]
    return ["", head, *table(rows)]


def source_lines(sources: dict[str, Any]) -> list[str]:
    if sources["same"]:
        return ["", "source fingerprints: same" + ("" if sources["a"] else " (none recorded)")]
    roles = list(sources["a"]) + [role for role in sources["b"] if role not in sources["a"]]
    return ["", "source fingerprints: differ",
            *table([(role, cell(sources["a"].get(role)), cell(sources["b"].get(role))) for role in roles])]


def data_lines(data: dict[str, Any]) -> list[str]:
    known = data["known"]
    if not any(known.values()):
        return ["", "data: neither side has a data check (no datacheck artifact or recorded summary)"]
    only = [SIDE_TITLES[s] for s in SIDES if known[s]]
    lines = ["", "data" + (f" (only {only[0]} checked its data)" if len(only) == 1 else "")]
    rows = [("classes", cell(data["classes"]["a"]), cell(data["classes"]["b"]), "")]
    for split in data["splits"]:
        rows.append((f"examples {split['split']}", cell(split["examples"]["a"]), cell(split["examples"]["b"]),
                     signed(split["examples"]["delta"])))
    for split in data["splits"]:
        rows.append((f"pixel mean {split['split']}", cell(split["pixel_mean"]["a"]), cell(split["pixel_mean"]["b"]),
                     ""))
    lines += table(rows)
    for key, title in (("appeared", "classes only in B"), ("vanished", "classes only in A")):
        if data["classes"][key]:
            lines.append(f"  {title}: {', '.join(data['classes'][key])}")
    for split in data["splits"]:
        if split["moved"]:
            moved = "; ".join(f"{row['class']} {row['a']:.1%} -> {row['b']:.1%}" for row in split["moved"])
            lines.append(f"  moved most ({split['split']}): {moved}")
    for s in SIDES:
        lines += [f"  {SIDE_TITLES[s]}: warning: {warning}" for warning in data["warnings"][s]]
    return lines


def metric_lines(metrics: dict[str, Any]) -> list[str]:
    if not metrics["rows"]:
        return ["", "metrics: neither side has an evaluation"]
    rows = [("", SIDE_TITLES["a"], SIDE_TITLES["b"], "B - A")]
    rows += [(row["metric"] + (" *" if row["dataset_metric"] else ""), cell(row["a"]), cell(row["b"]),
              signed(row["delta"])) for row in metrics["rows"]]
    title = "metrics" + (" (* the dataset's metric)" if metrics["dataset_metric"] else "")
    return ["", title, *table(rows)]


def per_class_lines(per_class: dict[str, Any], show_all: bool) -> list[str]:
    if per_class["unknown"]:
        missing = " and ".join(SIDE_TITLES[s] for s in per_class["unknown"])
        return ["", f"per class: not known for {missing} (no evaluation: the run stopped before it, or its "
                    "evaluate artifact is gone)"]
    rows = per_class["rows"]
    shown = rows if show_all else rows[:PER_CLASS_SHOWN]
    more = f", {len(shown)} shown (--all shows every one)" if len(shown) < len(rows) else ""
    table_rows = [("class", "recall A", "recall B", "B - A", "precision A", "precision B", "B - A")]
    table_rows += [(row["class"], cell(row["recall_a"]), cell(row["recall_b"]), signed(row["recall_delta"]),
                    cell(row["precision_a"]), cell(row["precision_b"]), signed(row["precision_delta"]))
                   for row in shown]
    return ["", f"per class, largest change first: {len(rows)} classes{more}", *table(table_rows)]


def artifact_lines(artifacts: dict[str, Any]) -> list[str]:
    rows = [(row["stage"], cell(row["a"]), cell(row["b"])) for row in artifacts["differ"]]
    return ["", f"artifacts: {len(artifacts['differ'])} differ, {artifacts['same']} same", *table(rows)]
