"""``tfpipe run``: build the pipeline up to ``--until``.

The DAG goes to Luigi (local scheduler, or ``--scheduler-url`` for a central luigid); the command exits with the
``[retcode]`` of luigi.cfg when anything failed (``luigi.build`` alone returns normally). A run with nothing to
do starts no scheduler. Every run is recorded for ``tfpipe history`` and ``tfpipe gc`` (run_report.py).
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import luigi
import luigi.retcodes
import luigi.rpc
from luigi.execution_summary import LuigiRunResult, LuigiStatusCode

from pipelines.commands.common import EXPECTED_ERRORS, Subparsers, add_pipeline_arguments
from pipelines.commands.dag import artifact_names, artifact_tasks, run_log_holder, top_task
from pipelines.commands.run_drift import datacheck_node, judge_drift
from pipelines.commands.run_report import (
    final_outputs,
    print_outputs,
    publish_exit_code,
    record_run,
    run_name,
)
from pipelines.stages import Pipeline
from tasks.runtime.error_text import describe_error
from tasks.store.runlog import lease
from tasks.store.task import ArtifactTask

NAME = "run"
# ``tfpipe run --log-level``: Luigi's levels, in any case.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="build the pipeline up to --until")
    add_pipeline_arguments(parser)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--scheduler-url", default=None, help="central luigid, e.g. http://127.0.0.1:8082")
    parser.add_argument("--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS,
                        help="Luigi's log level; debug also shows TensorFlow's logs and the libraries' warnings")


def run(args: argparse.Namespace) -> int:
    args.run_id = new_run_id()
    task = top_task(args)
    nodes = artifact_tasks(task)  # a bad source or stage fails here, with its message, before Luigi starts
    todo = [node for node in nodes if not node.complete()]
    if not todo:
        # Nothing changed: no scheduler, no workers (a nightly run over an unchanged source ends here).
        drift = judge_drift(args, run_name(args), nodes)
        code = drift_exit_code(drift)
        if not code:  # an up-to-date run prints its one line; `tfpipe history` keeps the data warnings
            print(f"tfpipe: {args.pipeline} up to date: all {len(nodes)} stages done{final_outputs(task)}")
        record_run(args, nodes, ran=[], code=code, drift=drift)
        return code
    drift = None
    with lease(run_log_holder(), artifact_names(nodes)):
        code = check_data_first(args, nodes, todo)
        judged_first = not code and data_checked(nodes)
        if judged_first:
            drift = judge_drift(args, run_name(args), nodes)
            code = drift_exit_code(drift)
        if not code:
            code = build_and_report(args, task, nodes)
        if not code and not judged_first:  # the run ended with the data check: judged now that it is done
            drift = judge_drift(args, run_name(args), nodes)
            code = drift_exit_code(drift)
    record_run(args, nodes, ran=[node for node in todo if node.complete()], code=code, drift=drift)
    return code


def check_data_first(args: argparse.Namespace, nodes: list[ArtifactTask], todo: list[ArtifactTask]) -> int:
    """When this run checks new data and goes on past the check, the check runs first, alone: the drift it
    shows against the previous run is judged before anything trains on the data."""
    datacheck = datacheck_node(nodes)
    if datacheck is None or datacheck not in todo or nodes.index(datacheck) == len(nodes) - 1:
        return 0
    first = top_task(argparse.Namespace(**{**vars(args), "until": datacheck.stage}))
    return build_and_report(args, first, artifact_tasks(first), quiet=True)


def data_checked(nodes: list[ArtifactTask]) -> bool:
    """Whether this run's data check is done (its drift can be judged)."""
    datacheck = datacheck_node(nodes)
    return datacheck is not None and datacheck.complete()


def drift_exit_code(drift: dict[str, object] | None) -> int:
    if drift and drift.get("failed"):
        print("tfpipe: stopped before training: the data drifted (DataCheck.on_drift=fail)", file=sys.stderr)
        return luigi.retcodes.retcode().task_failed
    return 0


