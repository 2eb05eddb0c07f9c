"""The ``tfpipe`` command: run, status, explain, predict.

``run`` hands the DAG to Luigi (local scheduler, or ``--scheduler-url`` for a central luigid) and exits
with the ``[retcode]`` of luigi.cfg when anything failed: ``luigi.build`` alone returns normally.
``status`` and ``explain`` only read manifests and stat sources: they never import TensorFlow.
The datasets, stages and their choices all come from the registry and the stage chain.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import logging
import os
import socket
import sys
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import luigi
import luigi.retcodes
import luigi.rpc
from luigi.execution_summary import LuigiStatusCode
from luigi.task import flatten
from luigi.task_register import Register

from pipelines.registry import DATASETS, get_dataset
from pipelines.stages import Pipeline, params_set_by_pipeline, pipeline_task, register_wrappers, until_choices
from tasks.runtime.error_text import describe_error
from tasks.runtime.quiet import quiet_output
from tasks.store.artifacts import find_artifacts
from tasks.store.runlog import append_run, lease, read_runs
from tasks.store.task import ArtifactStore, ArtifactTask
from tasks.training.cluster import ClusterError

PROJECT_CONFIG = Path(__file__).resolve().parents[1] / "luigi.cfg"
# Errors a user causes (bad input, bad flags, missing files): one line, no traceback.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ClusterError)
logger = logging.getLogger("tfpipe")
# ``tfpipe run --log-level``: Luigi's levels, in any case.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


# ---- configuration ---------------------------------------------------------------------------------------
def load_project_config() -> None:
    """Use the project's luigi.cfg unless the user has their own (``./luigi.cfg`` or LUIGI_CONFIG_PATH)."""
    if not os.environ.get("LUIGI_CONFIG_PATH") and not Path("luigi.cfg").exists() and PROJECT_CONFIG.exists():
        luigi.configuration.add_config_path(str(PROJECT_CONFIG))


def set_config(section: str, option: str, value: str) -> None:
    config = luigi.configuration.get_config()
    if not config.has_section(section):
        config.add_section(section)
    config.set(section, option, value)


