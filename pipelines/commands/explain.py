"""``tfpipe explain``: why each to-do stage runs, from its identity and the newest finished artifact of its
family. Like ``status``, it never imports TensorFlow."""

from __future__ import annotations

import argparse
from typing import Any

from pipelines.commands.common import Subparsers, add_pipeline_arguments
from pipelines.commands.dag import artifact_tasks, top_task
from tasks.store.artifacts import find_artifacts
from tasks.store.task import ArtifactTask, opened_root

NAME = "explain"


def add_parser(subparsers: Subparsers) -> None:
    add_pipeline_arguments(subparsers.add_parser(NAME, help="why each to-do stage runs"))


def run(args: argparse.Namespace) -> int:
    todo = [n for n in artifact_tasks(top_task(args)) if not n.complete()]
    for node in todo:
        print(f"{node.stage:<10} {node.task_family:<16} runs: {explain_task(node)}")
    if not todo:
        print("nothing to do: every stage is done")
    return 0


def earlier_artifacts(node: ArtifactTask) -> list[tuple[str, dict[str, Any]]]:
    """The finished artifacts of ``node``'s family, newest first: folders, or on a bucket root URLs (one listing
    of ``<stage>/<Family>-*`` and the manifests' reads)."""
    artifacts = opened_root().artifacts
    if artifacts is not None:
        return artifacts.find(node.stage, node.task_family)
    return [(str(path), manifest) for path, manifest in find_artifacts(node.artifact_root, node.stage,
                                                                       node.task_family)]


def explain_task(node: ArtifactTask) -> str:
    """Why a stage would run: compare its identity with the newest finished artifact of its family."""
    previous = earlier_artifacts(node)
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
