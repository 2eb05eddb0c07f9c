"""``tfpipe status``: every stage of the pipeline, done or to-do. Reads manifests and stats sources only: it
never imports TensorFlow."""

from __future__ import annotations

import argparse

from pipelines.commands.common import Subparsers, add_pipeline_arguments
from pipelines.commands.dag import artifact_tasks, top_task

NAME = "status"


def add_parser(subparsers: Subparsers) -> None:
    add_pipeline_arguments(subparsers.add_parser(NAME, help="every stage, done or to-do"))


def run(args: argparse.Namespace) -> int:
    pending = 0
    for node in artifact_tasks(top_task(args)):
        done = node.complete()
        pending += not done
        print(f"{'done ' if done else 'to-do'}  {node.stage:<10} {node.task_family:<16} {node.artifact_location}")
    print(f"{pending} stage(s) to do" if pending else "up to date: every stage is done")
    return 0
