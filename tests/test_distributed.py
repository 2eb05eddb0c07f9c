"""Training beyond one device, for real: mirrored over two logical CPUs, a multi-worker cluster of two processes,
a parameter-server cluster (1 ps, 2 workers, the chief), a missing member, and two Luigi workers sharing one
`gpu` token on a central luigid. Every process listens on 127.0.0.1 (free ports), is bounded by a timeout and
is stopped by the test. These are the commands docs/DISTRIBUTED.md shows."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines import cli
from tests.fakes.idx import write_fake_mnist
from tests.helpers.processes import REPO, finish, free_ports, luigid, stopped_at_exit, tf_config, tfpipe

TRAIN = ["--set", "Train.model=mlp", "--set", "Train.epochs=3", "--set", "Train.batch_size=32"]


@pytest.fixture(scope="module")
def prebuilt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a Fashion-MNIST-format source, an artifact root with its stages up to the data check built)."""
    from tests.conftest import isolated_luigi_config

    base = tmp_path_factory.mktemp("distributed")
    write_fake_mnist(base / "src", n_train=600, n_test=200, gzip=False, fashion=True, seed=2)
    with isolated_luigi_config(base / "artifacts"):
        assert cli.main(["run", "fashion_mnist", "--source", str(base / "src"), "--until", "datacheck",
                         "--artifacts", str(base / "artifacts")]) == 0
    return base / "src", base / "artifacts"


@pytest.fixture
def root(prebuilt: tuple[Path, Path], tmp_path: Path) -> Path:
    shutil.copytree(prebuilt[1], tmp_path / "artifacts")
    return tmp_path / "artifacts"


def pipeline(prebuilt: tuple[Path, Path], root: Path, *extra: str) -> list[str]:
    return ["fashion_mnist", "--source", str(prebuilt[0]), "--artifacts", str(root), *TRAIN, *extra]


def train_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "train").glob("Train-*"))


def manifest(directory: Path) -> dict:
    return json.loads((directory / "MANIFEST.json").read_text())


def last_row(directory: Path) -> dict[str, str]:
    with open(directory / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))[-1]


def all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def train_count(root: Path) -> int:
    [shards] = sorted((root / "tfrecords").glob("TFRecords-*"))
    info = json.loads((shards / "tfpipe_info.json").read_text())
    return int(info["splits"]["train"]["count"])


@pytest.mark.slow  # two trainings in subprocesses; mirrored training through the CLI stays in the default suite:
# tests/test_small_splits.py::test_mirrored_trains_and_evaluates_a_validation_split_smaller_than_the_batch
def test_mirrored_on_two_logical_cpus_equals_one_device_with_the_same_global_batch(prebuilt, root: Path,
                                                                                   tmp_path: Path) -> None:
    import keras

    count = train_count(root)
    # Every batch whole on both sides (mirrored drops a remainder it could not split over the replicas). Plain
    # gradient descent at a constant rate, records in file order, no dropout or augmentation: what remains to
    # differ is how the gradient of a batch is summed (one device, or two halves all-reduced). Adam would amplify
    # those last-bit differences where gradients are near its epsilon; a distributed dataset shuffles in another
    # order; and a decaying schedule gives mirrored fit slightly different rates (docs/DISTRIBUTED.md).
    batch = next(b for b in range(48, 7, -2) if count % b == 0)
    no_dropout = ["--set", f"Train.batch_size={batch}", "--set", 'Train.model_options={"dropout": 0.0}',
                  "--set", "Train.optimizer=sgd", "--set", "Train.learning_rate=0.05", "--set",
                  "Train.lr_schedule=constant", "--set", "Train.shuffle_buffer=1", "--set", "Train.augment=false"]
    runs = {}
    for strategy in ("default", "mirrored"):
        extra = ["--set", f"Train.strategy={strategy}"] + (["--set", "Train.cpu_devices=2"] if strategy == "mirrored"
                                                           else [])
        log = tmp_path / f"{strategy}.log"
        process = tfpipe(["run", *pipeline(prebuilt, root, *no_dropout, *extra), "--until", "train"], log)
        with stopped_at_exit(process):
            assert finish(process, 600) == 0, log.read_text()[-3000:]
    for directory in train_dirs(root):
        runs[manifest(directory)["params"]["strategy"]] = directory
    assert manifest(runs["mirrored"])["num_replicas_in_sync"] == 2
    assert manifest(runs["default"])["num_replicas_in_sync"] == 1
    single = keras.saving.load_model(runs["default"] / "model.keras").get_weights()
    mirrored = keras.saving.load_model(runs["mirrored"] / "model.keras").get_weights()
    assert len(single) == len(mirrored) and manifest(runs["mirrored"])["epochs_completed"] == 3
    for one, two in zip(single, mirrored, strict=True):
        np.testing.assert_allclose(one, two, atol=1e-5, rtol=0)