def new_run_id() -> str:
    """A run's name in the run log (``tfpipe history`` prints it, ``tfpipe compare`` takes it): time and a suffix."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def build_and_report(args: argparse.Namespace, task: Pipeline, nodes: list[ArtifactTask], *,
                     quiet: bool = False) -> int:
    """Luigi builds ``task``; the outcome printed (``quiet``: failures only), and turned into the exit status."""
    result, failures = build(args, task)
    code = exit_code_for(result.status)
    # Luigi reports success when a worker found nothing more to do, even if other workers of a central luigid
    # are still building what this pipeline needs (``[worker] keep_alive`` makes it wait; this is the guard).
    unfinished = [node.stage for node in nodes if not node.complete()]
    if result.status == LuigiStatusCode.NOT_RUN and not unfinished and not failures:
        # Only the wrapper was "not granted run permission": another worker of the same luigid was running it,
        # and every stage it needs is done. That is this run's success too.
        code = 0
    if not code and unfinished:
        print(f"tfpipe: {args.pipeline}: {', '.join(unfinished)} not done (left to another worker)", file=sys.stderr)
        return luigi.retcodes.retcode().not_run
    if code:
        print(result.summary_text)
        for line in failures:
            print(f"tfpipe: {line}", file=sys.stderr)
        return code
    if quiet:
        return 0
    print(f"tfpipe: {args.pipeline} done up to {args.until or 'the last stage'}")
    print_outputs(task)
    return publish_exit_code(nodes)


# ---- Luigi ---------------------------------------------------------------------------------------------------
def build(args: argparse.Namespace, task: Pipeline) -> tuple[LuigiRunResult, list[str]]:
    """``luigi.build`` of ``task``, and one line per task that failed in this process."""
    options = build_options(args)
    with failures_reported() as failures, expected_errors_without_traceback():
        try:
            result = luigi.build([task], **options)
        except luigi.rpc.RPCError as error:  # the scheduler went away mid-run
            raise ConnectionError(f"--scheduler-url {args.scheduler_url}: {error}") from None
    return result, failures


def build_options(args: argparse.Namespace) -> dict[str, object]:
    options: dict[str, object] = {"workers": args.workers, "detailed_summary": True, "log_level": args.log_level}
    if args.scheduler_url:
        check_scheduler(args.scheduler_url)
        options["scheduler_url"] = args.scheduler_url
    else:
        options["local_scheduler"] = True
    return options


def check_scheduler(url: str, timeout_s: float = 5.0) -> None:
    """A clear error at once when nothing listens at ``url`` (Luigi would retry for a minute, then trace back)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--scheduler-url {url}: expected http://HOST:PORT")
    try:
        socket.create_connection((parts.hostname, parts.port or 8082), timeout=timeout_s).close()
    except OSError as error:
        raise ConnectionError(f"--scheduler-url {url}: no Luigi scheduler answers ({error})") from None


@contextmanager
def failures_reported() -> Iterator[list[str]]:
    """``<Family> failed: <message>`` for every task failure while inside (Luigi's FAILURE event, public API)."""
    failures: list[str] = []

    def remember_failure(failed: luigi.Task, error: BaseException) -> None:
        failures.append(f"{failed.task_family} failed: {describe_error(error)}")

    luigi.Task.event_handler(luigi.Event.FAILURE)(remember_failure)
    try:
        yield failures
    finally:
        luigi.Task.remove_event_handler(luigi.Event.FAILURE, remember_failure)


class ExpectedErrorsWithoutTraceback(logging.Filter):
    """Luigi logs a failed task with its traceback; for an expected error (bad input) the message is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], EXPECTED_ERRORS):
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {describe_error(error, named=True)}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


@contextmanager
def expected_errors_without_traceback() -> Iterator[None]:
    luigi_logger = logging.getLogger("luigi-interface")
    quiet = ExpectedErrorsWithoutTraceback()
    luigi_logger.addFilter(quiet)
    try:
        yield
    finally:
        luigi_logger.removeFilter(quiet)


def exit_code_for(status: LuigiStatusCode) -> int:
    """The ``[retcode]`` of luigi.cfg for ``status`` (never 0 for a failure)."""
    codes = luigi.retcodes.retcode()
    mapping = {
        LuigiStatusCode.SUCCESS: 0,
        LuigiStatusCode.SUCCESS_WITH_RETRY: 0,
        LuigiStatusCode.FAILED: codes.task_failed,
        LuigiStatusCode.FAILED_AND_SCHEDULING_FAILED: max(codes.task_failed, codes.scheduling_error),
        LuigiStatusCode.SCHEDULING_FAILED: codes.scheduling_error,
        LuigiStatusCode.NOT_RUN: codes.not_run,
        LuigiStatusCode.MISSING_EXT: codes.missing_data,
    }
    code = mapping.get(status, codes.unhandled_exception)
    # A failure must never look like success, even with a luigi.cfg that maps it to 0.
    return code if code or status in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY) else 1
