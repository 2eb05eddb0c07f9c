"""``tfpipe gc``: remove the artifacts no kept run, published version or running run needs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pipelines.commands.common import Subparsers, add_artifacts_argument
from tasks.store.task import opened_root

if TYPE_CHECKING:
    from tasks.store.mirror import BucketArtifacts

NAME = "gc"


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="remove artifacts no kept run, published version or running run needs")
    parser.add_argument("--keep", type=int, default=3, help="recorded runs kept per pipeline")
    parser.add_argument("--dry-run", action="store_true", help="print what would be removed, remove nothing")
    parser.add_argument("--grace-hours", type=float, default=24.0,
                        help="bucket roots: an upload without its manifest (or a feature pack without its keys) "
                             "younger than this may be in progress and is kept")
    add_artifacts_argument(parser)


def run(args: argparse.Namespace) -> int:
    root = opened_root()
    if root.artifacts is not None:
        return run_on_bucket(args, root.artifacts)
    from tasks.features.cache import unused_packs
    from tasks.store.gc import apply_gc, plan_gc, size_of

    plan = plan_gc(root.local, args.keep, cache_sweepers=(unused_packs,))
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


def run_on_bucket(args: argparse.Namespace, artifacts: BucketArtifacts) -> int:
    """The same on a bucket root (tasks/store/bucket_gc.py): one listing, a few reads, batched deletes."""
    from tasks.features.bucket_packs import unused_bucket_packs
    from tasks.store.bucket_gc import apply_bucket_gc, described, plan_bucket_gc

    if args.grace_hours < 0:
        raise ValueError(f"--grace-hours must be >= 0, got {args.grace_hours}")
    bucket = artifacts.bucket
    plan = plan_bucket_gc(bucket, args.keep, cache_sweepers=(unused_bucket_packs,), grace_s=args.grace_hours * 3600)
    for line in described(plan.remove, bucket):
        print(f"{'would remove' if args.dry_run else 'remove'} {line}")
    if plan.packs_skipped_reason:
        print(f"note: {plan.packs_skipped_reason}")
    requests = plan.requests + (0 if args.dry_run else apply_bucket_gc(plan, bucket, artifacts))
    objects = sum(len(removal.objects) for removal in plan.remove)
    print(f"{'would free' if args.dry_run else 'freed'} {plan.freed_bytes() / 2**20:.1f} MiB in {objects} object(s) "
          f"of {len(plan.remove)} path(s); kept {plan.kept} artifact(s); {requests} request(s) to "
          f"{bucket.location.url}")
    return 0
