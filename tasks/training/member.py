"""What each member of a ``multi_worker`` or ``parameter_server`` training cluster runs, around the rendezvous of
tasks/training/cluster.py: the chief inside Train (``lead_cluster``), every other member in ``tfpipe
cluster-member`` (``join_cluster``). No Luigi; TensorFlow inside the functions only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.formats.dataset_info import DatasetInfo
from tasks.runtime.error_text import describe_error
from tasks.training import cluster as rendezvous
from tasks.training.plan import TrainingPlan
from tasks.training.strategies import is_cluster_strategy

if TYPE_CHECKING:
    from tasks.training.fit import TrainConfig


def lead_cluster(plan: TrainingPlan, config: TrainConfig, info: DatasetInfo, work_dir: Path, model_file: Path,
                 directory: Path, *, on_epoch: Callable[[int, dict], None] | None = None,
                 status: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The chief's part: announce the run in the rendezvous ``directory``, wait for every member (saying who is
    missing to ``status``), train in a fresh process, say how it ended. Returns the custom loop's stats."""
    from tasks.runtime.fresh_process import run_in_fresh_process
    from tasks.training.custom_loop import train_on_cluster

    plan.check_cluster_options()
    members = rendezvous.cluster_from_env(plan.strategy)
    if not members.is_chief:
        raise rendezvous.ClusterError(
            f"this process is {members.me.name} of the {plan.strategy} cluster; only the chief, "
            f"{members.chief.name}, runs Train: run `tfpipe cluster-member` here instead")
    run = rendezvous.announce_chief(directory, members)
    try:
        rendezvous.wait_for_members(directory, members, run, plan.cluster_timeout, on_wait=None if status is None
                                    else lambda missing: status(f"waiting for {', '.join(m.name for m in missing)}"))
        rendezvous.start(directory, run)
        stats = run_in_fresh_process(train_on_cluster, plan.job(config, info, work_dir, is_chief=True,
                                                                model_file=model_file), on_report=on_epoch)
    except BaseException as error:
        rendezvous.finish(directory, run, describe_error(error, named=True))
        raise
    rendezvous.finish(directory, run, None)
    return stats


def join_cluster(plan: TrainingPlan, work_dir: Path, directory: Path, timeout_s: float,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """A cluster member's whole part in ``plan`` (not the chief's), through the rendezvous ``directory``: wait for
    the chief's run, then train in lock step (multi_worker) or serve variables and steps (parameter_server) until
    the chief ends its run. Nothing is written to the store; multi-worker checkpoints go to a scratch directory
    that is removed at the end (``work_dir`` is the chief's, which a restarted member resumes from)."""
    import tempfile

    from tasks.data.shards import load_dataset_info
    from tasks.training.custom_loop import serve, train_on_cluster

    if not is_cluster_strategy(plan.strategy):
        raise ValueError(f"Train.strategy={plan.strategy} trains on one host: there is no cluster to join "
                         "(set Train.strategy=multi_worker or parameter_server, as on the chief)")
    plan.check_cluster_options()
    members = rendezvous.cluster_from_env(plan.strategy)
    if members.is_chief:
        raise rendezvous.ClusterError(f"this process is the chief, {members.chief.name}: run `tfpipe run` here")
    log(f"{members.me.name}: waiting for the chief ({members.chief.name}) in {directory}")
    if plan.strategy == "multi_worker":
        rendezvous.join(directory, members, timeout_s)
        info = load_dataset_info(plan.examples_dir)
        import tensorflow as tf

        with tempfile.TemporaryDirectory(prefix="tfpipe-member-") as scratch:
            try:
                result = train_on_cluster(plan.job(plan.train_config(info), info, work_dir, is_chief=False,
                                                   scratch_dir=Path(scratch)))
            except tf.errors.OpError as error:  # a peer died or the chief stopped mid-step
                raise rendezvous.ClusterError(f"{members.me.name}: the cluster failed mid-training "
                                              f"({type(error).__name__}: {error.message.splitlines()[0]}); "
                                              "restart this member and the chief") from error
        log(f"{members.me.name}: trained {result['steps']} steps; weights sha256 {result['weights_sha256']}")
        return result
    run = rendezvous.wait_for_chief(directory, members, timeout_s)
    server = serve(members.task_type, members.task_index)
    log(f"{members.me.name}: serving at {server.target}")
    while True:
        rendezvous.answer_chief(directory, members, run)
        while (ended := rendezvous.outcome(directory, run)) is None:
            newer = rendezvous.current_run(directory)
            if newer and newer != run:  # the chief was restarted: serve its new run
                log(f"{members.me.name}: the chief started again (run {newer})")
                run = newer
                break
            time.sleep(rendezvous.POLL_S)
        if ended is not None:
            if not ended["ok"]:
                raise rendezvous.ClusterError(f"the chief's run ended with an error: {ended['error']}")
            log(f"{members.me.name}: the chief finished; stopping")
            return {"served_run": run}
