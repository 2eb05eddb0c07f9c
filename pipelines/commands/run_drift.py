"""Data drift of a ``tfpipe run``: this run's data check against the previous recorded run of the same pipeline
and source (tasks/datacheck/drift.py). Computed per run, never stored in an artifact, so an unchanged source
stays a no-op; printed in the run's summary, recorded in the run log (``tfpipe history``), and, with
``DataCheck.on_drift=fail``, it stops the run before training.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.commands.dag import run_log_holder
from tasks.datacheck.drift import compare_summaries
from tasks.datacheck.files import DATACHECK_FILE
from tasks.datacheck.policies import FAIL
from tasks.datacheck.task import DataCheck
from tasks.store.layout import REPORTS_DIR
from tasks.store.runlog import runs_newest_first
from tasks.store.task import ArtifactTask, opened_root

DRIFT_REPORTS = f"{REPORTS_DIR}/drift"  # reports/drift/<name>/<run id>.html: a run's data report with its drift


def datacheck_node(nodes: Sequence[ArtifactTask]) -> DataCheck | None:
    return next((node for node in nodes if isinstance(node, DataCheck)), None)


def previous_summary(name: str, source: str) -> dict[str, Any] | None:
    """The data summary of the last successful run of ``name`` from the same ``source`` that checked its data (a run
    stopped by drift is no baseline: the next run is compared with the last good one again)."""
    for record in runs_newest_first(run_log_holder(), name):
        if record.get("data_summary") and record.get("source_location", "") == source and not record["exit_code"]:
            return dict(record["data_summary"])
    return None


def judge_drift(args: argparse.Namespace, name: str, nodes: Sequence[ArtifactTask]) -> dict[str, Any] | None:
    """This run's drift, printed; ``failed`` says whether ``DataCheck.on_drift=fail`` stops the run. None when the run
    does not check its data (yet), when no earlier run did, or when the data is the baseline's own (the same data
    check artifact: nothing can have drifted, and nothing more is read)."""
    node = datacheck_node(nodes)
    if node is None:
        return None
    previous = previous_summary(name, args.source or "")
    if previous is None or previous.get("datacheck") == node.artifact_key or not node.complete():
        return None
    current = node.output().manifest().get("data_summary")
    if not current:
        return None
    drift = compare_summaries(previous, current, node.drift_thresholds())
    drift["failed"] = bool(drift["warnings"]) and node.on_drift == FAIL
    drift["report"] = str(write_drift_report(node, name, drift, getattr(args, "run_id", "run")))
    for line in drift["warnings"]:
        print(f"tfpipe: {'error' if drift['failed'] else 'warning'}: {line}", file=sys.stderr)
    if drift["warnings"]:
        print(f"tfpipe: data drift report: {drift['report']}", file=sys.stderr)
    return drift


def write_drift_report(node: DataCheck, name: str, drift: dict[str, Any], run_id: str) -> Path:
    """The data report with this run's drift table, under the root's reports (this host's folder of it)."""
    from tasks.datacheck.report import report_pictures, write_data_report  # matplotlib: only when drawing

    artifact = node.local_artifact()
    report = json.loads((artifact / DATACHECK_FILE).read_text(encoding="utf-8"))
    path = opened_root().local / DRIFT_REPORTS / name / f"{run_id}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_data_report(path, report, title=f"{name}: data check and drift ({run_id})",
                             pictures=report_pictures(artifact), drift=drift)
