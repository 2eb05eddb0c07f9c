"""MLflow tracking of ``tfpipe run``, when a Luigi config file asks for it (``[mlflow] tracking_uri``).

Every run that trained (the Train stage ran in it) becomes one MLflow run in the experiment ``[mlflow]
experiment`` (default: the pipeline's name), named after the trained artifact:

- tags: ``pipeline``, each stage's artifact key and location (``artifact_key.<stage>``, ``artifact.<stage>``),
  the source fingerprints (``source.<stage>.<name>``), the model's health and the publish decision
  (``publish.published``, ``publish.version``, ``publish.reason``);
- params: every significant parameter of every stage as ``<Family>.<param>`` (``Train.epochs``) and the budget
  Train resolved from them (``Train.budget.epochs``); values beyond MLflow's length limit are cut, marked so;
- metrics: the training history per epoch (Keras' names, step = the epoch) and the evaluation's numbers,
  flattened under the split (``test/top1_accuracy``, ``test/per_class.A.recall``);
- artifacts: ``report/`` (the HTML report, its pictures, metrics.json) and ``model/`` (the SavedModel with the
  labels and frozen graph beside it, as a published version holds them). An experiment tfpipe creates in a local
  sqlite store keeps them in ``mlruns/`` beside the database file.

A stage that occurs more than once in a pipeline (the downloads of several source files) is named by the
role its reader takes it under (``download.train_images``, ``Download.train_images.source``).

Off while ``tracking_uri`` is empty: then nothing here imports mlflow (its import takes over a second), so a
no-op rerun and ``tfpipe status`` cost what they did. Tracking never fails or holds up the pipeline: a missing
package, a server that does not answer or a refused request is one line on stderr (``tfpipe: warning: mlflow:
<uri>: <problem>``), and every request to a server is bounded by ``timeout_s``.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import logging
import math
import os
import re
import socket
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import luigi

from tasks.evaluation.files import CONFUSION_MATRIX_PLOT_FILE, METRICS_FILE, MISCLASSIFIED_FILE, REPORT_FILE
from tasks.export.files import PUBLISHED_FILES, SAVED_MODEL_DIR
from tasks.runtime.error_text import describe_error
from tasks.store.task import ArtifactTask, UpstreamParameter
from tasks.training.files import HISTORY_FILE, TRAINING_CURVES_FILE
from tasks.training.task import Train

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# What the evaluation, freeze and publish stages provide (``ArtifactTask.provides``): where the run's results are.
EVALUATION, FROZEN, PUBLISHED = "evaluation", "frozen", "published"
# The evaluation artifact's files logged under ``report/``, when there.
REPORT_FILES = (REPORT_FILE, METRICS_FILE, CONFUSION_MATRIX_PLOT_FILE, MISCLASSIFIED_FILE, TRAINING_CURVES_FILE)
REPORT_PATH, MODEL_PATH = "report", "model"
# A list in metrics.json longer than this (per-class results of 3,755 classes) stays in the logged metrics.json
# rather than becoming thousands of MLflow metrics.
MAX_LISTED_METRICS = 100
# Entities per ``log_batch`` request (MLflow's limits: mlflow.utils.validation MAX_PARAMS_TAGS_PER_BATCH and
# MAX_METRICS_PER_BATCH).
PARAMS_TAGS_PER_REQUEST, METRICS_PER_REQUEST = 100, 1000
TRUNCATED = "...[cut]"
# Characters MLflow refuses in a key part (it takes letters, digits, ``_ - . : space``, and ``/`` between parts).
NOT_IN_KEY = re.compile(r"[^\w.\- :]")
MAX_PROBLEM_CHARS = 1000
# ``sqlite:///<file>`` (a relative file) or ``sqlite:////<absolute file>``, and where its artifacts go.
SQLITE_PREFIX, LOCAL_ARTIFACTS_DIR = "sqlite:///", "mlruns"
# Where a server or database of each scheme listens unless its URI says (MLflow's SQLAlchemy stores and HTTP).
DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}


class mlflow(luigi.Config):  # noqa: N801 - lower case like Luigi's own [core] and [retcode]: the section's name
    """``[mlflow]`` in any Luigi config file (luigi.cfg, or the file LUIGI_CONFIG_PATH names)."""

    tracking_uri = luigi.Parameter(default="", description="MLflow tracking URI: a server (http://HOST:PORT) or a "
                                                          "local store (sqlite:///mlflow.db); '' = no tracking")
    experiment = luigi.Parameter(default="", description="MLflow experiment ('' = the pipeline's name)")
    timeout_s = luigi.FloatParameter(default=5.0, description="bound on connecting to the server and on each "
                                                              "request to it; past it the run is not tracked")


def track_run(pipeline: str, nodes: Sequence[ArtifactTask], ran: Sequence[ArtifactTask]) -> None:
    """One MLflow run for a ``tfpipe run`` that trained, when ``[mlflow] tracking_uri`` is set; else nothing."""
    settings = mlflow()
    if not settings.tracking_uri or not any(isinstance(node, Train) for node in ran):
        return
    uri = settings.tracking_uri
    if importlib.util.find_spec("mlflow") is None:
        warn(uri, "mlflow is not installed (pip install 'tfpipe[mlflow]')")
        return
    try:
        with mlflow_bounded(settings.timeout_s):
            check_reachable(uri, settings.timeout_s)
            where = log_run(uri, settings.experiment or pipeline, pipeline, nodes)
    # Tracking never fails the run it reports on: besides MlflowException and requests' OSErrors, the store's own
    # drivers raise theirs (sqlalchemy's OperationalError for a sqlite file that cannot be opened, a database
    # driver's ImportError), all of which become the one warning line.
    except Exception as error:  # noqa: BLE001
        warn(uri, describe_error(error, named=not isinstance(error, OSError | ValueError)))
        return
    print(f"mlflow: {where}")


def warn(uri: str, problem: str) -> None:
    line = " ".join(problem.split())
    if len(line) > MAX_PROBLEM_CHARS:
        line = line[:MAX_PROBLEM_CHARS] + "..."
    print(f"tfpipe: warning: mlflow: {uri}: {line}", file=sys.stderr)


# ---- bounds --------------------------------------------------------------------------------------------------
def check_reachable(uri: str, timeout_s: float) -> None:
    """The store answers within ``timeout_s``, or a clear error at once: MLflow itself would wait for a request
    to time out, or retry for minutes (its HTTP client's defaults; a database engine it retries ten times over
    ~100 s). A server or database host takes a TCP connection, a sqlite file opens."""
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme.split("+", 1)[0]  # postgresql+psycopg2 -> postgresql
    if scheme == "sqlite":
        check_sqlite(uri, timeout_s)
    elif scheme in ("http", "https") and not parts.hostname:
        raise ValueError(f"expected {scheme}://HOST:PORT")
    elif scheme in DEFAULT_PORTS and parts.hostname:  # a database on a unix socket has no host to try
        check_connects(parts.hostname, parts.port or DEFAULT_PORTS[scheme], timeout_s)


def check_connects(host: str, port: int, timeout_s: float) -> None:
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as error:
        raise ConnectionError(f"no server answers at {host}:{port} ({describe_error(error)})") from None


def check_sqlite(uri: str, timeout_s: float) -> None:
    """The database file opens as one (MLflow makes its folder, so that is made first)."""
    database = sqlite_file(uri)
    if database is None:
        return
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(database, timeout=timeout_s)) as connection:
            connection.execute("pragma schema_version")  # a file that is no database fails here
    except (OSError, sqlite3.Error) as error:
        raise ConnectionError(f"cannot open the database {database}: {describe_error(error)}") from None


def sqlite_file(uri: str) -> Path | None:
    """The database file of ``sqlite:///<file>`` (relative) or ``sqlite:////<absolute file>``; None for another
    URI or an in-memory database."""
    database = uri.removeprefix(SQLITE_PREFIX).split("?", 1)[0]
    if not uri.startswith(SQLITE_PREFIX) or not database or database == ":memory:":
        return None
    return Path(database)


@contextlib.contextmanager
def mlflow_bounded(timeout_s: float) -> Iterator[None]:
    """MLflow's HTTP requests bounded by ``timeout_s`` and not retried (its defaults: 120 s and 7 retries with
    backoff), its run URL lines and its log below errors left out (tfpipe prints its own lines). Variables the
    user set are kept; everything is restored after."""
    settings = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(timeout_s))),  # MLflow reads whole seconds
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    added = [name for name in settings if name not in os.environ]
    mlflow_logger = logging.getLogger("mlflow")
    level = mlflow_logger.level
    os.environ.update({name: settings[name] for name in added})
    mlflow_logger.setLevel(logging.ERROR)  # what goes wrong is tfpipe's one warning line
    try:
        yield
    finally:
        mlflow_logger.setLevel(level)
        for name in added:
            os.environ.pop(name, None)


# ---- the MLflow run --------------------------------------------------------------------------------------------
def log_run(uri: str, experiment: str, pipeline: str, nodes: Sequence[ArtifactTask]) -> str:
    """The run logged; returns where to see it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment_id = experiment_id_of(client, experiment, local_artifact_location(uri))
    done = [node for node in nodes if node.complete()]
    trained = next(node for node in nodes if isinstance(node, Train))
    run = client.create_run(experiment_id, run_name=f"{pipeline} {trained.task_family}-{trained.artifact_key}",
                            tags={"pipeline": pipeline})
    run_id = run.info.run_id
    try:
        log_contents(client, run_id, nodes, done)
    except Exception:
        # The run stays in the store, marked failed; what went wrong is the caller's warning line.
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED" if len(done) == len(nodes) else "FAILED")
    return run_location(uri, experiment, experiment_id, run_id)


