"""MLflow tracking of ``tfpipe run`` (pipelines/tracking.py, luigi.cfg ``[mlflow]``).

A run that trains, with ``[mlflow] tracking_uri`` set in a LUIGI_CONFIG_PATH file, is logged to a real
``mlflow server`` on loopback (tests/helpers/mlflow_server.py) and read back with MLflow's own client: params,
tags, the per-epoch history, the test metrics and the artifacts, each compared with what the run wrote. Unset,
mlflow is not even imported; a server that is not there, or does not answer, is one warning line within
``timeout_s`` and the run goes on.

Default suite: the captcha run against the server, the no-import check, the unreachable servers (on the
session's captcha run). Slow: the images pipeline (a source fingerprint, a published model) and a local
sqlite store.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CAPTCHA_TINY, IMAGES_TINY, REPO, isolated_luigi_config
from tests.helpers.mlflow_server import NO_TELEMETRY, MlflowServer, mlflow_binary, mlflow_server
from tests.helpers.processes import free_ports
from tests.test_quiet_output import tfpipe

# luigi.cfg [PublishGate] refused_exit_code: how a run ends whose model the gate refused (still a whole run).
REFUSED_EXIT_CODE = 5
NO_OP_SECONDS = 1.5


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    pytest.importorskip("mlflow", reason="mlflow is in the test extra: pip install -e '.[test]'")
    if mlflow_binary() is None:
        pytest.skip("no mlflow command (pip install -e '.[test]')")
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


def config_file(folder: Path, **mlflow_settings: str) -> Path:
    """The project's luigi.cfg with an ``[mlflow]`` section, as a user's LUIGI_CONFIG_PATH file."""
    section = "".join(f"{key} = {value}\n" for key, value in mlflow_settings.items())
    path = folder / "tracking.cfg"
    path.write_text(f"{(REPO / 'luigi.cfg').read_text()}\n[mlflow]\n{section}")
    return path


def manifests(root: Path) -> dict[str, dict[str, Any]]:
    """stage -> the MANIFEST.json of that stage's one artifact under ``root``."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(root.glob("*/*-*/MANIFEST.json")):
        manifest = json.loads(path.read_text())
        if path.parent.name == f"{manifest.get('family')}-{manifest.get('key')}":
            assert manifest["stage"] not in found, f"two {manifest['stage']} artifacts under {root}"
            found[manifest["stage"]] = {**manifest, "dir": path.parent}
    return found


def the_run(client: Any, experiment: str) -> Any:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    [run] = client.search_runs([found.experiment_id])
    return run


def check_logged_run(client: Any, run: Any, root: Path, tmp_path: Path) -> None:
    """What the MLflow run holds is what the artifacts under ``root`` say, item by item."""
    import mlflow.artifacts

    stages = manifests(root)
    tags, params, run_id = run.data.tags, run.data.params, run.info.run_id
    assert run.info.status == "FINISHED"
    # Tags: every stage's artifact key and the source fingerprints its key was computed from.
    assert {k: v for k, v in tags.items() if k.startswith("artifact_key.")} == {
        f"artifact_key.{stage}": manifest["key"] for stage, manifest in stages.items()}
    assert {k: v for k, v in tags.items() if k.startswith("source.")} == {
        f"source.{stage}.{role.removeprefix('source:')}": digest for stage, manifest in stages.items()
        for role, digest in manifest["upstream"].items() if role.startswith("source:")}
    # Params: every keyed parameter of every stage, under its family, and the budget Train resolved.
    for manifest in stages.values():
        for name, value in manifest["params"].items():
            assert params[f"{manifest['family']}.{name}"] == value, (manifest["family"], name)
    assert params["Train.budget.epochs"] == str(stages["train"]["budget"]["epochs"])
    # The history, epoch by epoch.
    with (stages["train"]["dir"] / "history.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and len(rows) == stages["train"]["epochs_completed"]
    for column in rows[0]:
        if column != "epoch":
            history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, column))
            assert history == [(int(row["epoch"]), pytest.approx(float(row[column]))) for row in rows], column
    # The test metrics: metrics.json's numbers.
    evaluated = json.loads((stages["evaluate"]["dir"] / "metrics.json").read_text())
    numbers = {k: v for k, v in evaluated.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    assert numbers and stages["evaluate"]["params"]["dataset_metric"] in numbers
    for key, value in numbers.items():
        assert run.data.metrics[f"test/{key}"] == pytest.approx(value), key
    # Artifacts: the report with its pictures and the SavedModel with its labels; the report byte for byte.
    report = {item.path for item in client.list_artifacts(run_id, "report")}
    assert {"report/report.html", "report/metrics.json", "report/confusion_matrix.png"} <= report
    model = {item.path for item in client.list_artifacts(run_id, "model")}
    assert {"model/saved_model.pb", "model/variables", "model/labels.txt"} <= model
    copy = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="report/report.html",
                                               dst_path=str(tmp_path / "downloaded"), tracking_uri=client.tracking_uri)
    assert Path(copy).read_bytes() == (stages["evaluate"]["dir"] / "report.html").read_bytes()
    # The publish decision, as the publish artifact recorded it.
    if "publish" in stages:
        decision = json.loads((stages["publish"]["dir"] / "publish.json").read_text())
        assert tags["publish.published"] == str(decision["published"]).lower()
        assert tags.get("publish.version") == (str(decision["published_version"]) if decision["published"] else None)
        assert tags.get("publish.reason") == decision.get("reason")


