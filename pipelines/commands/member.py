"""``tfpipe cluster-member``: a worker or parameter server of a multi_worker or parameter_server Train, as
TF_CONFIG's task; it exits 0 once the chief's run is done."""

from __future__ import annotations

import argparse

import luigi.retcodes

from pipelines.commands.common import Subparsers, add_pipeline_arguments, print_error
from pipelines.commands.dag import artifact_tasks, top_task

NAME = "cluster-member"


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="a worker or parameter server of a multi_worker or "
                                              "parameter_server Train (TF_CONFIG names which)")
    add_pipeline_arguments(parser)
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds to wait for the chief to start training (its upstream stages run first)")


def run(args: argparse.Namespace) -> int:
    """Join the cluster of the pipeline's Train task, as TF_CONFIG's task; exit 0 once the chief's run is done."""
    from tasks.training.member import join_cluster
    from tasks.training.task import Train

    trains: list[Train | None] = [node for node in artifact_tasks(top_task(args)) if isinstance(node, Train)]
    [train] = trains or [None]
    if train is None:
        raise ValueError(f"the {args.pipeline} pipeline up to {args.until or 'its end'} has no Train stage")
    if train.complete():
        print(f"{train.task_id} is already done: {train.artifact_dir}")
        return 0
    try:
        join_cluster(train.training_plan(), train.work_dir(), train.rendezvous(), args.timeout,
                     log=lambda line: print(line, flush=True))
    except RuntimeError as error:  # ClusterError, TrainingDivergedError, a dead training process
        print_error(error, named=True)
        return luigi.retcodes.retcode().task_failed
    return 0