def experiment_id_of(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The experiment's id, created when new (another run may create it meanwhile)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location))
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def log_contents(client: MlflowClient, run_id: str, nodes: Sequence[ArtifactTask],
                 done: Sequence[ArtifactTask]) -> None:
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    tags = [RunTag(key, value) for key, value in run_tags(nodes, done).items()]
    params = [Param(key, value) for key, value in run_params(nodes, done).items()]
    metrics = [Metric(key, value, now, step) for key, value, step in run_metrics(done)]
    for chunk in chunks(tags, PARAMS_TAGS_PER_REQUEST):
        client.log_batch(run_id, tags=chunk)
    for chunk in chunks(params, PARAMS_TAGS_PER_REQUEST):
        client.log_batch(run_id, params=chunk)
    for chunk in chunks(metrics, METRICS_PER_REQUEST):
        client.log_batch(run_id, metrics=chunk)
    for local_path, artifact_path in run_artifacts(done):
        if local_path.is_dir():
            client.log_artifacts(run_id, str(local_path), artifact_path)
        else:
            client.log_artifact(run_id, str(local_path), artifact_path)


def local_artifact_location(uri: str) -> str | None:
    """For a sqlite file store, ``mlruns`` beside the database file: the store keeps its runs' artifacts with it
    wherever tfpipe runs (MLflow's default is ``./mlruns`` of the working directory). None for other stores
    (a server decides; MLflow's defaults apply)."""
    database = sqlite_file(uri)
    return None if database is None else (database.resolve().parent / LOCAL_ARTIFACTS_DIR).as_uri()


def run_location(uri: str, experiment: str, experiment_id: str, run_id: str) -> str:
    """The run's page on a server, else the run's id in the store."""
    if urllib.parse.urlsplit(uri).scheme in ("http", "https"):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"run {run_id} of experiment {experiment!r} in {uri}"


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# ---- what is logged (plain data, no mlflow) ---------------------------------------------------------------------
def run_tags(nodes: Sequence[ArtifactTask], done: Sequence[ArtifactTask]) -> dict[str, str]:
    """The artifact keys and locations, the source fingerprints, the model's health, the publish decision."""
    tags: dict[str, str] = {}
    for node, label in zip(nodes, labels(nodes, by_family=False), strict=True):
        tags[f"artifact_key.{label}"] = node.artifact_key
        tags[f"artifact.{label}"] = node.artifact_location
        for role, digest in node.identity.upstream.items():
            if role.startswith("source:"):
                tags[f"source.{label}.{mlflow_key(role.removeprefix('source:'))}"] = digest
    for node in done:
        manifest = node.output().manifest()
        if node.provides == EVALUATION and "health" in manifest:
            tags["health.learned"] = str(bool(manifest["health"].get("learned", True))).lower()
            tags["health.warnings"] = "; ".join(manifest["health"].get("warnings", []))
        if node.provides == PUBLISHED:
            tags.update(publish_tags(manifest))
    return {key: cut(value, tag_value_limit()) for key, value in tags.items()}


def publish_tags(manifest: Mapping[str, Any]) -> dict[str, str]:
    """The publish gate's decision: published or not, the version it became, or why it was refused."""
    tags = {"publish.published": str(bool(manifest.get("published"))).lower(),
            "publish.name": str(manifest.get("published_name", ""))}
    if manifest.get("published_version") is not None:
        tags["publish.version"] = str(manifest["published_version"])
    if manifest.get("reason"):
        tags["publish.reason"] = str(manifest["reason"])
    return tags


def run_params(nodes: Sequence[ArtifactTask], done: Sequence[ArtifactTask]) -> dict[str, str]:
    """Every significant parameter of every stage as ``<Family>.<param>``, and the budget Train resolved."""
    params: dict[str, str] = {}
    for node, label in zip(nodes, labels(nodes, by_family=True), strict=True):
        for name, param in node.get_params():
            if param.significant and not isinstance(param, UpstreamParameter):
                params[f"{label}.{name}"] = param.serialize(getattr(node, name))
    for node in done:
        if isinstance(node, Train):
            budget = node.output().manifest().get("budget") or {}
            params.update({f"{node.task_family}.budget.{mlflow_key(key)}": str(value) for key, value in budget.items()})
    return {key: cut(value, param_value_limit()) for key, value in params.items()}


def run_metrics(done: Sequence[ArtifactTask]) -> list[tuple[str, float, int]]:
    """``(key, value, step)``: the training history per epoch, then the evaluation's numbers (step 0)."""
    metrics: list[tuple[str, float, int]] = []
    for node in done:
        if isinstance(node, Train) and (node.local_artifact() / HISTORY_FILE).exists():
            metrics += history_metrics(node.local_artifact() / HISTORY_FILE)
        if node.provides == EVALUATION and (node.local_artifact() / METRICS_FILE).exists():
            evaluation = json.loads((node.local_artifact() / METRICS_FILE).read_text())
            split = mlflow_key(str(evaluation.get("split", "test")))
            metrics += [(f"{split}/{key}", value, 0) for key, value in flat_numbers(evaluation)]
    return metrics


def history_metrics(history_csv: Path) -> list[tuple[str, float, int]]:
    """Keras CSVLogger's rows: every column but ``epoch`` at step = the epoch."""
    found = []
    with history_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            epoch = int(row["epoch"])
            for column, text in row.items():
                if column != "epoch" and column and text not in ("", None):
                    with contextlib.suppress(ValueError):
                        found.append((mlflow_key(column), float(text), epoch))
    return found


def flat_numbers(value: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """The numbers of a JSON document with dotted keys: dicts by key, lists by index (a list of per-class dicts
    by their ``class``); booleans, strings and lists of lists (the confusion matrix) are left out, and so are
    lists longer than MAX_LISTED_METRICS."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int | float):
        yield prefix, float(value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from flat_numbers(item, joined(prefix, mlflow_key(str(key))))
    elif isinstance(value, list) and len(value) <= MAX_LISTED_METRICS and not any(isinstance(v, list) for v in value):
        for index, item in enumerate(value):
            name = item.get("class", index) if isinstance(item, Mapping) else index
            inner = {k: v for k, v in item.items() if k != "class"} if isinstance(item, Mapping) else item
            yield from flat_numbers(inner, joined(prefix, mlflow_key(str(name))))


def run_artifacts(done: Sequence[ArtifactTask]) -> list[tuple[Path, str]]:
    """``(local file or folder, artifact path)``: the evaluation's report files, the frozen SavedModel and the
    files a published version holds beside it."""
    found: list[tuple[Path, str]] = []
    for node in done:
        if node.provides == EVALUATION:
            folder = node.local_artifact()
            found += [(folder / name, REPORT_PATH) for name in REPORT_FILES if (folder / name).is_file()]
        if node.provides == FROZEN:
            folder = node.local_artifact()
            if (folder / SAVED_MODEL_DIR).is_dir():
                found.append((folder / SAVED_MODEL_DIR, MODEL_PATH))
            found += [(folder / name, MODEL_PATH) for name in PUBLISHED_FILES if (folder / name).is_file()]
    return found


# ---- names and limits --------------------------------------------------------------------------------------------
def labels(nodes: Sequence[ArtifactTask], *, by_family: bool) -> list[str]:
    """Each node's name in keys: its family (or stage); one that occurs more than once gets the role its reader
    takes it under (the role that names a dataset's source file), else its artifact key."""
    names = [node.task_family if by_family else node.stage for node in nodes]
    roles = reader_roles(nodes)
    return [mlflow_key(name if names.count(name) == 1 else f"{name}.{roles.get(node.task_id, node.artifact_key)}")
            for name, node in zip(names, nodes, strict=True)]


def reader_roles(nodes: Iterable[ArtifactTask]) -> dict[str, str]:
    """task id -> the role a later stage reads it under."""
    return {task.task_id: role for node in nodes for role, task in node.upstream.items()}


def mlflow_key(text: str) -> str:
    """``text`` as one part of an MLflow key (a class or column name may hold anything)."""
    return NOT_IN_KEY.sub("_", text) or "_"


def joined(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit - len(TRUNCATED)] + TRUNCATED


def param_value_limit() -> int:
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    return int(MAX_PARAM_VAL_LENGTH)


def tag_value_limit() -> int:
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    return int(MAX_TAG_VAL_LENGTH)