def start_multi_worker(prebuilt, root: Path, tmp_path: Path, *extra: str, until: str = "evaluate",
                       name: str = "") -> tuple[list, dict]:
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    args = pipeline(prebuilt, root, "--set", "Train.strategy=multi_worker", "--set", "Train.cluster_timeout=120",
                    *extra)
    member = tfpipe(["cluster-member", *args, "--timeout", "300"], tmp_path / f"member{name}.log",
                    TF_CONFIG=tf_config(cluster, "worker", 1))
    chief = tfpipe(["run", *args, "--until", until], tmp_path / f"chief{name}.log",
                   TF_CONFIG=tf_config(cluster, "worker", 0))
    return [chief, member], cluster


def test_multi_worker_two_processes_train_in_lock_step_and_only_the_chief_commits(prebuilt, root: Path,
                                                                                  tmp_path: Path) -> None:
    before = all_files(root)
    (chief, member), _ = start_multi_worker(prebuilt, root, tmp_path)
    with stopped_at_exit(chief, member):
        assert finish(chief, 600) == 0, (tmp_path / "chief.log").read_text()[-3000:]
        assert finish(member, 120) == 0, (tmp_path / "member.log").read_text()[-3000:]
    [trained] = train_dirs(root)
    recorded = manifest(trained)
    assert recorded["num_replicas_in_sync"] == 2
    assert recorded["steps"] == 3 * math.ceil(train_count(root) / 32)
    member_log = (tmp_path / "member.log").read_text()
    [member_digest] = re.findall(r"trained \d+ steps; weights sha256 ([0-9a-f]{64})", member_log)
    assert member_digest == recorded["weights_sha256"]  # both workers ended with the same weights
    [evaluated] = sorted((root / "evaluate").glob("Evaluate-*"))
    accuracy = json.loads((evaluated / "metrics.json").read_text())["top1_accuracy"]
    assert accuracy > 0.5, accuracy  # chance: 0.1
    # What is new under the root is the chief's: its artifacts, its run log, and the rendezvous answers.
    new = all_files(root) - before
    allowed = (f"train/{trained.name}/", "evaluate/", "runs/", ".cluster/", ".cache/", ".leases/")
    assert [path for path in new if not path.startswith(allowed)] == []
    assert not (root / "train" / ".work" / f"Train-{recorded['key']}").exists()


def newest_checkpoint_step(root: Path) -> int:
    steps = [int(m.group(1)) for p in (root / "train" / ".work").glob("Train-*/checkpoints/ckpt-*.index")
             if (m := re.search(r"ckpt-(\d+)\.index$", p.name))]
    return max(steps, default=0)


