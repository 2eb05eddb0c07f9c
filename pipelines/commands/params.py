"""``tfpipe params [FAMILY]``: every parameter ``--set`` takes, with its default (luigi.cfg included) and
description."""

from __future__ import annotations

import argparse

import luigi

from pipelines.commands.common import Subparsers, closest, is_set_by_pipeline, known_families
from pipelines.stages import Pipeline
from tasks.store.task import ArtifactTask

NAME = "params"


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="every parameter --set takes, with its default and description")
    parser.add_argument("family", nargs="?", default="", help="one task family (default: all)")


def run(args: argparse.Namespace) -> int:
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


def settable_families() -> dict[str, type[luigi.Task]]:
    """tfpipe's own task and config classes (what ``--set`` is for), by family name."""
    return {name: cls for name, cls in known_families().items()
            if cls.__module__.split(".")[0] in ("tasks", "pipelines") and not issubclass(cls, Pipeline)
            and cls is not ArtifactTask}


def describe_parameters(family: str, cls: type[luigi.Task]) -> list[str]:
    """One line per parameter ``--set`` takes: name, current default (luigi.cfg included) and description."""
    lines = []
    for name, param in cls.get_params():
        if is_set_by_pipeline(family, name):
            continue
        default = param.task_value(family, name) if param.has_task_value(family, name) else "(required)"
        shown = default if isinstance(default, str) else param.serialize(default)
        description = f"  {param.description}" if param.description else ""
        lines.append(f"  {family}.{name} = {shown or repr('')}{description}")
    return lines
