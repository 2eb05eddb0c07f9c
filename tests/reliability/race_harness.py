"""Run the real ``tfpipe`` CLI in this process, counting builds, after a start barrier shared with a rival.

Used by ``test_races.py`` only, as ``python -m tests.reliability.race_harness --events FILE --ready FILE --go FILE
[--import-tf] -- run PIPELINE ...``:

1. it imports the CLI (Luigi and every task class; TensorFlow too with ``--import-tf``), so the slow imports are
   over before the race starts;
2. in this process only, it wraps the store's build (``tasks.store.artifacts.building``) to append
   ``<Family>-<key> <harness pid> <pid> start`` and ``... end ok|error`` lines to ``--events`` (one
   ``os.write`` each on an ``O_APPEND`` descriptor: short lines from several processes never interleave), so
   the test counts how often each artifact's build really ran, with no hook in product code;
3. it creates ``--ready``, waits for ``--go`` to appear (the test creates it when both rivals are ready) and
   then calls ``pipelines.cli.main`` with the remaining arguments, exiting with its code.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BARRIER_TIMEOUT_S = 300.0
POLL_S = 0.0005  # the rivals leave the barrier within about a millisecond of each other


def append_line(path: Path, line: str) -> None:
    """One atomic append (a line far below PIPE_BUF, O_APPEND): safe from several processes at once."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def install_build_counter(events: Path) -> None:
    """Wrap ``tasks.store.artifacts.building`` (the one door every stage's build goes through:
    ``ArtifactTask.run`` looks it up at call time) to log each build's start and end under its artifact
    directory's name, ``<Family>-<key>``."""
    from tasks.store import artifacts as store

    original = store.building
    harness_pid = os.getpid()  # Luigi may fork a worker process per task; the lines name both

    @contextlib.contextmanager
    def counted_building(root: Path, identity: store.ArtifactIdentity) -> Iterator[tuple[Path, dict[str, Any]]]:
        prefix = f"{identity.family}-{identity.key} {harness_pid} {os.getpid()}"
        append_line(events, f"{prefix} start")
        try:
            with original(root, identity) as built:
                yield built
        except BaseException:
            append_line(events, f"{prefix} end error")
            raise
        append_line(events, f"{prefix} end ok")

    store.building = counted_building  # type: ignore[assignment]


def wait_at_barrier(ready: Path, go: Path, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
    ready.touch()
    deadline = time.monotonic() + timeout_s
    while not go.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"race_harness: {go} did not appear within {timeout_s:.0f} s")
        time.sleep(POLL_S)


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="race_harness")
    parser.add_argument("--events", type=Path, required=True, help="file the build start/end lines are appended to")
    parser.add_argument("--ready", type=Path, required=True, help="created when this process is ready to race")
    parser.add_argument("--go", type=Path, required=True, help="the race starts when this file appears")
    parser.add_argument("--import-tf", action="store_true", help="import TensorFlow before the barrier")
    parser.add_argument("cli_args", nargs=argparse.REMAINDER, help="-- then the tfpipe arguments")
    args = parser.parse_args(argv)
    cli_args = args.cli_args[1:] if args.cli_args[:1] == ["--"] else args.cli_args
    return args, cli_args


def main(argv: Sequence[str] | None = None) -> int:
    args, cli_args = parse_args(sys.argv[1:] if argv is None else argv)
    from pipelines import cli

    if args.import_tf:
        import tensorflow  # noqa: F401 - imported now so that both rivals start training at the same moment
    install_build_counter(args.events)
    wait_at_barrier(args.ready, args.go)
    return cli.main(cli_args)


if __name__ == "__main__":
    sys.exit(main())