@pytest.mark.slow  # three minutes: two clusters, one of them killed mid-training
def test_multi_worker_chief_killed_mid_training_resumes_from_its_checkpoint(prebuilt, root: Path,
                                                                            tmp_path: Path) -> None:
    steps_per_epoch = math.ceil(train_count(root) / 32)
    extra = ("--set", "Train.epochs=8", "--set", "Train.checkpoint_every_steps=4")
    (chief, member), _ = start_multi_worker(prebuilt, root, tmp_path, *extra, until="train")
    with stopped_at_exit(chief, member):
        deadline = time.monotonic() + 400
        while newest_checkpoint_step(root) < steps_per_epoch + 4:
            assert chief.poll() is None, (tmp_path / "chief.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint past the first epoch in time"
            time.sleep(0.2)
        chief.kill()  # its training process dies with it (PR_SET_PDEATHSIG)
        chief.wait(timeout=30)
        # The member loses its peer mid-step: it ends with an error naming the failure, not a hang.
        assert finish(member, 180) != 0
        assert "the cluster failed mid-training" in (tmp_path / "member.log").read_text()
    killed_at = newest_checkpoint_step(root)
    assert train_dirs(root) == []  # nothing counts as done
    (chief, member), _ = start_multi_worker(prebuilt, root, tmp_path, *extra, until="train", name="2")
    with stopped_at_exit(chief, member):
        assert finish(chief, 600) == 0, (tmp_path / "chief2.log").read_text()[-3000:]
        assert finish(member, 120) == 0, (tmp_path / "member2.log").read_text()[-3000:]
    resumed = re.findall(r"resumed from \S+ at step (\d+)", (tmp_path / "chief2.log").read_text())
    assert resumed and int(resumed[0]) == killed_at >= steps_per_epoch + 4
    [trained] = train_dirs(root)
    assert manifest(trained)["steps"] == 8 * steps_per_epoch
    assert float(last_row(trained)["val_accuracy"]) > 0.5


@pytest.mark.slow  # a four-process cluster (~35 s); the default suite keeps the multi_worker cluster above, and
# tests/training/test_member.py (a ps serving the chief's run) and test_custom_loop.py (the loop both share)
def test_parameter_server_one_ps_two_workers_and_the_chief_train_the_scheduled_steps(prebuilt, root: Path,
                                                                                     tmp_path: Path) -> None:
    chief_port, *worker_ports, ps_port = free_ports(4)
    cluster = {"chief": [f"127.0.0.1:{chief_port}"], "worker": [f"127.0.0.1:{p}" for p in worker_ports],
               "ps": [f"127.0.0.1:{ps_port}"]}
    args = pipeline(prebuilt, root, "--set", "Train.strategy=parameter_server", "--set", "Train.cluster_timeout=120")
    members = [tfpipe(["cluster-member", *args, "--timeout", "300"], tmp_path / f"{job}{index}.log",
                      TF_CONFIG=tf_config(cluster, job, index)) for job, index in (("ps", 0), ("worker", 0),
                                                                                    ("worker", 1))]
    chief = tfpipe(["run", *args, "--until", "train"], tmp_path / "chief.log",
                   TF_CONFIG=tf_config(cluster, "chief", 0))
    with stopped_at_exit(chief, *members):
        assert finish(chief, 600) == 0, (tmp_path / "chief.log").read_text()[-3000:]
        for member, name in zip(members, ("ps0", "worker0", "worker1"), strict=True):
            assert finish(member, 60) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
            assert "the chief finished; stopping" in (tmp_path / f"{name}.log").read_text()
    [trained] = train_dirs(root)
    assert manifest(trained)["steps"] == 3 * math.ceil(train_count(root) / 32)
    assert float(last_row(trained)["val_accuracy"]) > 0.5  # chance: 0.1


@pytest.mark.slow  # a chief process waiting out its timeout; the same message is checked without processes by
# tests/training/test_member.py::test_the_chief_names_the_missing_member_and_records_the_failure
def test_multi_worker_missing_worker_fails_the_task_within_the_timeout_naming_it(prebuilt, root: Path,
                                                                                 tmp_path: Path) -> None:
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    args = pipeline(prebuilt, root, "--set", "Train.strategy=multi_worker", "--set", "Train.cluster_timeout=5")
    started = time.monotonic()
    chief = tfpipe(["run", *args, "--until", "train"], tmp_path / "chief.log",
                   TF_CONFIG=tf_config(cluster, "worker", 0))
    with stopped_at_exit(chief):
        assert finish(chief, 120) == 30
    log = (tmp_path / "chief.log").read_text()
    assert f"worker 1 (127.0.0.1:{ports[1]}) did not join within 5 s" in log
    assert "Traceback" not in log
    assert time.monotonic() - started < 60
    assert train_dirs(root) == []


@pytest.mark.slow  # two whole pipelines under luigid (~20 s); one build per artifact under luigid stays in the default
# suite: tests/reliability/test_races.py::test_two_processes_on_one_luigid_build_each_artifact_once
def test_luigid_two_workers_share_one_gpu_token_and_run_each_task_once(prebuilt, tmp_path: Path) -> None:
    root = tmp_path / "artifacts"  # nothing prebuilt: both processes want every stage
    with luigid(tmp_path, config=REPO / "luigi.cfg") as url:
        processes = [tfpipe(["run", "fashion_mnist", "--source", str(prebuilt[0]), "--artifacts", str(root),
                             "--set", "Train.model=mlp", "--set", "Train.epochs=2", "--set", f"Train.seed={seed}",
                             "--until", "train", "--scheduler-url", url, "--log-level", "INFO"],
                            tmp_path / f"run{seed}.log") for seed in (1, 2)]
        with stopped_at_exit(*processes):
            for process, seed in zip(processes, (1, 2), strict=True):
                assert finish(process, 600) == 0, (tmp_path / f"run{seed}.log").read_text()[-3000:]
    ran = [line.split(" running   ", 1)[1] for seed in (1, 2)
           for line in (tmp_path / f"run{seed}.log").read_text().splitlines() if " running   " in line]
    stages = [task for task in ran if not task.startswith("FashionMnist(")]
    assert len(stages) == len(set(stages)) == 7, ran  # download, decode, imagedirs, tfrecords, datacheck, two Trains
    trainings = sorted((manifest(d)["started_at"], manifest(d)["finished_at"]) for d in train_dirs(root))
    assert len(trainings) == 2
    assert trainings[0][1] <= trainings[1][0]  # one after the other: the gpu token is held by one at a time