def closest(word: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def known_families() -> dict[str, type[luigi.Task]]:
    """Every task and config class Luigi knows, by family name (ambiguous names left out)."""
    families = {}
    for name in Register.task_names():
        try:
            families[name] = Register.get_task_cls(name)
        except luigi.task_register.TaskClassException:
            continue
    return families


def checked_override(assignment: str) -> tuple[str, str, str]:
    """``Family.param=value`` split and checked: the family and parameter exist, the value parses."""
    target, sep, value = assignment.partition("=")
    family, dot, param = target.strip().partition(".")
    if not sep or not dot or not family or not param:
        raise ValueError(f"--set expects Family.param=value, got {assignment!r}")
    families = known_families()
    if family not in families:
        raise ValueError(f"--set {assignment}: no task family {family!r}{closest(family, sorted(families))}")
    params = dict(families[family].get_params())
    if param not in params:
        raise ValueError(f"--set {assignment}: {family} has no parameter {param!r}{closest(param, sorted(params))} "
                         f"(its parameters: {', '.join(sorted(params))})")
    set_by_pipeline = params_set_by_pipeline()
    if (family, param) in set_by_pipeline or (None, param) in set_by_pipeline:
        raise ValueError(f"--set {assignment}: {family}.{param} is set by the pipeline "
                         "(use --source/--checksum for sources, or the registry for dataset defaults)")
    try:
        params[param].normalize(params[param].parse(value))
    except (ValueError, TypeError) as error:
        raise ValueError(f"--set {assignment}: not a valid value for {family}.{param}: {error}") from None
    return family, param, value


def apply_overrides(assignments: Sequence[str]) -> None:
    """``Family.param=value`` -> ``[Family] param = value``, which Luigi uses as the parameter default."""
    for family, param, value in [checked_override(a) for a in assignments]:
        set_config(family, param, value)


def configure(args: argparse.Namespace) -> None:
    load_project_config()
    if getattr(args, "artifacts", None):
        set_config("ArtifactStore", "root", args.artifacts)
    apply_overrides(getattr(args, "set", None) or [])


# ---- the DAG -----------------------------------------------------------------------------------------------
def top_task(args: argparse.Namespace) -> Pipeline:
    wrapper = pipeline_task(args.pipeline)
    params = dict(source=args.source or "", checksum=",".join(args.checksum or []), until=args.until,
                  backbone=args.backbone or "", publish=bool(getattr(args, "publish", False)),
                  name=getattr(args, "name", "") or "")
    # A central luigid knows a task by its id alone: two runs whose --set differ need two wrapper ids, or the
    # second is "not granted run permission" for a wrapper whose dependencies are not its own.
    built = sorted(task.task_id for task in flatten(wrapper(**params).requires()))
    return wrapper(**params, targets=hashlib.sha256("\n".join(built).encode()).hexdigest()[:16])


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
    return [node for node in walk(task) if isinstance(node, ArtifactTask)]


def exit_code_for(status: LuigiStatusCode) -> int:
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


# ---- commands ----------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    task = top_task(args)
    nodes = artifact_tasks(task)  # a bad source or stage fails here, with its message, before Luigi starts
    todo = [node for node in nodes if not node.complete()]
    if not todo:
        # Nothing changed: no scheduler, no workers (a nightly run over an unchanged source ends here).
        print(f"tfpipe: {args.pipeline} up to date: all {len(nodes)} stages done{final_outputs(task)}")
        record_run(args, nodes, ran=[], code=0)
        return 0
    with lease(nodes[0].artifact_root, [node.artifact_dir for node in nodes]):
        code = build_and_report(args, task, nodes)
    record_run(args, nodes, ran=[node for node in todo if node.complete()], code=code)
    return code


def check_scheduler(url: str, timeout_s: float = 5.0) -> None:
    """A clear error at once when nothing listens at ``url`` (Luigi would retry for a minute, then trace back)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--scheduler-url {url}: expected http://HOST:PORT")
    try:
        socket.create_connection((parts.hostname, parts.port or 8082), timeout=timeout_s).close()
    except OSError as error:
        raise ConnectionError(f"--scheduler-url {url}: no Luigi scheduler answers ({error})") from None


def build_and_report(args: argparse.Namespace, task: Pipeline, nodes: list[ArtifactTask]) -> int:
    build_options: dict[str, object] = {"workers": args.workers, "detailed_summary": True,
                                        "log_level": args.log_level}
    if args.scheduler_url:
        check_scheduler(args.scheduler_url)
        build_options["scheduler_url"] = args.scheduler_url
    else:
        build_options["local_scheduler"] = True
    failures: list[str] = []

    @luigi.Task.event_handler(luigi.Event.FAILURE)
    def remember_failure(failed: luigi.Task, error: BaseException) -> None:
        failures.append(f"{failed.task_family} failed: {describe_error(error)}")

    luigi_logger = logging.getLogger("luigi-interface")
    quiet = ExpectedErrorsWithoutTraceback()
    luigi_logger.addFilter(quiet)
    try:
        result = luigi.build([task], **build_options)
    except luigi.rpc.RPCError as error:  # the scheduler went away mid-run
        raise ConnectionError(f"--scheduler-url {args.scheduler_url}: {error}") from None
    finally:
        luigi_logger.removeFilter(quiet)
        luigi.Task._event_callbacks.get(luigi.Task, {}).get(luigi.Event.FAILURE, set()).discard(remember_failure)
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
    print(f"tfpipe: {args.pipeline} done up to {args.until or 'the last stage'}")
    print_outputs(task)
    return publish_exit_code(nodes)


def run_name(args: argparse.Namespace) -> str:
    """Runs are recorded under the published name when there is one, else the pipeline's."""
    return getattr(args, "name", "") or args.pipeline


def record_run(args: argparse.Namespace, nodes: list[ArtifactTask], *, ran: list[ArtifactTask], code: int) -> None:
    """One line in ``runs/<name>.jsonl``: what ``tfpipe history`` shows and ``tfpipe gc`` keeps."""
    done = [node for node in nodes if node.complete()]
    record: dict[str, object] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pipeline": args.pipeline, "exit_code": code,
        "source": sorted({digest for node in nodes if node.provides == "source"
                          for role, digest in node.identity.upstream.items() if role.startswith("source:")}),
        "stages_ran": [node.stage for node in ran],
        "artifacts": [str(node.artifact_dir.resolve()) for node in done],
    }
    metric = get_dataset(args.pipeline).metric  # the one the publish gate compares
    for node in done:
        manifest = node.output().manifest()
        if node.provides == "evaluation" and metric in manifest.get("metrics", {}):
            record["metrics"] = {metric: manifest["metrics"][metric]}
        if node.provides == "evaluation" and "health" in manifest:
            record["health"] = manifest["health"]
        if node.provides == "published":
            record["published"] = manifest.get("published")
            record["published_version"] = manifest.get("published_version")
    append_run(nodes[0].artifact_root, run_name(args), record)


