"""Train stage: Keras fit (default, mirrored) or tfpipe's custom loop on a cluster (multi_worker,
parameter_server) over the TFRecord shards; resumes after a kill; fails on a NaN loss.

TensorFlow is imported inside ``build`` only: checking completion or printing status stays fast. Training that
must configure TensorFlow before its runtime starts (a cluster, or logical CPU devices) runs in a fresh process.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import luigi

from tasks.data.split_sizes import check_split_sizes
from tasks.formats.dataset_info import DatasetInfo
from tasks.runtime.error_text import describe_error
from tasks.store.task import ArtifactTask
from tasks.training.budget import CLASS_WEIGHTING
from tasks.training.strategies import CLUSTER_LIMITS, check_strategy, is_cluster_strategy

MODEL_FILE = "model.keras"
HEAD_FILE = "head.keras"  # with bottleneck features: the head alone (model.keras is backbone + head)


def shard_files(shards: Path, info: DatasetInfo) -> dict[str, list[str]]:
    """Each split's TFRecord shard paths."""
    return {split: [str(shards / name) for name in split_info.files] for split, split_info in info.splits.items()}


class StrategyParameter(luigi.Parameter):
    """default, mirrored, multi_worker or parameter_server (tasks/training/strategies.py)."""

    def normalize(self, x: str) -> str:
        return check_strategy(x)


