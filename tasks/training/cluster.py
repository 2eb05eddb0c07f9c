"""The training cluster of ``multi_worker`` and ``parameter_server`` runs: who is who, from ``TF_CONFIG``, and the
rendezvous through which the chief knows that every member is up. No TensorFlow, no Luigi.

TF_CONFIG is TensorFlow's own description of a cluster (``{"cluster": {"chief": [...], "worker": [...], "ps":
[...]}, "task": {"type": "worker", "index": 1}}``). The chief is the ``chief`` task, or worker 0 when the cluster
has no ``chief`` job (MultiWorkerMirroredStrategy's convention). Only the chief runs the Luigi Train task and
commits its artifact.

Rendezvous, in a directory on the shared artifact root (``<root>/.cluster/<Train task>/``), outside the store:

- the chief writes ``chief.json`` (a new ``run`` id each time it starts) once Train's inputs are complete;
- every other member, started with ``tfpipe cluster-member`` and the same pipeline and parameters (hence the same
  directory), waits for it and answers with ``<type>-<index>.json`` naming that run id;
- the chief waits for every member's answer, with a timeout naming the ones that did not come, then writes
  ``go.json`` and trains; a multi-worker member starts only on the ``go`` of the run it answered (an answer to a
  dead chief's run is answered again when the restarted chief announces its own);
- at the end the chief writes ``done.json`` (the run id, success or the error); members that only serve
  (parameter servers, and workers of a parameter-server cluster) exit on it.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.store.layout import CLUSTER_DIR
from tasks.training.files import CHIEF_FILE, DONE_FILE, GO_FILE

TF_CONFIG = "TF_CONFIG"
POLL_S = 0.2


class ClusterError(RuntimeError):
    """The cluster is misdescribed, or a member did not come or went away."""


@dataclass(frozen=True)
class Member:
    type: str
    index: int
    address: str

    @property
    def name(self) -> str:
        return f"{self.type} {self.index} ({self.address})"

    @property
    def file_name(self) -> str:
        return f"{self.type}-{self.index}.json"


@dataclass(frozen=True)
class Cluster:
    jobs: Mapping[str, tuple[str, ...]]
    task_type: str
    task_index: int

    @property
    def members(self) -> list[Member]:
        return [Member(job, index, address) for job in sorted(self.jobs) for index, address in
                enumerate(self.jobs[job])]

    @property
    def chief(self) -> Member:
        if "chief" in self.jobs:
            return Member("chief", 0, self.jobs["chief"][0])
        return Member("worker", 0, self.jobs["worker"][0])

    @property
    def me(self) -> Member:
        return Member(self.task_type, self.task_index, self.jobs[self.task_type][self.task_index])

    @property
    def is_chief(self) -> bool:
        return self.me == self.chief

    @property
    def others(self) -> list[Member]:
        return [member for member in self.members if member != self.me]

    @property
    def num_workers(self) -> int:
        """The processes that compute gradients: the workers, and the chief in a multi-worker cluster."""
        return len(self.jobs.get("worker", ())) + (len(self.jobs.get("chief", ())) if "ps" not in self.jobs else 0)


def parse_tf_config(text: str | None, strategy: str) -> Cluster:
    """The cluster ``TF_CONFIG`` describes, checked for ``strategy`` (multi_worker or parameter_server)."""
    if not text:
        raise ClusterError(f"strategy {strategy} needs the cluster in the {TF_CONFIG} environment variable, e.g. "
                           '{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", '
                           '"index": 0}} (docs/DISTRIBUTED.md)')
    try:
        config = json.loads(text)
        jobs = {str(job): tuple(str(a) for a in addresses) for job, addresses in dict(config["cluster"]).items()}
        task_type, task_index = str(config["task"]["type"]), int(config["task"]["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ClusterError(f"{TF_CONFIG} is not a cluster description ({error}): {text[:200]!r}") from error
    unknown = sorted(set(jobs) - {"chief", "worker", "ps", "evaluator"})
    if unknown:
        raise ClusterError(f"{TF_CONFIG}: unknown job(s) {unknown}; tfpipe clusters have chief, worker and ps")
    if "evaluator" in jobs:
        raise ClusterError(f"{TF_CONFIG}: an evaluator job is not supported; Evaluate is a stage of its own")
    if task_type not in jobs or not 0 <= task_index < len(jobs[task_type]):
        raise ClusterError(f"{TF_CONFIG}: task {task_type} {task_index} is not in the cluster {dict(jobs)}")
    if len(jobs.get("chief", ())) > 1:
        raise ClusterError(f"{TF_CONFIG}: a cluster has at most one chief, got {len(jobs['chief'])}")
    if strategy == "multi_worker" and ("ps" in jobs or not jobs.get("worker")):
        raise ClusterError(f"{TF_CONFIG}: multi_worker needs worker tasks and no ps; got jobs {sorted(jobs)}")
    if strategy == "parameter_server" and not (jobs.get("chief") and jobs.get("worker") and jobs.get("ps")):
        raise ClusterError(f"{TF_CONFIG}: parameter_server needs a chief, workers and ps tasks; got jobs "
                           f"{sorted(jobs)}")
    return Cluster(jobs, task_type, task_index)


def cluster_from_env(strategy: str, environ: Mapping[str, str] = os.environ) -> Cluster:
    return parse_tf_config(environ.get(TF_CONFIG), strategy)


def rendezvous_dir(root: Path, task_name: str) -> Path:
    return Path(root) / CLUSTER_DIR / task_name


def _write_json(path: Path, record: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(record, sort_keys=True))
    os.replace(temporary, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def announce_chief(directory: Path, cluster: Cluster) -> str:
    """Start a new run of the cluster; returns its id. Answers and the end of earlier runs are removed."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in [directory / DONE_FILE, directory / GO_FILE, *(directory / m.file_name for m in cluster.others)]:
        stale.unlink(missing_ok=True)
    run = uuid.uuid4().hex
    _write_json(directory / CHIEF_FILE, {"run": run, "host": socket.gethostname(), "pid": os.getpid(),
                                         "started": time.time(), "cluster": {k: list(v) for k, v in
                                                                             cluster.jobs.items()}})
    return run