def publish_exit_code(nodes: Sequence[ArtifactTask]) -> int:
    """0, or ``[PublishGate] refused_exit_code`` when this run's publish gate refused the model."""
    from tasks.export.publish_task import Publish, PublishGate

    for node in nodes:
        if isinstance(node, Publish) and not node.output().manifest().get("published", True):
            print(f"tfpipe: {node.published_name()} not published: {node.output().manifest()['reason']}",
                  file=sys.stderr)
            return PublishGate().refused_exit_code
    return 0


def print_outputs(task: Pipeline) -> None:
    nodes = artifact_tasks(task)
    for node in nodes:
        print(f"  {node.stage:<10} {node.artifact_dir}")
    for node in nodes:
        for notice in node.output().manifest().get("notices", []):
            print(f"note: {node.task_family}: {notice}")
    print_health_warnings(nodes)
    for label, path in outputs_of(task):
        print(f"{label}: {path}")


def print_health_warnings(nodes: Sequence[ArtifactTask]) -> None:
    """The evaluation's verdict on the model (tasks/evaluation/health.py): one line per warning, on stderr, when the
    run made the model (an up-to-date run prints its one line; ``tfpipe history`` keeps every verdict)."""
    for node in nodes:
        if node.provides == "evaluation" and node.complete():
            for warning in (node.output().manifest().get("health") or {}).get("warnings", []):
                print(f"tfpipe: warning: model health: {warning}", file=sys.stderr)


def outputs_of(task: Pipeline) -> list[tuple[str, Path]]:
    """The report and model a finished run ends with, as absolute paths."""
    found = []
    for node in flatten(task.requires()):
        manifest = node.output().manifest()
        for label, name in (("report", "report_html"), ("model", "model_dir")):
            if name in manifest:
                found.append((label, (node.artifact_dir / manifest[name]).resolve()))
    return found


def final_outputs(task: Pipeline) -> str:
    shown = ", ".join(f"{label}: {path}" for label, path in outputs_of(task))
    return f" ({shown})" if shown else ""


def cmd_status(args: argparse.Namespace) -> int:
    pending = 0
    for node in artifact_tasks(top_task(args)):
        done = node.complete()
        pending += not done
        print(f"{'done ' if done else 'to-do'}  {node.stage:<10} {node.task_family:<16} {node.artifact_dir}")
    print(f"{pending} stage(s) to do" if pending else "up to date: every stage is done")
    return 0


def explain_task(node: ArtifactTask) -> str:
    """Why a stage would run: compare its identity with the newest finished artifact of its family."""
    previous = find_artifacts(node.artifact_root, node.stage, node.task_family)
    if not previous:
        return "never built"
    path, manifest = previous[0]
    identity = node.identity
    reasons = []
    if manifest.get("version") != identity.version:
        reasons.append(f"code version {manifest.get('version')} -> {identity.version}")
    old_params = manifest.get("params", {})
    for name in sorted(set(old_params) | set(identity.params)):
        if old_params.get(name) != identity.params.get(name):
            reasons.append(f"parameter {name}: {old_params.get(name)!r} -> {identity.params.get(name)!r}")
    old_up = manifest.get("upstream", {})
    for name in sorted(set(old_up) | set(identity.upstream)):
        if old_up.get(name) != identity.upstream.get(name):
            kind = "source" if name.startswith("source:") else "input"
            old, new = old_up.get(name), identity.upstream.get(name)
            reasons.append(f"{kind} {name.removeprefix('source:')}: {old} -> {new}")
    return "; ".join(reasons) or f"an artifact with these inputs exists at {path} but is not valid"


