"""The figures table of docs/RELIABILITY.md from a reliability run's scenario log (and the fuzz summary).

    TFPIPE_RELIABILITY_LOG=/tmp/rel.jsonl .venv/bin/python -m pytest -m reliability
    .venv/bin/python bench/fuzz/run.py --seconds 60 --out /tmp/fuzz.json     # appends its rows to the log too
    .venv/bin/python bench/reliability_figures.py /tmp/rel.jsonl

Each line of the log is one scenario, written by the ``figures`` fixture of tests/reliability/conftest.py (or by
the fuzz runner): its category, outcome and details. A scenario retried by its test is counted once, with its
last outcome.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

GOOD = {"fault": {"survived"}, "bad_input": {"refused", "recovered", "skipped"}, "race": {"ok"}, "fuzz": {"ok"}}
TITLES = {"fault": "fault scenarios (kill -9, SIGTERM, luigid, disk, file systems)",
          "bad_input": "bad inputs", "race": "race repeats", "fuzz": "fuzz targets"}


def load(path: Path) -> list[dict]:
    rows: dict[tuple, dict] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        # One scenario per test id (a rerun of it replaces the earlier outcome); every race repeat counts.
        key = (row["category"], row.get("test"), row.get("name"), row.get("target"))
        rows[key if row["category"] != "race" else (number,)] = row
    return list(rows.values())


def table(rows: list[dict]) -> str:
    by_category: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_category[row["category"]].append(row)
    lines = ["| what | run | good | outcomes |", "|---|---|---|---|"]
    for category in ("fault", "bad_input", "race", "fuzz"):
        found = by_category.get(category, [])
        outcomes = Counter(row["outcome"] for row in found)
        good = sum(count for outcome, count in outcomes.items() if outcome in GOOD[category])
        shown = ", ".join(f"{outcome} {count}" for outcome, count in sorted(outcomes.items()))
        lines.append(f"| {TITLES[category]} | {len(found)} | {good} | {shown or '-'} |")
    races = by_category.get("race", [])
    if races:
        for scheduler in sorted({str(row.get("scheduler")) for row in races}):
            mine = [row for row in races if str(row.get("scheduler")) == scheduler]
            doubles = sum(int(row.get("double_runs", 0)) for row in mine)
            lines.append(f"| races under {scheduler}: double runs | {len(mine)} | - | {doubles} double runs |")
    fuzz = by_category.get("fuzz", [])
    if fuzz:
        executions = sum(int(row.get("executions", 0)) for row in fuzz)
        lines.append(f"| fuzz executions | {executions:,} | - | crashes "
                     f"{sum(row['outcome'] == 'crash' for row in fuzz)}, hangs "
                     f"{sum(row['outcome'] == 'hang' for row in fuzz)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    print(table(load(parser.parse_args().log)))


if __name__ == "__main__":
    main()
