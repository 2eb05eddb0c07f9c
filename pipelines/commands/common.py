"""What the commands share: luigi.cfg and the artifact root, ``--set`` overrides, the pipeline arguments and
the errors a user causes (reported in one line, without a traceback)."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import luigi
import luigi.configuration
from luigi.task_register import Register, TaskClassException

from pipelines.registry import DATASETS
from pipelines.stages import params_set_by_pipeline, until_choices
from tasks.runtime.error_text import describe_error
from tasks.store.roots import parse_root
from tasks.store.task import ArtifactStore
from tasks.training.cluster import ClusterError

PROJECT_CONFIG = Path(__file__).resolve().parents[2] / "luigi.cfg"
# Errors a user causes (bad input, bad flags, missing files): one line, no traceback.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ClusterError)
# What ``ArgumentParser.add_subparsers`` returns: each command adds its parser to it.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


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


def configure(args: argparse.Namespace) -> None:
    """luigi.cfg, then ``--artifacts`` and ``--set`` of the command line on top."""
    load_project_config()
    if getattr(args, "artifacts", None):
        set_config("ArtifactStore", "root", args.artifacts)
    apply_overrides(getattr(args, "set", None) or [])
    parse_root(ArtifactStore().root)  # a root tfpipe cannot serve is refused before any command uses it


# ---- --set Family.param=value -----------------------------------------------------------------------------
def closest(word: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def known_families() -> dict[str, type[luigi.Task]]:
    """Every task and config class Luigi knows, by family name (ambiguous names left out)."""
    families = {}
    for name in Register.task_names():
        try:
            families[name] = Register.get_task_cls(name)
        except TaskClassException:
            continue
    return families


def is_set_by_pipeline(family: str, param: str) -> bool:
    """The stage chain passes this parameter itself, so a configured value would be ignored."""
    set_by_pipeline = params_set_by_pipeline()
    return (family, param) in set_by_pipeline or (None, param) in set_by_pipeline


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
    if is_set_by_pipeline(family, param):
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


# ---- arguments and errors ---------------------------------------------------------------------------------
def add_artifacts_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", default=None, help="artifact root (default: [ArtifactStore] root)")


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """The pipeline and the flags that pick its DAG: what run, status, explain and cluster-member share."""
    parser.add_argument("pipeline", choices=sorted(DATASETS), help="the dataset's pipeline")
    parser.add_argument("--source", default="", help="URL or path of the raw data (default: the dataset's own)")
    parser.add_argument("--checksum", action="append", default=[], metavar="[ROLE=]ALGO:HEX",
                        help="sha256:<hex> or md5:<hex> pinning --source, or ROLE=sha256:<hex> pinning one of "
                             "a dataset's official files (repeatable)")
    add_artifacts_argument(parser)
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


def print_error(error: BaseException, *, named: bool = False) -> None:
    """``tfpipe: error: <what went wrong>`` on stderr; ``named`` prefixes the error's type."""
    print(f"tfpipe: error: {describe_error(error, named=named)}", file=sys.stderr)