def cmd_explain(args: argparse.Namespace) -> int:
    todo = [n for n in artifact_tasks(top_task(args)) if not n.complete()]
    for node in todo:
        print(f"{node.stage:<10} {node.task_family:<16} runs: {explain_task(node)}")
    if not todo:
        print("nothing to do: every stage is done")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    runs = read_runs(Path(ArtifactStore().root), args.name)
    if not runs:  # a misspelt name must not look like an empty history
        raise ValueError(f"no recorded runs of {args.name!r} under {ArtifactStore().root}")
    if args.json:
        print(json.dumps(runs, indent=2, ensure_ascii=False))
        return 0
    print(f"{'time':<25} {'exit':>4}  {'metric':<24} {'published':<10} stages that ran; model health")
    for run in runs:
        metric = ", ".join(f"{k} {v:.4f}" for k, v in (run.get("metrics") or {}).items()) or "-"
        published = ("v" + str(run["published_version"]) if run.get("published") else
                     "refused" if run.get("published") is False else "-")
        stages = ", ".join(run.get("stages_ran", [])) or "none (up to date)"
        health = "; ".join((run.get("health") or {}).get("warnings", []))
        print(f"{run['time']:<25} {run['exit_code']:>4}  {metric:<24} {published:<10} {stages}"
              + (f"; {health}" if health else ""))
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from tasks.features.cache import unused_packs
    from tasks.store.gc import apply_gc, plan_gc, size_of

    plan = plan_gc(Path(ArtifactStore().root), args.keep, cache_sweepers=(unused_packs,))
    for path in plan.remove:
        print(f"{'would remove' if args.dry_run else 'remove'} {size_of(path) / 2**20:9.1f} MiB  {path}")
    if plan.packs_skipped_reason:
        print(f"note: {plan.packs_skipped_reason}")
    freed = plan.freed_bytes()
    if not args.dry_run:
        apply_gc(plan)
    print(f"{'would free' if args.dry_run else 'freed'} {freed / 2**20:.1f} MiB in {len(plan.remove)} path(s); "
          f"kept {plan.kept} artifact(s)")
    return 0


def cmd_cluster_member(args: argparse.Namespace) -> int:
    """Join the cluster of the pipeline's Train task, as TF_CONFIG's task; exit 0 once the chief's run is done."""
    from tasks.training.task import Train, join_cluster

    [train] = [node for node in artifact_tasks(top_task(args)) if isinstance(node, Train)] or [None]
    if train is None:
        raise ValueError(f"the {args.pipeline} pipeline up to {args.until or 'its end'} has no Train stage")
    if train.complete():
        print(f"{train.task_id} is already done: {train.artifact_dir}")
        return 0
    try:
        join_cluster(train, args.timeout, log=lambda line: print(line, flush=True))
    except RuntimeError as error:  # ClusterError, TrainingDivergedError, a dead training process
        print(f"tfpipe: error: {describe_error(error, named=True)}", file=sys.stderr)
        return luigi.retcodes.retcode().task_failed
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tasks.export.predict import format_predictions, load_predictor

    model_dir = Path(args.model_dir)
    if (model_dir / "model").is_dir() and not (model_dir / "saved_model").is_dir():
        model_dir = model_dir / "model"
    if (model_dir / "current").is_dir() and not (model_dir / "saved_model.pb").exists():
        model_dir = model_dir / "current"  # published/<name>/: the version in service
    if not (model_dir / "labels.txt").is_file():
        raise ValueError(f"{model_dir}: not a frozen tfpipe model (no labels.txt); give a freeze artifact "
                         "directory, a published version or published/<name>")
    predictor = load_predictor(model_dir)
    good, bad = predictor.check_images([Path(p) for p in args.images], batch_size=args.batch_size)
    for item in bad:
        print(f"tfpipe: {item.path}: {item.reason}", file=sys.stderr)
    if bad and not args.skip_bad:
        print(f"tfpipe: {len(bad)} of {len(args.images)} image(s) unreadable; nothing predicted "
              "(--skip-bad predicts the others)", file=sys.stderr)
        return 2
    if good:
        print(format_predictions(predictor.predict_encoded(good, batch_size=args.batch_size)))
    return 2 if bad else 0


def settable_families() -> dict[str, type[luigi.Task]]:
    """tfpipe's own task and config classes (what ``--set`` is for), by family name."""
    return {name: cls for name, cls in known_families().items()
            if cls.__module__.split(".")[0] in ("tasks", "pipelines") and not issubclass(cls, Pipeline)
            and cls is not ArtifactTask}


def describe_parameters(family: str, cls: type[luigi.Task]) -> list[str]:
    """One line per parameter ``--set`` takes: name, current default (luigi.cfg included) and description."""
    set_by_pipeline = params_set_by_pipeline()
    lines = []
    for name, param in cls.get_params():
        if (family, name) in set_by_pipeline or (None, name) in set_by_pipeline:
            continue
        default = param.task_value(family, name) if param.has_task_value(family, name) else "(required)"
        shown = default if isinstance(default, str) else param.serialize(default)
        description = f"  {param.description}" if param.description else ""
        lines.append(f"  {family}.{name} = {shown or repr('')}{description}")
    return lines


