"""The members of a training cluster (tasks/training/member.py) against a rendezvous directory, without Luigi and
without a TensorFlow server: the chief's side is played by the test through tasks/training/cluster.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks.formats.dataset_info import DatasetInfo
from tasks.training import cluster as rendezvous
from tasks.training.member import join_cluster, lead_cluster
from tasks.training.plan import TrainingPlan

PS_CLUSTER = {"chief": ["host0:2222"], "worker": ["host1:2222"], "ps": ["host2:2222"]}
MW_CLUSTER = {"worker": ["host0:2222", "host1:2222"]}


def tf_config(monkeypatch: pytest.MonkeyPatch, jobs: dict, task: str, index: int) -> rendezvous.Cluster:
    text = json.dumps({"cluster": jobs, "task": {"type": task, "index": index}})
    monkeypatch.setenv(rendezvous.TF_CONFIG, text)
    return rendezvous.parse_tf_config(text, "parameter_server" if "ps" in jobs else "multi_worker")


def as_chief(jobs: dict) -> rendezvous.Cluster:
    chief = "chief" if "chief" in jobs else "worker"
    return rendezvous.Cluster({job: tuple(hosts) for job, hosts in jobs.items()}, chief, 0)


def answered(directory: Path, member: rendezvous.Member, run: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        path = directory / member.file_name
        if path.exists() and json.loads(path.read_text())["run"] == run:
            return
        time.sleep(0.02)
    raise AssertionError(f"{member.name} did not answer run {run}")


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    from tasks.training import custom_loop

    served: list[tuple[str, int]] = []

    def serve(job: str, index: int) -> SimpleNamespace:
        served.append((job, index))
        return SimpleNamespace(target=f"grpc://fake-{job}-{index}")

    monkeypatch.setattr(custom_loop, "serve", serve)
    return served


@pytest.fixture
def chief_thread() -> Iterator[Callable[[Callable[[], None]], None]]:
    threads: list[threading.Thread] = []

    def start(play: Callable[[], None]) -> None:
        threads.append(threading.Thread(target=play, daemon=True))
        threads[-1].start()

    yield start
    for thread in threads:
        thread.join(timeout=10)


def test_a_parameter_server_serves_the_chiefs_run_until_it_ends(tmp_path: Path, monkeypatch, fake_server,
                                                                chief_thread) -> None:
    me = tf_config(monkeypatch, PS_CLUSTER, "ps", 0)
    chief = as_chief(PS_CLUSTER)

    def play() -> None:
        run = rendezvous.announce_chief(tmp_path, chief)
        answered(tmp_path, me.me, run)
        rendezvous.finish(tmp_path, run, None)

    chief_thread(play)
    lines: list[str] = []
    result = join_cluster(TrainingPlan(tmp_path / "shards", strategy="parameter_server"), tmp_path / "work",
                          tmp_path, timeout_s=10, log=lines.append)
    assert result == {"served_run": rendezvous.current_run(tmp_path)}
    assert fake_server == [("ps", 0)]
    assert lines[0] == f"ps 0 (host2:2222): waiting for the chief (chief 0 (host0:2222)) in {tmp_path}"
    assert lines[1:] == ["ps 0 (host2:2222): serving at grpc://fake-ps-0", "ps 0 (host2:2222): the chief finished; "
                         "stopping"]


def test_a_restarted_chief_is_served_again_and_its_error_ends_the_member(tmp_path: Path, monkeypatch, fake_server,
                                                                          chief_thread) -> None:
    me = tf_config(monkeypatch, PS_CLUSTER, "worker", 0)
    chief = as_chief(PS_CLUSTER)

    def play() -> None:
        first = rendezvous.announce_chief(tmp_path, chief)
        answered(tmp_path, me.me, first)
        second = rendezvous.announce_chief(tmp_path, chief)  # the chief died and was started again
        answered(tmp_path, me.me, second)
        rendezvous.finish(tmp_path, second, "TrainingDivergedError: loss became non-finite")

    chief_thread(play)
    lines: list[str] = []
    with pytest.raises(rendezvous.ClusterError, match="the chief's run ended with an error: TrainingDivergedError"):
        join_cluster(TrainingPlan(tmp_path / "shards", strategy="parameter_server"), tmp_path / "work", tmp_path,
                     timeout_s=10, log=lines.append)
    assert f"worker 0 (host1:2222): the chief started again (run {rendezvous.current_run(tmp_path)})" in lines


def test_a_worker_without_a_chief_gives_up_after_its_timeout(tmp_path: Path, monkeypatch) -> None:
    tf_config(monkeypatch, MW_CLUSTER, "worker", 1)
    started = time.monotonic()
    with pytest.raises(rendezvous.ClusterError, match=r"the chief, worker 0 \(host0:2222\), did not start training "
                                                      r"within 0.3 s"):
        join_cluster(TrainingPlan(tmp_path / "shards", strategy="multi_worker"), tmp_path / "work", tmp_path,
                     timeout_s=0.3, log=lambda line: None)
    assert time.monotonic() - started < 5


def test_who_may_not_join_is_told_why(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="Train.strategy=default trains on one host: there is no cluster to join"):
        join_cluster(TrainingPlan(tmp_path), tmp_path, tmp_path, timeout_s=0.1)
    with pytest.raises(ValueError, match="Train.strategy=multi_worker with mixed_precision"):
        join_cluster(TrainingPlan(tmp_path, strategy="multi_worker", mixed_precision=True), tmp_path, tmp_path,
                     timeout_s=0.1)
    tf_config(monkeypatch, MW_CLUSTER, "worker", 0)
    with pytest.raises(rendezvous.ClusterError, match=r"this process is the chief, worker 0 \(host0:2222\): run "
                                                      "`tfpipe run` here"):
        join_cluster(TrainingPlan(tmp_path, strategy="multi_worker"), tmp_path, tmp_path, timeout_s=0.1)


def test_the_chief_names_the_missing_member_and_records_the_failure(tmp_path: Path, monkeypatch) -> None:
    from tasks.training.fit import TrainConfig

    tf_config(monkeypatch, MW_CLUSTER, "worker", 0)
    waiting: list[str] = []
    plan = TrainingPlan(tmp_path / "shards", strategy="multi_worker", cluster_timeout=0.3)
    config = TrainConfig(model="mlp", image_shape=(4, 4, 1), num_classes=2, num_heads=1)
    with pytest.raises(rendezvous.ClusterError, match=r"worker 1 \(host1:2222\) did not join within 0.3 s"):
        lead_cluster(plan, config, DatasetInfo("toy", (4, 4, 1), 2), tmp_path / "work", tmp_path / "model.keras",
                     tmp_path, status=waiting.append)
    assert waiting and set(waiting) == {"waiting for worker 1 (host1:2222)"}
    ended = rendezvous.outcome(tmp_path, rendezvous.current_run(tmp_path))
    assert ended["ok"] is False and "did not join within 0.3 s" in ended["error"]


def test_only_the_chief_leads(tmp_path: Path, monkeypatch) -> None:
    tf_config(monkeypatch, MW_CLUSTER, "worker", 1)
    with pytest.raises(rendezvous.ClusterError, match="only the chief, worker 0 \\(host0:2222\\), runs Train"):
        # No config nor data: the refusal comes before either is used.
        lead_cluster(TrainingPlan(tmp_path, strategy="multi_worker"), None, None, tmp_path, tmp_path, tmp_path)
    assert not (tmp_path / rendezvous.CHIEF_FILE).exists()