class Train(ArtifactTask):
    stage = "train"
    version = 4
    reads = ("examples",)
    optional_reads = ("features",)  # with a bottleneck stage: train a head on its cached features
    provides = "model"
    # One accelerator token ([resources] gpu in luigi.cfg, or luigid's own config): Luigi workers on one
    # scheduler run at most that many Train and Bottleneck tasks at once.
    resources = {"gpu": 1}

    dataset_defaults = luigi.DictParameter(
        default={}, description="the dataset's registry defaults: model and augmentation (set by the pipeline)")
    model = luigi.Parameter(default="", description="models/ builder name ('' = the dataset's default)")
    head_hidden_units = luigi.IntParameter(default=0, description="on bottleneck features: units of one hidden "
                                                                   "layer before the softmax (0 = none)")
    head_dropout = luigi.FloatParameter(default=0.0, description="on bottleneck features: dropout before the softmax")
    fine_tune_layers = luigi.IntParameter(default=0, description="on bottleneck features: after the head, unfreeze "
                                                                 "the backbone's top N layers and train end to end")
    fine_tune_epochs = luigi.IntParameter(default=3)
    fine_tune_learning_rate = luigi.FloatParameter(default=1e-5, description="lower than the head's: the "
                                                                             "pretrained weights move little")
    model_options = luigi.DictParameter(default={}, description="extra keyword arguments for the builder")
    epochs = luigi.IntParameter(default=0, description="passes over the training split (0: the dataset's budget "
                                                        "rule, tasks/training/budget.py)")
    batch_size = luigi.IntParameter(default=0, description="the global batch (0: the dataset's)")
    learning_rate = luigi.FloatParameter(default=0.0, description="the peak learning rate, reached after the "
                                                                   "warm-up (0: the dataset's)")
    class_weighting = luigi.ChoiceParameter(choices=CLASS_WEIGHTING, default="auto",
                                            description="weigh the loss by inverse class frequency: auto = only "
                                                        "when the largest class is >= 3x the smallest")
    optimizer = luigi.ChoiceParameter(choices=["adam", "sgd"], default="adam")
    momentum = luigi.FloatParameter(default=0.0, description="sgd: momentum (0 = plain gradient descent)")
    lr_schedule = luigi.ChoiceParameter(choices=["cosine", "constant"], default="cosine")
    jit_compile = luigi.BoolParameter(default=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                      description="XLA; measure first (docs/PERFORMANCE.md)")
    seed = luigi.IntParameter(default=0)
    patience = luigi.IntParameter(default=0, description="early stopping: epochs without a better val_loss "
                                                          "(0: the dataset's)")
    shuffle_buffer = luigi.IntParameter(default=10_000)
    augment = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                  description="the dataset's default augmentation (training only)")
    mixed_precision = luigi.BoolParameter(default=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    strategy = StrategyParameter(default="default", description="default (one device), mirrored (every local GPU, "
                                                                 "or Train.cpu_devices logical CPUs), multi_worker "
                                                                 "or parameter_server (a TF_CONFIG cluster; "
                                                                 "docs/DISTRIBUTED.md)")
    cpu_devices = luigi.IntParameter(default=0, description="mirrored: split the CPU into N logical devices")
    max_steps = luigi.IntParameter(default=0, description="stop after N optimizer steps (0: epochs x steps/epoch)")
    checkpoint_every_steps = luigi.IntParameter(default=0, description="resumable checkpoint every N steps (0: "
                                                                         "every epoch)")
    cluster_timeout = luigi.FloatParameter(default=600.0, significant=False,
                                           description="multi_worker/parameter_server: seconds the chief waits for "
                                                       "every cluster member to join")
    input_autotune = luigi.BoolParameter(default=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                         significant=False,
                                         description="tf.data runtime tuning (off: parallelism = cores)")

    def trained_model_name(self, config: Any) -> str:
        if "features" in self.requires():
            return f"feature head on {self.requires()['features'].backbone}"
        return config.model

    def fit_on_features(self, config: Any, info: DatasetInfo, work: Path, out_dir: Path, on_epoch: Any) -> Any:
        """The head on cached bottleneck features, composed with the backbone into ONE model on images."""
        import numpy as np

        from models.backbones import load_backbone
        from models.heads import compose
        from tasks.features.task import feature_description, load_features
        from tasks.training.fit import fit_head

        bottleneck = self.requires()["features"]
        features_dir = bottleneck.artifact_dir
        views = int(feature_description(features_dir)["views"])
        parts = [load_features(features_dir, f"train.view{v}") for v in range(1, views + 1)] or [
            load_features(features_dir, "train")]
        train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]).astype(np.int32))
        features, labels = load_features(features_dir, "validation")
        head = fit_head(config, train, (features, labels.astype(np.int32)), work,
                        hidden_units=self.head_hidden_units, dropout=self.head_dropout, on_epoch=on_epoch)
        head.save(out_dir / HEAD_FILE)
        if self.fine_tune_layers <= 0:
            return compose(load_backbone(bottleneck.spec(), info.image_shape), head)
        return self.fine_tuned(config, bottleneck.spec(), info, head, work)

    def fine_tuned(self, config: Any, spec: Any, info: DatasetInfo, head: Any, work: Path) -> Any:
        """Backbone (top ``fine_tune_layers`` unfrozen) + the trained head, trained end to end from the images;
        its epochs are appended to history.csv after the head's."""
        import dataclasses

        from models.backbones import load_backbone
        from models.heads import compose
        from tasks.training.fit import fine_tune

        shards = self.input_dir("examples")
        files = shard_files(shards, info)
        tuned = dataclasses.replace(config, epochs=self.fine_tune_epochs, learning_rate=self.fine_tune_learning_rate,
                                    lr_schedule="constant")
        (work / "fine_tune").mkdir(exist_ok=True)

        def build() -> Any:
            return compose(load_backbone(spec, info.image_shape, trainable_top_layers=self.fine_tune_layers), head)

        model = fine_tune(tuned, build, files["train"], files["validation"], work / "fine_tune")
        append_history(work / "history.csv", work / "fine_tune" / "history.csv")
        return model

    def dataset_default(self, name: str) -> Any:
        if name not in self.dataset_defaults:
            raise ValueError(f"Train has no dataset default for {name!r}; its pipeline passes "
                             f"{sorted(self.dataset_defaults)} (set Train.model explicitly outside a pipeline)")
        return self.dataset_defaults[name]

    def model_name(self) -> str:
        return self.model or self.dataset_default("model")

    def work_dir(self) -> Path:
        """Checkpoints and logs that must survive a killed process: outside the temporary build dir."""
        return self.artifact_root / self.stage / ".work" / f"{self.task_family}-{self.artifact_key}"

    def budget(self, info: DatasetInfo) -> Any:
        """Epochs, batch, learning rate, warm-up and patience: the user's values where set, else the dataset's
        defaults sized to its training split by the budget rule."""
        from tasks.training.budget import resolve_budget

        return resolve_budget(self.dataset_defaults, info.count("train"), epochs=self.epochs,
                              batch_size=self.batch_size, learning_rate=self.learning_rate, patience=self.patience,
                              max_steps=self.max_steps)

    def class_weights(self, info: DatasetInfo) -> list[float] | None:
        """Loss weights per class from the training split's label counts (single-label datasets only)."""
        from tasks.training.budget import class_weights

        if info.num_heads != 1:
            return None
        from tasks.data.shards import split_label_counts

        counts = split_label_counts(self.input_dir("examples"), "train", info.num_classes)
        return class_weights(counts, self.class_weighting)

    def train_config(self, info: DatasetInfo) -> Any:
        from tasks.data.input_pipeline import AugmentConfig
        from tasks.training.fit import TrainConfig

        augment = (AugmentConfig(bool(self.dataset_default("flip_left_right")),
                                 float(self.dataset_default("brightness")), float(self.dataset_default("contrast")),
                                 float(self.dataset_default("translate")))
                   if self.augment else AugmentConfig())
        budget = self.budget(info)
        weights = self.class_weights(info)
        return TrainConfig(
            model=self.model_name(), image_shape=info.image_shape, num_classes=info.num_classes,
            num_heads=info.num_heads, epochs=budget.epochs, batch_size=budget.batch_size,
            learning_rate=budget.learning_rate, lr_schedule=self.lr_schedule, jit_compile=self.jit_compile,
            optimizer=self.optimizer, momentum=self.momentum,
            steps_per_epoch=budget.steps_per_epoch, warmup_steps=budget.warmup_steps,
            train_examples=info.count("train"), validation_examples=info.count("validation"),
            seed=self.seed, patience=budget.patience,
            shuffle_buffer=self.shuffle_buffer, augment=augment, mixed_precision=self.mixed_precision,
            strategy=self.strategy, cpu_devices=self.cpu_devices, model_options=dict(self.model_options),
            input_autotune=self.input_autotune, max_steps=self.max_steps,
            checkpoint_every_steps=self.checkpoint_every_steps,
            class_weights=tuple(weights) if weights else (),
        )

    def training_replicas(self) -> int:
        """The replicas sharing each training batch, as far as they are known before TensorFlow starts: the
        logical CPUs of mirrored (its GPUs are counted by fit), the workers of a multi_worker cluster; else one
        (every parameter-server worker reads the whole split)."""
        if self.strategy == "mirrored":
            return max(1, self.cpu_devices)
        if self.strategy == "multi_worker":
            from tasks.training.cluster import cluster_from_env

            return cluster_from_env(self.strategy).num_workers
        return 1

    def check_cluster_options(self) -> None:
        """The options the custom loop does not have are refused before any work, with the reason."""
        chosen = {"features": "features" in self.requires(), "mixed_precision": self.mixed_precision,
                  "jit_compile": self.jit_compile, "cpu_devices": bool(self.cpu_devices)}
        for option, reason in CLUSTER_LIMITS.items():
            if chosen[option]:
                raise ValueError(f"Train.strategy={self.strategy} with {option}: {reason}")

    def rendezvous(self) -> Path:
        from tasks.training.cluster import rendezvous_dir

        return rendezvous_dir(self.artifact_root, f"{self.task_family}-{self.artifact_key}")

    def cluster_run(self, config: Any, info: DatasetInfo, *, is_chief: bool, scratch: Path | None = None,
                    model_file: Path | None = None) -> Any:
        """What one member of the cluster trains with ``config`` (``train_config``: the same for all but who is
        chief and where it writes)."""
        from tasks.training.custom_loop import ClusterRun

        shards = self.input_dir("examples")
        files = shard_files(shards, info)
        return ClusterRun(config=config, train_files=tuple(files["train"]),
                          validation_files=tuple(files["validation"]), image_format=info.image_format,
                          work_dir=self.work_dir(), is_chief=is_chief, scratch_dir=scratch, model_file=model_file)

    def train_on_cluster(self, config: Any, info: DatasetInfo, out_dir: Path, on_epoch: Any) -> dict[str, Any]:
        """The chief's part: announce the run, wait for every member, train in a fresh process, say how it ended."""
        from tasks.runtime.fresh_process import run_in_fresh_process
        from tasks.training import cluster as rendezvous
        from tasks.training.custom_loop import train_on_cluster

        self.check_cluster_options()
        members = rendezvous.cluster_from_env(self.strategy)
        if not members.is_chief:
            raise rendezvous.ClusterError(
                f"this process is {members.me.name} of the {self.strategy} cluster; only the chief, "
                f"{members.chief.name}, runs Train: run `tfpipe cluster-member` here instead")
        directory = self.rendezvous()
        run = rendezvous.announce_chief(directory, members)
        try:
            rendezvous.wait_for_members(directory, members, run, self.cluster_timeout, on_wait=lambda missing: (
                self.set_status_message(f"waiting for {', '.join(m.name for m in missing)}")))
            rendezvous.start(directory, run)
            stats = run_in_fresh_process(train_on_cluster, self.cluster_run(config, info, is_chief=True,
                                                                             model_file=out_dir / MODEL_FILE),
                                         on_report=on_epoch)
        except BaseException as error:
            rendezvous.finish(directory, run, describe_error(error, named=True))
            raise
        rendezvous.finish(directory, run, None)
        return stats

    def build(self, out_dir: Path) -> dict[str, Any]:
        from tasks.data.shards import load_dataset_info, load_split_arrays
        from tasks.training.curves import plot_training_curves

        shards = self.input_dir("examples")
        info = load_dataset_info(shards)
        files = shard_files(shards, info)
        if "validation" not in files:
            raise ValueError(f"{shards}: no validation split; set ImageDirs.validation_fraction > 0")
        check_split_sizes(info, ("train", "validation"), replicas=self.training_replicas(), strategy=self.strategy)
        config = self.train_config(info)
        work = self.work_dir()
        if not is_cluster_strategy(self.strategy) and work.exists() and not (work / "backup").exists():
            # fit deletes its backup when it ends: this is a finished training killed before its commit (or one
            # killed before its first epoch). Resuming would append its epochs to the old history again.
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")

        def on_epoch(epoch: int, logs: dict) -> None:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()) if isinstance(v, float))
            self.report_progress(epoch, config.epochs, f"epoch {epoch}/{config.epochs}: {shown}")

        stats: dict[str, Any] = {}
        if is_cluster_strategy(self.strategy):
            stats = self.train_on_cluster(config, info, out_dir, on_epoch)
        elif "features" in self.requires():
            self.fit_on_features(config, info, work, out_dir, on_epoch).save(out_dir / MODEL_FILE)
        else:
            samples, _ = load_split_arrays(shards, "train", limit=8)
            job = FitRun(config, tuple(files["train"]), tuple(files["validation"]), work, samples, out_dir / MODEL_FILE)
            if config.cpu_devices:  # logical devices can be made only before TensorFlow starts
                from tasks.runtime.fresh_process import run_in_fresh_process

                stats = run_in_fresh_process(fit_and_save, job, on_report=on_epoch)
            else:
                stats = fit_and_save(job, on_epoch)
        shutil.copy(work / "history.csv", out_dir / "history.csv")
        shutil.copytree(work / "tensorboard", out_dir / "tensorboard")
        plot_training_curves(out_dir / "history.csv", out_dir / "training_curves.png")
        epochs_run = max(0, len((out_dir / "history.csv").read_text().splitlines()) - 1)
        train_info = {"model": self.trained_model_name(config), "image_shape": list(config.image_shape),
                      "num_classes": config.num_classes, "num_heads": config.num_heads,
                      "epochs_completed": epochs_run}
        (out_dir / "train_info.json").write_text(json.dumps(train_info, indent=2, sort_keys=True))
        shutil.rmtree(work, ignore_errors=True)
        return {"epochs_completed": epochs_run, "model_file": MODEL_FILE, "started_at": started_at,
                "budget": self.budget(info).to_json(), "class_weights": list(config.class_weights) or None, **stats}