def cmd_params(args: argparse.Namespace) -> int:
    families = settable_families()
    if args.family and args.family not in families:
        raise ValueError(f"no task family {args.family!r}{closest(args.family, sorted(families))}; "
                         f"families: {', '.join(sorted(families))}")
    for family in [args.family] if args.family else sorted(families):
        lines = describe_parameters(family, families[family])
        if lines:
            print(f"{family}:")
            print("\n".join(lines))
    return 0


# ---- argument parsing ---------------------------------------------------------------------------------
def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", choices=sorted(DATASETS), help="the dataset's pipeline")
    parser.add_argument("--source", default="", help="URL or path of the raw data (default: the dataset's own)")
    parser.add_argument("--checksum", action="append", default=[], metavar="[ROLE=]ALGO:HEX",
                        help="sha256:<hex> or md5:<hex> pinning --source, or ROLE=sha256:<hex> pinning one of "
                             "a dataset's official files (repeatable)")
    parser.add_argument("--artifacts", default=None, help="artifact root (default: [ArtifactStore] root)")
    parser.add_argument("--until", choices=until_choices(), default="",
                        help="last stage to run (default: freeze, or publish with --publish)")
    parser.add_argument("--backbone", default="", metavar="SPEC",
                        help="transfer learning: keras:<Application> (e.g. keras:InceptionV3), a .keras file, a frozen "
                             ".pb or a tfpipe freeze directory; adds the bottleneck stage (features cached per image)")
    parser.add_argument("--set", action="append", default=[], metavar="Family.param=value",
                        help="override a task parameter (repeatable); unknown names are refused")
    parser.add_argument("--publish", action="store_true",
                        help="after freeze, promote the model to <root>/published/<name>/ if it is not worse")
    parser.add_argument("--name", default="", help="published name (default: the pipeline's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfpipe", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="build the pipeline up to --until")
    add_pipeline_arguments(run)
    run.add_argument("--workers", type=int, default=1)
    run.add_argument("--scheduler-url", default=None, help="central luigid, e.g. http://127.0.0.1:8082")
    run.add_argument("--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS,
                     help="Luigi's log level; debug also shows TensorFlow's logs and the libraries' warnings")
    for name, text in (("status", "every stage, done or to-do"), ("explain", "why each to-do stage runs")):
        add_pipeline_arguments(commands.add_parser(name, help=text))
    history = commands.add_parser("history", help="every recorded run of a pipeline (or published name)")
    history.add_argument("name")
    history.add_argument("--json", action="store_true")
    history.add_argument("--artifacts", default=None, help="artifact root (default: [ArtifactStore] root)")
    gc = commands.add_parser("gc", help="remove artifacts no kept run, published version or running run needs")
    gc.add_argument("--keep", type=int, default=3, help="recorded runs kept per pipeline")
    gc.add_argument("--dry-run", action="store_true", help="print what would be removed, remove nothing")
    gc.add_argument("--artifacts", default=None, help="artifact root (default: [ArtifactStore] root)")
    member = commands.add_parser("cluster-member", help="a worker or parameter server of a multi_worker or "
                                                        "parameter_server Train (TF_CONFIG names which)")
    add_pipeline_arguments(member)
    member.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds to wait for the chief to start training (its upstream stages run first)")
    params = commands.add_parser("params", help="every parameter --set takes, with its default and description")
    params.add_argument("family", nargs="?", default="", help="one task family (default: all)")
    predict = commands.add_parser("predict", help="top-k labels from a frozen model")
    predict.add_argument("model_dir")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--skip-bad", action="store_true",
                         help="predict the readable images and report the others (exit status still 2)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    register_wrappers()
    # A new run in this process sees its sources afresh: Luigi would hand back the previous run's instances.
    Register.clear_instance_cache()
    args = build_parser().parse_args(argv)
    handler = {"run": cmd_run, "status": cmd_status, "explain": cmd_explain, "predict": cmd_predict,
               "history": cmd_history, "gc": cmd_gc, "cluster-member": cmd_cluster_member, "params": cmd_params}
    try:
        configure(args)
        # TensorFlow's start-up logs and the libraries' warnings hidden below debug (set before TF is imported).
        with quiet_output(getattr(args, "log_level", "WARNING")):
            return handler[args.command](args)
    except EXPECTED_ERRORS as error:
        print(f"tfpipe: error: {describe_error(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
