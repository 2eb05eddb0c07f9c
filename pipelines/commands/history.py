"""``tfpipe history NAME``: every recorded run of a pipeline (or published name), as a table or JSON; each run's
id first (``tfpipe compare RUN_A RUN_B`` takes two of them)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pipelines.commands.common import Subparsers, add_artifacts_argument
from pipelines.commands.dag import run_log_holder
from tasks.store.runlog import read_runs
from tasks.store.task import ArtifactStore

NAME = "history"
RUN_ID_WIDTH = 22  # YYYYmmddTHHMMSS-xxxxxx (pipelines/commands/run.py new_run_id)


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="every recorded run of a pipeline (or published name)")
    parser.add_argument("name")
    parser.add_argument("--json", action="store_true")
    add_artifacts_argument(parser)


def run(args: argparse.Namespace) -> int:
    runs = read_runs(run_log_holder(), args.name)
    if not runs:  # a misspelt name must not look like an empty history
        raise ValueError(f"no recorded runs of {args.name!r} under {ArtifactStore().root}")
    if args.json:
        print(json.dumps(runs, indent=2, ensure_ascii=False))
        return 0
    print(f"{'run id':<{RUN_ID_WIDTH}} {'time':<25} {'exit':>4}  {'metric':<24} {'published':<10} "
          "stages that ran; model health; data warnings")
    for record in runs:
        print(history_line(record))
    return 0


def history_line(record: dict[str, Any]) -> str:
    """One recorded run: its id (``tfpipe compare`` takes it; ``-`` for a record older than run ids), time, exit
    status, metric, published version, the stages that ran, health warnings, the data check's and drift's warnings."""
    metric = ", ".join(f"{k} {v:.4f}" for k, v in (record.get("metrics") or {}).items()) or "-"
    published = ("v" + str(record["published_version"]) if record.get("published") else
                 "refused" if record.get("published") is False else "-")
    stages = ", ".join(record.get("stages_ran", [])) or "none (up to date)"
    health = "; ".join((record.get("health") or {}).get("warnings", []))
    data = "; ".join(f"data: {warning}" for warning in record.get("data_warnings") or [])
    run_id = record.get("run_id") or "-"
    return (f"{run_id:<{RUN_ID_WIDTH}} {record['time']:<25} {record['exit_code']:>4}  {metric:<24} {published:<10} "
            f"{stages}"
            + (f"; {health}" if health else "") + (f"; {data}" if data else ""))
