"""One Train run from its plan: ``train`` chooses how (a head on bottleneck features, ``model.fit`` in this
process or a fresh one, or the chief's part of a cluster), then writes the artifact's model, history, curves
and train_info.json and returns the manifest's fields. No Luigi; TensorFlow inside the functions only.

A run resumes after a kill from its work directory (outside the artifact being built) and fails on a NaN loss.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.data.split_sizes import check_split_sizes
from tasks.training.files import (
    BACKUP_DIR,
    HISTORY_FILE,
    MODEL_FILE,
    TENSORBOARD_DIR,
    TRAIN_INFO_FILE,
    TRAINING_CURVES_FILE,
)
from tasks.training.plan import TrainingJob, TrainingPlan, shard_files
from tasks.training.strategies import is_cluster_strategy

Progress = Callable[[int, int, str], None]  # (done, total, message)


def train(plan: TrainingPlan, out_dir: Path, work_dir: Path, *, rendezvous: Path | None = None,
          progress: Progress | None = None, status: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``plan`` into ``out_dir``, checkpointing in ``work_dir`` (removed at the end); a cluster strategy
    meets its members in the ``rendezvous`` directory. ``progress`` hears of every epoch, ``status`` of the
    members a chief waits for. Returns the manifest fields."""
    from tasks.data.shards import load_dataset_info, load_split_arrays
    from tasks.training.curves import plot_training_curves

    shards = plan.examples_dir
    info = load_dataset_info(shards)
    files = shard_files(shards, info)
    if "validation" not in files:
        raise ValueError(f"{shards}: no validation split; set ImageDirs.validation_fraction > 0")
    check_split_sizes(info, ("train", "validation"), replicas=plan.training_replicas(), strategy=plan.strategy)
    config = plan.train_config(info)
    cluster = is_cluster_strategy(plan.strategy)
    if not cluster and work_dir.exists() and not (work_dir / BACKUP_DIR).exists():
        # fit deletes its backup when it ends: this is a finished training killed before its commit (or one
        # killed before its first epoch). Resuming would append its epochs to the old history again.
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def on_epoch(epoch: int, logs: dict) -> None:
        if progress is not None:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()) if isinstance(v, float))
            progress(epoch, config.epochs, f"epoch {epoch}/{config.epochs}: {shown}")

    stats: dict[str, Any] = {}
    if cluster:
        from tasks.training.member import lead_cluster

        if rendezvous is None:
            raise ValueError(f"Train.strategy={plan.strategy} needs a rendezvous directory for its cluster")
        stats = lead_cluster(plan, config, info, work_dir, out_dir / MODEL_FILE, rendezvous, on_epoch=on_epoch,
                             status=status)
    elif plan.on_features:
        from tasks.training.head import train_on_features

        train_on_features(plan, config, info, work_dir, out_dir, on_epoch).save(out_dir / MODEL_FILE)
    else:
        samples, _ = load_split_arrays(shards, "train", limit=8)
        job = plan.job(config, info, work_dir, model_file=out_dir / MODEL_FILE, sample_images=samples)
        if config.cpu_devices:  # logical devices can be made only before TensorFlow starts
            from tasks.runtime.fresh_process import run_in_fresh_process

            stats = run_in_fresh_process(fit_and_save, job, on_report=on_epoch)
        else:
            stats = fit_and_save(job, on_epoch)
    shutil.copy(work_dir / HISTORY_FILE, out_dir / HISTORY_FILE)
    shutil.copytree(work_dir / TENSORBOARD_DIR, out_dir / TENSORBOARD_DIR)
    plot_training_curves(out_dir / HISTORY_FILE, out_dir / TRAINING_CURVES_FILE)
    epochs_run = max(0, len((out_dir / HISTORY_FILE).read_text().splitlines()) - 1)
    train_info = {"model": plan.trained_model_name(config), "image_shape": list(config.image_shape),
                  "num_classes": config.num_classes, "num_heads": config.num_heads,
                  "epochs_completed": epochs_run}
    (out_dir / TRAIN_INFO_FILE).write_text(json.dumps(train_info, indent=2, sort_keys=True))
    shutil.rmtree(work_dir, ignore_errors=True)
    return {"epochs_completed": epochs_run, "model_file": MODEL_FILE, "started_at": started_at,
            "budget": plan.budget(info).to_json(), "class_weights": list(config.class_weights) or None, **stats}


def fit_and_save(job: TrainingJob, report: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """``model.fit`` of ``job`` (resuming from its work directory), the model saved to ``job.model_file``;
    returns the stats the manifest records (replicas in sync, steps taken)."""
    from tasks.training.fit import fit

    stats: dict[str, Any] = {}
    model = fit(job.config, list(job.train_files), list(job.validation_files), job.work_dir,
                sample_images=job.sample_images, on_epoch=report, stats=stats)
    if job.model_file is not None:
        model.save(job.model_file)
    return stats
