"""Publish stage: promote a frozen model to ``<root>/published/<name>/<version>/`` unless it is worse than the model
in service (the champion) on the same test examples.

Switched on by the pipeline parameter ``publish`` (``tfpipe run ... --publish [--name NAME]``). Before the gate
decides, the champion and the new model (the challenger) are both run on the challenger's test split (the
split its evaluation used; tasks/export/champion.py): examples the champion trained on (the content keys its
version lists in ``trained_on_sha256.txt``) and examples of a class the champion does not know (classes are
matched by name) are left out and counted; on the rest, the paired predictions give both models' metric
(whole-example accuracy: whole-captcha for captchas, top-1 otherwise), per-class deltas, the examples that
flipped, and an exact McNemar test (tasks/export/comparison.py). The gate then refuses a model that did not
learn (at chance level, see tasks/evaluation/health.py), one whose evaluation metric is below ``floor``, one
significantly worse than the champion on the paired examples (more right-to-wrong than wrong-to-right flips,
McNemar ``p < significance``), and, when ``tolerance`` is set, one whose paired metric is more than
``tolerance`` below the champion's; a model that differs only by noise is published. Without a champion only
the floor and health rules apply.

A passing model is copied to the next integer version (a SavedModel directory: ``saved_model.pb`` at its top,
labels, the frozen graph and the content keys of its train split beside it, so TF Serving's
``model_base_path`` can point at ``published/<name>/``) and ``current`` is pointed at it, replaced atomically.
A refused model is kept where it is. Either way this stage's artifact holds ``publish.json`` (the decision, its
reason, and the ``comparison``, computed before any rule refused), ``publish_report.html`` and the picture grid
of flipped examples; ``tfpipe run`` exits with ``[PublishGate] refused_exit_code`` on a refusal.

On a bucket root (``s3://bucket/prefix``) the versions and ``current`` are objects on the bucket, written by
tasks/export/publish_bucket.py (numbers claimed by a conditional create, ``saved_model.pb`` uploaded last,
``current`` a ``{"version": N}`` object moved by a conditional write); nothing is published in the host's
mirror. The gate is the same: the champion is fetched into the host's verified cache
(tasks/export/fetch_model.py) and compared as above, again when another publisher moved ``current`` meanwhile.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import luigi

from tasks.datacheck.files import CLASS_HISTOGRAM_FILE, DATACHECK_FILE
from tasks.evaluation.files import CONFUSION_MATRIX_PLOT_FILE, METRICS_FILE
from tasks.evaluation.health import HEALTH_KEY
from tasks.export.comparison import paired_refusal
from tasks.export.files import (
    CURRENT_LINK,
    FLIPPED_GRID_FILE,
    FROZEN_GRAPH_INFO_FILE,
    LABELS_FILE,
    PUBLISH_LOCK_FILE,
    PUBLISH_RECORD_FILE,
    PUBLISH_REPORT_FILE,
    PUBLISHED_FILES,
    SAVED_MODEL_DIR,
    STAGING_PREFIX,
    TRAINED_ON_FILE,
)
from tasks.formats.tfrecord import read_labels_txt
from tasks.store.layout import PUBLISHED_DIR
from tasks.store.task import ArtifactTask, opened_root
from tasks.training.files import TRAIN_INFO_FILE

if TYPE_CHECKING:
    from tasks.export.champion import ChampionJudge
    from tasks.store.mirror import BucketArtifacts

# The comparison's fields the manifest (and so ``tfpipe history``'s run log) keeps; publish.json has all of it.
SUMMARY_FIELDS = ("champion_version", "metric", "examples", "champion", "challenger", "left_out", "mcnemar")


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


def gate(value: float, comparison: dict[str, Any] | None, *, floor: float, significance: float,
         tolerance: float | None, health: dict[str, Any] | None = None) -> str:
    """'' when the model may be published, else why not: it did not learn (its evaluation's health, whatever the
    floor), its metric ``value`` is below ``floor``, or the ``comparison`` with the champion (None: there is none)
    finds it worse on the paired examples (`paired_refusal`)."""
    if health and not health.get("learned", True):
        named = next((w for w in health.get("warnings", []) if w.startswith("did not learn")), "did not learn")
        return f"the model {named}"
    if value < floor:
        return f"metric {value:.4f} is below the floor {floor:.4f}"
    if comparison is not None:
        return paired_refusal(comparison, significance=significance, tolerance=tolerance)
    return ""


def compared_with(comparison: dict[str, Any] | None) -> str:
    """``; on the same N test examples X vs version V's Y, McNemar p=P`` for a published model's notice."""
    if comparison is None or not comparison["examples"]:
        return ""
    return (f"; on the same {comparison['examples']} test examples {comparison['challenger']:.4f} vs version "
            f"{comparison['champion_version']}'s {comparison['champion']:.4f}, "
            f"McNemar p={comparison['mcnemar']['p_value']:.3g}")


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
    version = 3
    reads = ("frozen", "evaluation", "examples")
    provides = "published"

    dataset = luigi.Parameter(description="the dataset's name (the default published name)")
    dataset_metric = luigi.Parameter(default="top1_accuracy", description="the metric the gate compares "
                                                                          "(set by the pipeline)")
    name = luigi.Parameter(default="", description="published name ('' = the pipeline's)")
    significance = luigi.FloatParameter(default=0.05, description="refuse a model significantly worse than the "
                                                                  "current one on the same test examples (McNemar "
                                                                  "p below this)")
    tolerance = luigi.OptionalFloatParameter(default=None, description="refuse a model whose metric on the same "
                                                                       "test examples is more than this below the "
                                                                       "current one's, significant or not (unset: "
                                                                       "no such rule)")
    floor = luigi.FloatParameter(default=0.0, description="the lowest metric ever published")
    batch_size = luigi.IntParameter(default=256, significant=False, description="images per model call when "
                                                                                "comparing with the current model")

    def published_name(self) -> str:
        name = self.name or self.dataset
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"Publish.name {name!r} must be one plain path component")
        return name

    def check_policy(self) -> None:
        if not 0.0 <= self.significance <= 1.0:
            raise ValueError(f"Publish.significance must be between 0 and 1, got {self.significance}")
        if self.tolerance is not None and self.tolerance < 0:
            raise ValueError(f"Publish.tolerance must be >= 0 (or unset), got {self.tolerance}")
        if self.batch_size < 1:
            raise ValueError(f"Publish.batch_size must be >= 1, got {self.batch_size}")

    def build(self, out_dir: Path) -> dict[str, Any]:
        from tasks.export.champion import ChampionJudge

        self.check_policy()
        metrics = json.loads((self.input_dir("evaluation") / METRICS_FILE).read_text())
        if self.dataset_metric not in metrics:
            raise ValueError(f"{self.input_dir('evaluation')}: {METRICS_FILE} has no {self.dataset_metric!r}")
        value = float(metrics[self.dataset_metric])
        health = metrics.get(HEALTH_KEY)

        def rule(comparison: dict[str, Any] | None) -> str:
            return gate(value, comparison, floor=self.floor, significance=self.significance,
                        tolerance=self.tolerance, health=health)

        judge = ChampionJudge(self.input_dir("examples"), self.input_dir("frozen"), split=metrics.get("split", "test"),
                              metric=self.dataset_metric, batch_size=self.batch_size, rule=rule,
                              status=self.show_status)
        with tempfile.TemporaryDirectory(prefix="tfpipe-publish-") as scratch:
            trained_on = self.trained_on_writer(Path(scratch) / TRAINED_ON_FILE)

            def card(version: int) -> dict[str, Path]:
                return self.model_card(Path(scratch) / f"card-{version}", version, value, judge.comparison)

            artifacts = opened_root().artifacts
            if artifacts is None:
                decision = self.publish_locally(value, judge, trained_on, card)
            else:  # a bucket root: versions and current are objects there (tasks/export/publish_bucket.py)
                decision = self.publish_on_bucket(artifacts, value, judge, trained_on, card)
        decision = {"name": self.published_name(), "metric": self.dataset_metric, "value": value, **decision,
                    "comparison": judge.comparison}
        (out_dir / PUBLISH_RECORD_FILE).write_text(json.dumps(decision, indent=2, sort_keys=True))
        self.write_report(out_dir, decision)
        comparison = judge.comparison
        notice = (f"published {decision['name']} version {decision['published_version']} "
                  f"({self.dataset_metric} {value:.4f}{compared_with(comparison)})"
                  if decision["published"] else f"not published: {decision['reason']}")
        return {**{k: v for k, v in decision.items() if k not in ("name", "comparison")},
                "published_name": decision["name"], "report_html": PUBLISH_REPORT_FILE,
                "comparison": None if comparison is None else {k: comparison[k] for k in SUMMARY_FIELDS},
                "notices": [notice]}

    def trained_on_writer(self, path: Path) -> Callable[[], Path]:
        """Writes (once, when a version is promoted) the content keys of the train split this model learnt from."""
        from tasks.export.champion import split_digests, write_trained_on

        def write() -> Path:
            return path if path.is_file() else write_trained_on(path, split_digests(self.input_dir("examples")))

        return write

    def write_report(self, out_dir: Path, decision: dict[str, Any]) -> None:
        """``publish_report.html`` and, when a champion was compared, the grid of flipped examples."""
        from tasks.export.champion import images_at
        from tasks.export.publish_report import listed_indices, plot_flipped_grid, write_publish_report

        comparison, grid = decision["comparison"], None
        if comparison is not None:
            indices = listed_indices(comparison)
            pixels = images_at(self.input_dir("examples"), comparison["split"], indices)
            grid = plot_flipped_grid(comparison, dict(zip(indices, pixels, strict=True)), out_dir / FLIPPED_GRID_FILE)
        write_publish_report(out_dir / PUBLISH_REPORT_FILE, decision, grid)

    def publish_locally(self, value: float, judge: ChampionJudge, trained_on: Callable[[], Path],
                        card: Callable[[int], dict[str, Path]]) -> dict[str, Any]:
        """``published/<name>/<version>/`` and the ``current`` symlink under the local root, one publisher of a
        name at a time (an flock, held while the models are compared)."""
        import fcntl

        from tasks.export.champion import Champion

        root = published_root(self.artifact_root, self.published_name())
        root.mkdir(parents=True, exist_ok=True)
        with open(root / PUBLISH_LOCK_FILE, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one publisher of this name at a time
            current = current_version(root)
            reason = judge(Champion(current[0], current[1], root / str(current[0])) if current else None)
            decision: dict[str, Any] = {"current_version": current[0] if current else None,
                                        "current_value": current[1]["value"] if current else None}
            if reason:
                decision.update(published=False, reason=reason)
            else:
                decision.update(published=True, published_version=self.promote(root, value, trained_on(), card))
        return decision

    def publish_on_bucket(self, artifacts: BucketArtifacts, value: float, judge: ChampionJudge,
                          trained_on: Callable[[], Path], card: Callable[[int], dict[str, Path]]) -> dict[str, Any]:
        """The version's objects on the bucket; each champion the gate is judged against is fetched into this
        host's mirror (verified by the sha256 its record lists) to be compared."""
        from tasks.export.champion import Champion
        from tasks.export.fetch_model import fetch_published
        from tasks.export.publish_bucket import Current, publish

        bucket, name = artifacts.bucket, self.published_name()

        def judge_current(current: Current | None) -> str:
            if current is None:
                return judge(None)
            local = fetch_published(bucket, name, current.version, current.record, opened_root().local)
            return judge(Champion(current.version, current.record, local))

        frozen = self.upstream_task("frozen")
        return publish(bucket, name, self.input_dir("frozen"), judge=judge_current,
                       record={"metric": self.dataset_metric, "value": value,
                               "freeze_artifact": artifacts.prefix(frozen.identity)},
                       extra_files=lambda version: {TRAINED_ON_FILE: trained_on(), **card(version)})

    def model_card(self, folder: Path, version: int, value: float,
                   comparison: dict[str, Any] | None) -> dict[str, Path]:
        """``model_card.json`` and ``model_card.html`` of the version about to be published, written in ``folder``
        (relative name -> file): the evaluation, the data check, the training's parameters and the comparison."""
        from tasks.modelcard.card import ModelCardInputs, build_model_card
        from tasks.modelcard.render import write_model_card

        frozen = self.upstream_task("frozen")
        train = frozen.upstream.get("model")  # the freeze stage's model: how it was trained
        trained = train.local_artifact() if isinstance(train, ArtifactTask) else None
        info = json.loads((trained / TRAIN_INFO_FILE).read_text()) if trained else {}
        frozen_dir = self.input_dir("frozen")
        evaluation, examples = self.input_dir("evaluation"), self.input_dir("examples")
        geometry = json.loads((frozen_dir / FROZEN_GRAPH_INFO_FILE).read_text())
        check = examples / DATACHECK_FILE
        histogram, confusion = examples / CLASS_HISTOGRAM_FILE, evaluation / CONFUSION_MATRIX_PLOT_FILE
        decision = {"name": self.published_name(), "metric": self.dataset_metric, "value": value, "published": True,
                    "published_version": version, "comparison": comparison}
        card = build_model_card(ModelCardInputs(
            name=self.published_name(), version=version, date=time.strftime("%Y-%m-%d"), dataset=self.dataset,
            metric=self.dataset_metric, metrics=json.loads((evaluation / METRICS_FILE).read_text()),
            class_names=read_labels_txt(frozen_dir / LABELS_FILE), image_shape=geometry["image_shape"],
            architecture=str(info.get("model", "not recorded")),
            train_params=train.output().manifest().get("params", {}) if isinstance(train, ArtifactTask) else {},
            datacheck=json.loads(check.read_text()) if check.is_file() else None, decision=decision,
            artifact_keys={task.stage: task.artifact_key for task in (train, frozen, self.upstream_task("evaluation"),
                                                                       self.upstream_task("examples"))
                           if isinstance(task, ArtifactTask)},
            data_graphics={"Examples per class": histogram.read_bytes()} if histogram.is_file() else {},
            analysis_graphics={"Confusion matrix": confusion.read_bytes()} if confusion.is_file() else {}))
        folder.mkdir(parents=True, exist_ok=True)
        return {name: folder / name for name in write_model_card(folder, card)}

    def promote(self, root: Path, value: float, trained_on: Path, card: Callable[[int], dict[str, Path]]) -> int:
        version = (versions(root) or [0])[-1] + 1
        staging = root / f"{STAGING_PREFIX}{version}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        copy_version(self.input_dir("frozen"), staging)
        shutil.copy(trained_on, staging / TRAINED_ON_FILE)
        for name, path in card(version).items():
            shutil.copy(path, staging / name)
        record = {"version": version, "metric": self.dataset_metric, "value": value,
                  "freeze_artifact": str(self.input_dir("frozen").resolve()),
                  "published_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (staging / PUBLISH_RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
        os.rename(staging, root / str(version))
        point_current(root, version)
        return version
