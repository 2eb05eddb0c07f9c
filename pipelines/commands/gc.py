"""``tfpipe gc``: remove the artifacts no kept run, published version or running run needs."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.commands.common import Subparsers, add_artifacts_argument
from tasks.store.task import ArtifactStore

NAME = "gc"


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="remove artifacts no kept run, published version or running run needs")
    parser.add_argument("--keep", type=int, default=3, help="recorded runs kept per pipeline")
    parser.add_argument("--dry-run", action="store_true", help="print what would be removed, remove nothing")
    add_artifacts_argument(parser)


def run(args: argparse.Namespace) -> int:
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
