"""What ``tfpipe run`` reports: the artifacts and outputs of a finished run, the model's health warnings, the
publish gate's verdict, and the run's line in ``runs/<name>.jsonl`` (``tfpipe history``, ``tfpipe gc``)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from luigi.task import flatten

from pipelines.commands.dag import artifact_names, artifact_tasks, run_log_holder
from pipelines.registry import get_dataset
from pipelines.stages import Pipeline
from pipelines.tracking import track_run
from tasks.datacheck.files import DATA_REPORT_FILE
from tasks.datacheck.task import DataCheck
from tasks.sources.task import RAW_DATA
from tasks.store.runlog import append_run
from tasks.store.task import ArtifactTask, opened_root

DATACHECK_STAGE = DataCheck.stage
DRIFT_ROW_FIELDS = ("check", "split", "distance", "threshold", "drifted", "detail")


def run_name(args: argparse.Namespace) -> str:
    """Runs are recorded under the published name when there is one, else the pipeline's."""
    return getattr(args, "name", "") or args.pipeline


def record_run(args: argparse.Namespace, nodes: list[ArtifactTask], *, ran: list[ArtifactTask], code: int,
               drift: dict[str, Any] | None = None) -> None:
    """One line in ``runs/<name>.jsonl``: what ``tfpipe history`` shows and ``tfpipe gc`` keeps."""
    done = [node for node in nodes if node.complete()]
    record: dict[str, Any] = {
        "run_id": getattr(args, "run_id", ""), "source_location": args.source or "",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pipeline": args.pipeline, "exit_code": code,
        "source": sorted({digest for node in nodes if node.provides == RAW_DATA
                          for role, digest in node.identity.upstream.items() if role.startswith("source:")}),
        "stages_ran": [node.stage for node in ran],
        "artifacts": artifact_names(done),
    }
    metric = get_dataset(args.pipeline).metric  # the one the publish gate compares
    for node in done:
        manifest = node.output().manifest()
        if node.provides == "evaluation" and metric in manifest.get("metrics", {}):
            record["metrics"] = {metric: manifest["metrics"][metric]}
        if node.provides == "evaluation" and "health" in manifest:
            record["health"] = manifest["health"]
        if node.stage == DATACHECK_STAGE:
            record["data_summary"] = manifest.get("data_summary")
            record["data_warnings"] = list(manifest.get("warnings", []))
            record["dropped"] = manifest.get("dropped")
        if node.provides == "published":
            record["published"] = manifest.get("published")
            record["published_version"] = manifest.get("published_version")
    if drift is not None:
        record["drift"] = {k: v for k, v in drift.items() if k != "rows"} | {
            "rows": [{k: v for k, v in row.items() if k in DRIFT_ROW_FIELDS} for row in drift["rows"]]}
        record["data_warnings"] = [*record.get("data_warnings", []), *drift["warnings"]]
    append_run(run_log_holder(), run_name(args), record)
    track_run(args.pipeline, nodes, ran)  # one MLflow run when [mlflow] tracking_uri is set


def publish_exit_code(nodes: Sequence[ArtifactTask]) -> int:
    """0, or ``[PublishGate] refused_exit_code`` when this run's publish gate refused the model."""
    from tasks.export.publish_task import Publish, PublishGate

    for node in nodes:
        if isinstance(node, Publish) and not node.output().manifest().get("published", True):
            print(f"tfpipe: {node.published_name()} not published: {node.output().manifest()['reason']}",
                  file=sys.stderr)
            return PublishGate().refused_exit_code
    return 0


def print_outputs(task: Pipeline) -> None:
    """Every stage's artifact, the stages' notices, the health warnings, then the report and model."""
    nodes = artifact_tasks(task)
    for node in nodes:
        print(f"  {node.stage:<10} {node.artifact_location}")
    for node in nodes:
        for notice in node.output().manifest().get("notices", []):
            print(f"note: {node.task_family}: {notice}")
    print_data_warnings(nodes)
    print_health_warnings(nodes)
    for label, path in outputs_of(task):
        print(f"{label}: {path}")


def print_data_warnings(nodes: Sequence[ArtifactTask]) -> None:
    """The data check's warnings (tasks/datacheck/): one line each, on stderr, and where its report is."""
    for node in nodes:
        if node.stage == DATACHECK_STAGE and node.complete():
            warnings = node.output().manifest().get("warnings", [])
            for warning in warnings:
                print(f"tfpipe: warning: data check: {warning}", file=sys.stderr)
            if warnings:
                print(f"tfpipe: data report: {node.artifact_location}/{DATA_REPORT_FILE}", file=sys.stderr)


def print_health_warnings(nodes: Sequence[ArtifactTask]) -> None:
    """The evaluation's verdict on the model (tasks/evaluation/health.py): one line per warning, on stderr, when the
    run made the model (an up-to-date run prints its one line; ``tfpipe history`` keeps every verdict)."""
    for node in nodes:
        if node.provides == "evaluation" and node.complete():
            for warning in (node.output().manifest().get("health") or {}).get("warnings", []):
                print(f"tfpipe: warning: model health: {warning}", file=sys.stderr)


def outputs_of(task: Pipeline) -> list[tuple[str, str]]:
    """The report and model a finished run ends with, as absolute paths (or URLs on a bucket)."""
    found = []
    artifacts = opened_root().artifacts
    for node in flatten(task.requires()):
        manifest = node.output().manifest()
        for label, name in (("report", "report_html"), ("model", "model_dir")):
            if name not in manifest:
                continue
            if artifacts is None:
                found.append((label, str((node.artifact_dir / manifest[name]).resolve())))
            else:
                found.append((label, artifacts.file_url(node.identity, manifest, manifest[name])))
    return found


def final_outputs(task: Pipeline) -> str:
    """`` (report: ..., model: ...)`` for the up-to-date line, or nothing."""
    shown = ", ".join(f"{label}: {path}" for label, path in outputs_of(task))
    return f" ({shown})" if shown else ""