def wait_for_members(directory: Path, cluster: Cluster, run: str, timeout_s: float,
                     on_wait: Callable[[list[Member]], None] | None = None) -> None:
    """Block until every other member answered run ``run``; ClusterError naming the missing ones on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [m for m in cluster.others if (_read_json(directory / m.file_name) or {}).get("run") != run]
        if not missing:
            return
        if time.monotonic() > deadline:
            names = ", ".join(m.name for m in missing)
            raise ClusterError(f"{names} did not join within {timeout_s:g} s: start `tfpipe cluster-member` there "
                               f"with the same pipeline and parameters as the chief, and {TF_CONFIG} naming that task "
                               f"(rendezvous directory {directory})")
        if on_wait is not None:
            on_wait(missing)
        time.sleep(POLL_S)


def wait_for_chief(directory: Path, cluster: Cluster, timeout_s: float, after: str | None = None) -> str:
    """The id of the chief's run (a different one than ``after``), once it is announced; ClusterError on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = (_read_json(directory / CHIEF_FILE) or {}).get("run")
        if run and run != after:
            return str(run)
        if time.monotonic() > deadline:
            raise ClusterError(f"the chief, {cluster.chief.name}, did not start training within {timeout_s:g} s "
                               f"(nothing in {directory}): run `tfpipe run` there with the same pipeline and "
                               f"parameters")
        time.sleep(POLL_S)


def answer_chief(directory: Path, cluster: Cluster, run: str) -> None:
    _write_json(directory / cluster.me.file_name, {"run": run, "host": socket.gethostname(), "pid": os.getpid(),
                                                   "joined": time.time()})


def start(directory: Path, run: str) -> None:
    """Every member answered run ``run``: they may start."""
    _write_json(directory / GO_FILE, {"run": run, "started": time.time()})


def join(directory: Path, cluster: Cluster, timeout_s: float) -> str:
    """A member's side of the rendezvous: answer the chief's run and wait for its ``go``; a chief that starts
    again meanwhile is answered again. Returns the run id that started; ClusterError on timeout."""
    deadline = time.monotonic() + timeout_s
    run = wait_for_chief(directory, cluster, timeout_s)
    while True:
        answer_chief(directory, cluster, run)
        while (_read_json(directory / GO_FILE) or {}).get("run") != run:
            newer = current_run(directory)
            if newer and newer != run:
                run = newer
                break
            if time.monotonic() > deadline:
                raise ClusterError(f"the chief, {cluster.chief.name}, announced run {run} but did not start it "
                                   f"within {timeout_s:g} s (is it still waiting for another member?)")
            time.sleep(POLL_S)
        else:
            return run


def finish(directory: Path, run: str, error: str | None) -> None:
    _write_json(directory / DONE_FILE, {"run": run, "ok": error is None, "error": error, "ended": time.time()})


def outcome(directory: Path, run: str) -> dict[str, Any] | None:
    """``done.json`` of run ``run``, once the chief wrote it."""
    record = _read_json(directory / DONE_FILE)
    return record if record and record.get("run") == run else None


def current_run(directory: Path) -> str | None:
    return (_read_json(directory / CHIEF_FILE) or {}).get("run")
