"""The ``tfpipe`` command: run, status, explain, history, compare, predict, ...

Each command is a module of pipelines/commands/ (``add_parser`` declares its flags, ``run`` does it); this
module assembles the parser and dispatches. ``status`` and ``explain`` only read manifests and stat sources:
they never import TensorFlow. The datasets, stages and their choices all come from the registry and the stage
chain.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from luigi.task_register import Register

from pipelines.commands import compare, explain, gc, history, member, params, predict, run, status
from pipelines.commands.common import EXPECTED_ERRORS, configure, print_error
from pipelines.stages import register_wrappers
from tasks.runtime.quiet import quiet_output

# In the order ``tfpipe --help`` lists them.
COMMANDS = (run, status, explain, history, compare, gc, member, params, predict)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfpipe", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    register_wrappers()
    # A new run in this process sees its sources afresh: Luigi would hand back the previous run's instances.
    Register.clear_instance_cache()
    args = build_parser().parse_args(argv)
    handler = {command.NAME: command.run for command in COMMANDS}[args.command]
    try:
        configure(args)
        # TensorFlow's start-up logs and the libraries' warnings hidden below debug (set before TF is imported).
        with quiet_output(getattr(args, "log_level", "WARNING")):
            return handler(args)
    except EXPECTED_ERRORS as error:
        print_error(error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