def test_a_run_that_trains_is_logged_to_an_mlflow_server(tracking_server: MlflowServer, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    root = tmp_path / "artifacts"
    config = config_file(tmp_path, tracking_uri=tracking_server.url)  # experiment: the pipeline's name
    done = tfpipe("run", "captcha", "--artifacts", str(root), "--publish", *CAPTCHA_TINY, cwd=tmp_path,
                  env={"LUIGI_CONFIG_PATH": str(config), **NO_TELEMETRY})
    decision = json.loads(next(root.glob("publish/Publish-*/publish.json")).read_text())
    assert done.returncode == (0 if decision["published"] else REFUSED_EXIT_CODE), done.stderr[-3000:]
    assert "mlflow" not in done.stderr, done.stderr[-3000:]

    client = MlflowClient(tracking_server.url)
    run = the_run(client, "captcha")
    assert f"mlflow: {tracking_server.url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" \
        in done.stdout.splitlines()
    assert run.data.tags["pipeline"] == "captcha"
    assert run.data.params["Train.epochs"] == "2" and run.data.params["GenerateCaptchas.count"] == "160"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 2
    check_logged_run(client, run, root, tmp_path)


# ---- off, and unreachable ---------------------------------------------------------------------------------------
NO_OP_SCRIPT = """
import json, sys, time
started = time.perf_counter()
from pipelines import cli
code = cli.main(sys.argv[1:])
print(json.dumps({"code": code, "seconds": time.perf_counter() - started,
                  "mlflow": sorted(name for name in sys.modules if name.split(".")[0] == "mlflow")}))
"""


def run_in_fresh_process(args: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """``tfpipe ARGS`` in a new Python: its exit code, its seconds (imports included), the mlflow modules it loaded."""
    done = subprocess.run([sys.executable, "-c", NO_OP_SCRIPT, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "stderr": done.stderr}


def test_unset_tracking_imports_no_mlflow_and_a_no_op_rerun_stays_fast(
        captcha_tiny_run: tuple[Path, object], tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    shutil.copytree(captcha_tiny_run[0], root, symlinks=True)
    args = ["--artifacts", str(root), *CAPTCHA_TINY]
    status = run_in_fresh_process(["status", "captcha", *args], tmp_path, {})
    assert status["code"] == 0 and status["mlflow"] == []
    no_ops = [run_in_fresh_process(["run", "captcha", *args], tmp_path, {}) for _ in range(2)]
    assert [(run["code"], run["mlflow"]) for run in no_ops] == [(0, []), (0, [])]
    assert min(run["seconds"] for run in no_ops) < NO_OP_SECONDS, no_ops
    # Set, but nothing trained: no MLflow run, so no import either (and no word about a server that is not there).
    [closed] = free_ports(1)
    config = config_file(tmp_path, tracking_uri=f"http://127.0.0.1:{closed}")
    tracked = run_in_fresh_process(["run", "captcha", *args], tmp_path, {"LUIGI_CONFIG_PATH": str(config)})
    assert tracked["code"] == 0 and tracked["mlflow"] == [] and "mlflow" not in tracked["stderr"]


def captcha_nodes(root: Path) -> list[Any]:
    """The stages of the session's captcha run, as ``tfpipe run`` sees them (all done). Call inside
    ``isolated_luigi_config``: the run's ``--set`` lands in the config."""
    from luigi.task_register import Register

    from pipelines import cli
    from pipelines.commands.common import configure
    from pipelines.commands.dag import artifact_tasks, top_task
    from pipelines.stages import register_wrappers

    register_wrappers()
    Register.clear_instance_cache()
    args = cli.build_parser().parse_args(["run", "captcha", "--artifacts", str(root), *CAPTCHA_TINY])
    configure(args)
    nodes = artifact_tasks(top_task(args))
    assert all(node.complete() for node in nodes)
    return nodes


@contextlib.contextmanager
def unreachable_server(kind: str) -> Iterator[str]:
    """The URI of a port nothing listens on, or of a server that accepts connections and never answers."""
    if kind == "closed port":
        [port] = free_ports(1)
        yield f"http://127.0.0.1:{port}"
        return
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # connections complete in the backlog; no request is ever read
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("kind", ["closed port", "silent server"])
def test_an_unreachable_server_is_one_warning_line_within_the_timeout(
        kind: str, captcha_tiny_run: tuple[Path, object], capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("mlflow", reason="mlflow is in the test extra: pip install -e '.[test]'")
    from pipelines.tracking import track_run
    from tasks.training.task import Train

    root, _ = captcha_tiny_run
    timeout_s = 1.0
    with unreachable_server(kind) as uri, isolated_luigi_config(root) as config:
        nodes = captcha_nodes(root)
        config.set("mlflow", "tracking_uri", uri)
        config.set("mlflow", "timeout_s", str(timeout_s))
        capsys.readouterr()
        started = time.monotonic()
        track_run("captcha", nodes, [node for node in nodes if isinstance(node, Train)])  # returns: never raises
        elapsed = time.monotonic() - started
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert line.startswith(f"tfpipe: warning: mlflow: {uri}: ") and len(line) > len(uri) + 30, line
    assert captured.out == ""
    assert elapsed < timeout_s + 3, f"{kind}: {elapsed:.1f} s"


# ---- slow: another pipeline, a local store ----------------------------------------------------------------------
@pytest.mark.slow
def test_a_published_images_run_is_logged_with_its_source_and_version(
        tracking_server: MlflowServer, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from tests.fakes.images import write_class_folder

    photos = tmp_path / "photos"
    write_class_folder(photos, {"disc": 40, "square": 40, "triangle": 40}, size=(40, 40), seed=2)
    root = tmp_path / "artifacts"
    config = config_file(tmp_path, tracking_uri=tracking_server.url, experiment="shapes", timeout_s="10")
    done = tfpipe("run", "images", "--source", str(photos), "--artifacts", str(root), "--publish", *IMAGES_TINY,
                  "--set", "Train.epochs=5", cwd=tmp_path, env={"LUIGI_CONFIG_PATH": str(config), **NO_TELEMETRY})
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_server.url)
    run = the_run(client, "shapes")
    tags = run.data.tags
    assert tags["publish.published"] == "true" and tags["publish.version"] == "1"
    [record] = [json.loads(line) for line in (root / "runs" / "images.jsonl").read_text().splitlines()]
    assert record["source"] and sorted(v for k, v in tags.items() if k.startswith("source.")) == record["source"]
    check_logged_run(client, run, root, tmp_path)


@pytest.mark.slow
def test_a_local_sqlite_store_holds_the_run(captcha_tiny_run: tuple[Path, object], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("mlflow", reason="mlflow is in the test extra: pip install -e '.[test]'")
    from mlflow.tracking import MlflowClient

    from pipelines.tracking import track_run
    from tasks.training.task import Train

    for name, value in NO_TELEMETRY.items():
        monkeypatch.setenv(name, value)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # tfpipe runs in one folder, the store is in another
    root, _ = captcha_tiny_run
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    with isolated_luigi_config(root) as config:
        nodes = captcha_nodes(root)
        config.set("mlflow", "tracking_uri", uri)
        config.set("mlflow", "experiment", "local")
        capsys.readouterr()
        track_run("captcha", nodes, [node for node in nodes if isinstance(node, Train)])
    captured = capsys.readouterr()
    assert captured.err == ""
    client = MlflowClient(uri)
    run = the_run(client, "local")
    assert captured.out.strip() == f"mlflow: run {run.info.run_id} of experiment 'local' in {uri}"
    assert run.info.artifact_uri.startswith((tmp_path / "store" / "mlruns").as_uri())  # beside the database
    assert list(elsewhere.iterdir()) == []
    check_logged_run(client, run, root, tmp_path)


# ---- what is logged, piece by piece (no server) -------------------------------------------------------------------
def test_metrics_json_is_flattened_by_key_class_and_index() -> None:
    from pipelines.tracking import MAX_LISTED_METRICS, flat_numbers

    metrics = {"top1_accuracy": 0.5, "examples": 12, "split": "test", "confusion_matrix": [[1, 0], [2, 3]],
               "per_class": [{"class": "cat", "recall": 0.25, "support": 4}, {"class": "a/b c+", "recall": 1.0}],
               "per_head_accuracy": [0.5, 0.75], "health": {"learned": True, "best_epoch": 3, "warnings": ["x"]},
               "long": list(range(MAX_LISTED_METRICS + 1))}
    assert dict(flat_numbers(metrics)) == {
        "top1_accuracy": 0.5, "examples": 12.0, "per_class.cat.recall": 0.25, "per_class.cat.support": 4.0,
        "per_class.a_b c_.recall": 1.0, "per_head_accuracy.0": 0.5, "per_head_accuracy.1": 0.75,
        "health.best_epoch": 3.0}


def test_repeated_stages_are_named_by_role_and_long_values_are_cut(tmp_path: Path) -> None:
    """MNIST reads four source files: four download stages, told apart by the role decode reads each under."""
    pytest.importorskip("mlflow", reason="mlflow is in the test extra: pip install -e '.[test]'")
    from luigi.task_register import Register
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    from pipelines import cli
    from pipelines.commands.common import configure
    from pipelines.commands.dag import artifact_tasks, top_task
    from pipelines.stages import register_wrappers
    from pipelines.tracking import TRUNCATED, cut, run_params, run_tags

    with isolated_luigi_config(tmp_path / "artifacts"):
        register_wrappers()
        Register.clear_instance_cache()
        args = cli.build_parser().parse_args(["run", "mnist", "--artifacts", str(tmp_path / "artifacts")])
        configure(args)
        nodes = artifact_tasks(top_task(args))  # the official sources are pinned: no download to name them
        downloads = [node for node in nodes if node.stage == "download"]
        tags, params = run_tags(nodes, []), run_params(nodes, [])
    roles = sorted(role for node in nodes for role, task in node.upstream.items() if task in downloads)
    assert len(roles) == len(downloads) == 4
    assert sorted(k for k in tags if k.startswith("artifact_key.download")) == [
        f"artifact_key.download.{role}" for role in roles]
    assert sorted(k for k in tags if k.startswith("source.")) == [f"source.download.{role}.checksum" for role in roles]
    assert {params[f"Download.{role}.source"] for role in roles} == {node.source for node in downloads}
    long = "x" * (MAX_PARAM_VAL_LENGTH + 10)
    assert len(cut(long, MAX_PARAM_VAL_LENGTH)) == MAX_PARAM_VAL_LENGTH and cut(long, 20).endswith(TRUNCATED)


@pytest.mark.parametrize(("make", "problem"), [
    (lambda folder: f"sqlite:///{folder}", "cannot open the database"),
    (lambda folder: (folder / "x.db").write_text("not a database") and f"sqlite:///{folder / 'x.db'}",
     "file is not a database"),
    (lambda folder: f"postgresql://user@127.0.0.1:{free_ports(1)[0]}/runs", "no server answers at 127.0.0.1:"),
    (lambda folder: "http://", "expected http://HOST:PORT"),
])
def test_a_store_that_cannot_answer_is_refused_at_once(make: Any, problem: str, tmp_path: Path) -> None:
    """What MLflow would retry for minutes (a database engine ten times over ~100 s) fails in one step."""
    from pipelines.tracking import check_reachable

    started = time.monotonic()
    with pytest.raises((ConnectionError, ValueError), match=problem):
        check_reachable(make(tmp_path), timeout_s=1.0)
    assert time.monotonic() - started < 1.0
