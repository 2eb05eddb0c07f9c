"""The ``tfpipe`` command: run, status, explain, predict.

``run`` hands the DAG to Luigi (local scheduler, or ``--scheduler-url`` for a central luigid) and exits
with the ``[retcode]`` of luigi.cfg when anything failed: ``luigi.build`` alone returns normally.
``status`` and ``explain`` only read manifests: they never import TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import luigi
import luigi.retcodes
from luigi.execution_summary import LuigiStatusCode
from luigi.task import flatten

from pipelines.stages import STAGES, stage_task
from tasks.base import ArtifactTask
from tasks.store import find_artifacts

PIPELINES = ("cifar10", "cifar100", "captcha", "hwdb")
PROJECT_CONFIG = Path(__file__).resolve().parents[1] / "luigi.cfg"


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


def apply_overrides(assignments: Sequence[str]) -> None:
    """``Family.param=value`` -> ``[Family] param = value``, which Luigi uses as the parameter default."""
    for assignment in assignments:
        target, sep, value = assignment.partition("=")
        family, dot, param = target.partition(".")
        if not sep or not dot or not family or not param:
            raise SystemExit(f"--set expects Family.param=value, got {assignment!r}")
        set_config(family, param, value)


def configure(args: argparse.Namespace) -> None:
    load_project_config()
    if getattr(args, "artifacts", None):
        set_config("ArtifactStore", "root", args.artifacts)
    apply_overrides(getattr(args, "set", None) or [])


# ---- the DAG -----------------------------------------------------------------------------------------------
def top_task(args: argparse.Namespace) -> ArtifactTask:
    return stage_task(args.pipeline, args.until, args.source or "", args.checksum or "")


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


# ---- commands ----------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    task = top_task(args)
    build_options: dict[str, object] = {"workers": args.workers, "detailed_summary": True,
                                        "log_level": args.log_level}
    if args.scheduler_url:
        build_options["scheduler_url"] = args.scheduler_url
    else:
        build_options["local_scheduler"] = True
    result = luigi.build([task], **build_options)
    code = exit_code_for(result.status)
    print(result.summary_text if code else f"tfpipe: {args.pipeline} done up to {args.until}")
    if code == 0:
        print_outputs(task)
    return code


def print_outputs(task: ArtifactTask) -> None:
    for node in walk(task):
        if isinstance(node, ArtifactTask):
            print(f"  {node.stage:<10} {node.artifact_dir}")
    manifest = task.output().manifest()
    for label, name in (("report", "report_html"), ("model", "model_dir")):
        if name in manifest:
            print(f"{label}: {(task.artifact_dir / manifest[name]).resolve()}")


def cmd_status(args: argparse.Namespace) -> int:
    pending = 0
    for node in walk(top_task(args)):
        if not isinstance(node, ArtifactTask):
            continue
        done = node.complete()
        pending += not done
        print(f"{'done ' if done else 'to-do'}  {node.stage:<10} {node.task_family:<16} {node.artifact_dir}")
    print(f"{pending} stage(s) to do")
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
    nodes = [n for n in walk(top_task(args)) if isinstance(n, ArtifactTask)]
    todo = [n for n in nodes if not n.complete()]
    for node in todo:
        print(f"{node.stage:<10} {node.task_family:<16} runs: {explain_task(node)}")
    if not todo:
        print("nothing to do: every stage is done")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tasks.ops.predict import format_predictions, load_predictor

    model_dir = Path(args.model_dir)
    if (model_dir / "model").is_dir() and not (model_dir / "saved_model").is_dir():
        model_dir = model_dir / "model"
    predictor = load_predictor(model_dir)
    predictions = predictor.predict([Path(p) for p in args.images], batch_size=args.batch_size)
    print(format_predictions(predictions))
    return 0


# ---- argument parsing ---------------------------------------------------------------------------------
def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", choices=PIPELINES)
    parser.add_argument("--source", default="", help="URL or path of the raw data (default: the dataset's own)")
    parser.add_argument("--checksum", default="", help="sha256:<hex> or md5:<hex> pinning --source")
    parser.add_argument("--artifacts", default=None, help="artifact root (default: [ArtifactStore] root)")
    parser.add_argument("--until", choices=STAGES, default="freeze", help="last stage to run")
    parser.add_argument("--set", action="append", default=[], metavar="Family.param=value",
                        help="override a task parameter (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfpipe", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="build the pipeline up to --until")
    add_pipeline_arguments(run)
    run.add_argument("--workers", type=int, default=1)
    run.add_argument("--scheduler-url", default=None, help="central luigid, e.g. http://127.0.0.1:8082")
    run.add_argument("--log-level", default="WARNING")
    for name, text in (("status", "every stage, done or to-do"), ("explain", "why each to-do stage runs")):
        add_pipeline_arguments(commands.add_parser(name, help=text))
    predict = commands.add_parser("predict", help="top-k labels from a frozen model")
    predict.add_argument("model_dir")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--batch-size", type=int, default=64)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure(args)
    if args.command in ("run", "status", "explain"):
        importlib.import_module(f"pipelines.{args.pipeline}")
    handler = {"run": cmd_run, "status": cmd_status, "explain": cmd_explain, "predict": cmd_predict}
    try:
        return handler[args.command](args)
    except (ValueError, FileNotFoundError) as error:
        print(f"tfpipe: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
