"""The DAG a command works on: the pipeline's wrapper task for the command line, and its stages in order."""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import luigi
from luigi.task import flatten

from pipelines.stages import Pipeline, pipeline_task
from tasks.store.task import ArtifactTask, opened_root

if TYPE_CHECKING:
    from tasks.store.bucket import Bucket


def run_digest(wrapper: Pipeline) -> str:
    """A digest of the task ids ``wrapper`` builds: two runs whose ``--set`` differ get two wrapper ids."""
    built = sorted(task.task_id for task in flatten(wrapper.requires()))
    return hashlib.sha256("\n".join(built).encode()).hexdigest()[:16]


def top_task(args: argparse.Namespace) -> Pipeline:
    """The wrapper task of ``args.pipeline`` with the command line's source, stage and switches."""
    wrapper = pipeline_task(args.pipeline)
    params = dict(source=args.source or "", checksum=",".join(args.checksum or []), until=args.until,
                  backbone=args.backbone or "", publish=bool(getattr(args, "publish", False)),
                  name=getattr(args, "name", "") or "")
    # A central luigid knows a task by its id alone: two runs whose --set differ need two wrapper ids, or the
    # second is "not granted run permission" for a wrapper whose dependencies are not its own.
    return wrapper(**params, run_digest=run_digest(wrapper(**params)))


def walk(task: luigi.Task) -> list[luigi.Task]:
    """Every task of the DAG below ``task``, dependencies before dependents, each once."""
    ordered: list[luigi.Task] = []
    seen: set[str] = set()

    def visit(node: luigi.Task) -> None:
        if node.task_id in seen:
            return
        seen.add(node.task_id)
        for dependency in flatten(node.requires()):
            visit(dependency)
        ordered.append(node)

    visit(task)
    return ordered


def artifact_tasks(task: luigi.Task) -> list[ArtifactTask]:
    """The stages of the DAG below ``task`` (the tasks that make artifacts), dependencies first."""
    return [node for node in walk(task) if isinstance(node, ArtifactTask)]


def run_log_holder() -> Path | Bucket:
    """Where the run log and leases live: the local root folder, or the bucket."""
    root = opened_root()
    return root.local if root.bucket is None else root.bucket


def artifact_names(nodes: Sequence[ArtifactTask]) -> list[str]:
    """What a lease and the run log name the stages' artifacts by (``tfpipe gc`` keeps them): their folders,
    or on a bucket their paths relative to the root."""
    artifacts = opened_root().artifacts
    if artifacts is None:
        return [str(node.artifact_dir.resolve()) for node in nodes]
    return [artifacts.prefix(node.identity) for node in nodes]
