"""Publish stage: promote a frozen model to ``<root>/published/<name>/<version>/`` only when it is not worse.

Switched on by the pipeline parameter ``publish`` (``tfpipe run ... --publish [--name NAME]``). The gate: the
new model's evaluation metric (the dataset's: whole-captcha accuracy for captchas, top-1 otherwise) must be
at least the current published model's minus ``tolerance``, and at least ``floor``; a model that did not learn
(at chance level, see tasks/evaluation/health.py) is refused whatever the floor. A passing model is
copied to the next integer version (a SavedModel directory: ``saved_model.pb`` at its top, labels and the
frozen graph beside it, so TF Serving's ``model_base_path`` can point at ``published/<name>/``) and
``current`` is pointed at it, replaced atomically. A refused model is kept where it is; this stage's
artifact says why, and ``tfpipe run`` exits with ``[PublishGate] refused_exit_code``.

On a bucket root (``s3://bucket/prefix``) the versions and ``current`` are objects on the bucket, written by
tasks/export/publish_bucket.py (numbers claimed by a conditional create, ``saved_model.pb`` uploaded last,
``current`` a ``{"version": N}`` object moved by a conditional write); nothing is published in the host's
mirror. The gate is the same, against the bucket's current version's record.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import luigi

from tasks.evaluation.files import METRICS_FILE
from tasks.evaluation.health import HEALTH_KEY
from tasks.export.files import (
    CURRENT_LINK,
    PUBLISH_LOCK_FILE,
    PUBLISH_RECORD_FILE,
    PUBLISHED_FILES,
    SAVED_MODEL_DIR,
    STAGING_PREFIX,
)
from tasks.store.layout import PUBLISHED_DIR
from tasks.store.task import ArtifactTask, opened_root


class PublishGate(luigi.Config):
    """How ``tfpipe run`` exits when the publish gate refuses a model (luigi.cfg ``[PublishGate]``)."""

    refused_exit_code = luigi.IntParameter(default=5)


def published_root(artifact_root: Path, name: str) -> Path:
    return Path(artifact_root) / PUBLISHED_DIR / name


def current_version(root: Path) -> tuple[int, dict[str, Any]] | None:
    """(version, its publish.json) that ``current`` points at, or None before the first publish."""
    link = root / CURRENT_LINK
    if not link.is_symlink():
        return None
    target = root / os.readlink(link)
    try:
        return int(target.name), json.loads((target / PUBLISH_RECORD_FILE).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{link}: points at {target}, which is not a published version ({error})") from None


def versions(root: Path) -> list[int]:
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()) if root.is_dir() else []


def gate(value: float, current: float | None, *, tolerance: float, floor: float,
         health: dict[str, Any] | None = None) -> str:
    """'' when the model may be published, else why not. A model that did not learn (its evaluation's health)
    is refused whatever the floor."""
    if health and not health.get("learned", True):
        named = next((w for w in health.get("warnings", []) if w.startswith("did not learn")), "did not learn")
        return f"the model {named}"
    if value < floor:
        return f"metric {value:.4f} is below the floor {floor:.4f}"
    if current is not None and value < current - tolerance:
        return f"metric {value:.4f} is worse than the current model's {current:.4f} (tolerance {tolerance})"
    return ""


def copy_version(frozen: Path, destination: Path) -> None:
    """The freeze artifact as a SavedModel directory: the SavedModel's files at the top, the rest beside it."""
    shutil.copytree(frozen / SAVED_MODEL_DIR, destination)
    for name in PUBLISHED_FILES:
        if (frozen / name).exists():
            shutil.copy(frozen / name, destination / name)


def point_current(root: Path, version: int) -> None:
    temp = root / f".{CURRENT_LINK}.{os.getpid()}"
    temp.unlink(missing_ok=True)
    temp.symlink_to(str(version))
    os.replace(temp, root / CURRENT_LINK)


class Publish(ArtifactTask):
    stage = "publish"
    version = 2
    reads = ("frozen", "evaluation")
    provides = "published"

    dataset = luigi.Parameter(description="the dataset's name (the default published name)")
    dataset_metric = luigi.Parameter(default="top1_accuracy", description="the metric the gate compares "
                                                                          "(set by the pipeline)")
    name = luigi.Parameter(default="", description="published name ('' = the pipeline's)")
    tolerance = luigi.FloatParameter(default=0.0, description="how much worse than current may still be published")
    floor = luigi.FloatParameter(default=0.0, description="the lowest metric ever published")

    def published_name(self) -> str:
        name = self.name or self.dataset
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"Publish.name {name!r} must be one plain path component")
        return name

    def build(self, out_dir: Path) -> dict[str, Any]:
        metrics = json.loads((self.input_dir("evaluation") / METRICS_FILE).read_text())
        if self.dataset_metric not in metrics:
            raise ValueError(f"{self.input_dir('evaluation')}: {METRICS_FILE} has no {self.dataset_metric!r}")
        value = float(metrics[self.dataset_metric])
        health = metrics.get(HEALTH_KEY)

        def judge(current: float | None) -> str:
            return gate(value, current, tolerance=self.tolerance, floor=self.floor, health=health)

        artifacts = opened_root().artifacts
        if artifacts is None:
            decision = self.publish_locally(value, judge)
        else:  # a bucket root: versions and current are objects there (tasks/export/publish_bucket.py)
            from tasks.export.publish_bucket import publish

            frozen = self.upstream_task("frozen")
            decision = publish(artifacts.bucket, self.published_name(), self.input_dir("frozen"), judge=judge,
                               record={"metric": self.dataset_metric, "value": value,
                                       "freeze_artifact": artifacts.prefix(frozen.identity)})
        decision = {"name": self.published_name(), "metric": self.dataset_metric, "value": value, **decision}
        (out_dir / PUBLISH_RECORD_FILE).write_text(json.dumps(decision, indent=2, sort_keys=True))
        notice = (f"published {decision['name']} version {decision['published_version']} "
                  f"({self.dataset_metric} {value:.4f})"
                  if decision["published"] else f"not published: {decision['reason']}")
        return {**{k: v for k, v in decision.items() if k != "name"}, "published_name": decision["name"],
                "notices": [notice]}

    def publish_locally(self, value: float, judge: Callable[[float | None], str]) -> dict[str, Any]:
        """``published/<name>/<version>/`` and the ``current`` symlink under the local root, one publisher of a
        name at a time (an flock)."""
        import fcntl

        root = published_root(self.artifact_root, self.published_name())
        root.mkdir(parents=True, exist_ok=True)
        with open(root / PUBLISH_LOCK_FILE, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one publisher of this name at a time
            current = current_version(root)
            reason = judge(current[1]["value"] if current else None)
            decision: dict[str, Any] = {"current_version": current[0] if current else None,
                                        "current_value": current[1]["value"] if current else None}
            if reason:
                decision.update(published=False, reason=reason)
            else:
                decision.update(published=True, published_version=self.promote(root, value))
        return decision

    def promote(self, root: Path, value: float) -> int:
        version = (versions(root) or [0])[-1] + 1
        staging = root / f"{STAGING_PREFIX}{version}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        copy_version(self.input_dir("frozen"), staging)
        record = {"version": version, "metric": self.dataset_metric, "value": value,
                  "freeze_artifact": str(self.input_dir("frozen").resolve()),
                  "published_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (staging / PUBLISH_RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
        os.rename(staging, root / str(version))
        point_current(root, version)
        return version