@dataclass(frozen=True)
class FitRun:
    """A ``model.fit`` training of images (picklable: with logical CPU devices it runs in a fresh process)."""

    config: Any
    train_files: tuple[str, ...]
    validation_files: tuple[str, ...]
    work_dir: Path
    sample_images: Any
    model_file: Path


def fit_and_save(job: FitRun, report: Any = None) -> dict[str, Any]:
    from tasks.training.fit import fit

    stats: dict[str, Any] = {}
    model = fit(job.config, list(job.train_files), list(job.validation_files), job.work_dir,
                sample_images=job.sample_images, on_epoch=report, stats=stats)
    model.save(job.model_file)
    return stats


def append_history(history: Path, more: Path) -> None:
    """Append ``more``'s epochs to ``history`` (CSVLogger files), numbered on from its last epoch; columns
    only one of them has are left empty in the other's rows."""
    import csv

    with open(history, newline="") as handle:
        first = list(csv.DictReader(handle))
    with open(more, newline="") as handle:
        second = list(csv.DictReader(handle))
    offset = len(first)
    for row in second:
        row["epoch"] = str(int(row["epoch"]) + offset)
    columns = list(dict.fromkeys([*(first[0] if first else {}), *(second[0] if second else {})]))
    with open(history, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows([*first, *second])


def join_cluster(train: Train, timeout_s: float, log: Any = print) -> dict[str, Any]:
    """A cluster member's whole part in ``train`` (not the chief's): wait for the chief's run, then train in lock
    step (multi_worker) or serve variables and steps (parameter_server) until the chief ends its run. Nothing is
    written to the store; multi-worker checkpoints go to a scratch directory that is removed at the end."""
    import tempfile

    from tasks.data.shards import load_dataset_info
    from tasks.training import cluster as rendezvous
    from tasks.training.custom_loop import serve, train_on_cluster

    if not is_cluster_strategy(train.strategy):
        raise ValueError(f"Train.strategy={train.strategy} trains on one host: there is no cluster to join "
                         "(set Train.strategy=multi_worker or parameter_server, as on the chief)")
    train.check_cluster_options()
    members = rendezvous.cluster_from_env(train.strategy)
    if members.is_chief:
        raise rendezvous.ClusterError(f"this process is the chief, {members.chief.name}: run `tfpipe run` here")
    directory = train.rendezvous()
    log(f"{members.me.name}: waiting for the chief ({members.chief.name}) in {directory}")
    if train.strategy == "multi_worker":
        rendezvous.join(directory, members, timeout_s)
        info = load_dataset_info(train.input_dir("examples"))
        import tensorflow as tf

        with tempfile.TemporaryDirectory(prefix="tfpipe-member-") as scratch:
            try:
                result = train_on_cluster(train.cluster_run(train.train_config(info), info, is_chief=False,
                                                            scratch=Path(scratch)))
            except tf.errors.OpError as error:  # a peer died or the chief stopped mid-step
                raise rendezvous.ClusterError(f"{members.me.name}: the cluster failed mid-training "
                                              f"({type(error).__name__}: {error.message.splitlines()[0]}); "
                                              "restart this member and the chief") from error
        log(f"{members.me.name}: trained {result['steps']} steps; weights sha256 {result['weights_sha256']}")
        return result
    run = rendezvous.wait_for_chief(directory, members, timeout_s)
    server = serve(members.task_type, members.task_index)
    log(f"{members.me.name}: serving at {server.target}")
    while True:
        rendezvous.answer_chief(directory, members, run)
        while (ended := rendezvous.outcome(directory, run)) is None:
            newer = rendezvous.current_run(directory)
            if newer and newer != run:  # the chief was restarted: serve its new run
                log(f"{members.me.name}: the chief started again (run {newer})")
                run = newer
                break
            time.sleep(rendezvous.POLL_S)
        if ended is not None:
            if not ended["ok"]:
                raise rendezvous.ClusterError(f"the chief's run ended with an error: {ended['error']}")
            log(f"{members.me.name}: the chief finished; stopping")
            return {"served_run": run}
