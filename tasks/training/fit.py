"""Keras training around the tf.data input: strategy, callbacks, resumable fit. No Luigi.

Resumption: ``BackupAndRestore`` writes a backup at every epoch end into ``work_dir/backup``; a process
killed mid-training restarts ``fit`` from the last finished epoch. ``history.csv`` is appended by
``CSVLogger(append=True)`` so its rows continue too.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from models.builders import build_model
from models.heads import build_feature_head
from tasks.data.input_pipeline import AugmentConfig, count_records, make_dataset
from tasks.data.split_sizes import validation_batching, whole_batch
from tasks.training.files import (
    BACKUP_DIR,
    BACKUP_METADATA_FILE,
    BEST_WEIGHTS_FILE,
    HISTORY_FILE,
    TENSORBOARD_DIR,
)
from tasks.training.strategies import check_strategy


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite: no model from this run may be evaluated or frozen."""


@dataclass
class TrainConfig:
    model: str
    image_shape: tuple[int, int, int]
    num_classes: int
    num_heads: int
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"  # "cosine": decay to 0 over all epochs; "constant"
    steps_per_epoch: int = 0  # needed by the cosine schedule
    jit_compile: bool = False
    seed: int = 0
    patience: int = 5
    shuffle_buffer: int = 10_000
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mixed_precision: bool = False
    strategy: str = "default"
    cpu_devices: int = 0  # mirrored: split the CPU into this many logical devices (0: the GPUs)
    model_options: dict = field(default_factory=dict)
    input_autotune: bool = False  # tf.data runtime tuning (see make_dataset)
    optimizer: str = "adam"  # "adam", or "sgd" (with ``momentum``)
    momentum: float = 0.0
    train_examples: int = 0  # the training split's size (0: unknown; batches per epoch from steps_per_epoch)
    validation_examples: int = 0  # the validation split's size (0: unknown, counted where it matters)
    max_steps: int = 0  # stop after this many optimizer steps (0: epochs x steps_per_epoch)
    checkpoint_every_steps: int = 0  # resumable checkpoint every N steps (0: at every epoch end)
    warmup_steps: int = 0  # cosine: the learning rate rises linearly from 0 over these first steps
    class_weights: tuple[float, ...] = ()  # loss weight per class (empty: every class weighs 1)

    @property
    def total_steps(self) -> int:
        planned = self.steps_per_epoch * self.epochs
        return min(planned, self.max_steps) if self.max_steps else planned

    @property
    def epochs_to_run(self) -> int:
        """Epochs ``fit`` is asked for: ``max_steps`` may end training before ``epochs``."""
        return max(1, math.ceil(self.total_steps / max(self.steps_per_epoch, 1)))


def make_strategy(name: str, cpu_devices: int = 0) -> tf.distribute.Strategy:
    """``default`` (one device) or ``mirrored``: every local GPU, or ``cpu_devices`` logical CPU devices when
    asked (for tests and for users without GPUs). The global batch is split across the replicas."""
    check_strategy(name)
    if name == "default":
        if cpu_devices:
            raise ValueError("Train.cpu_devices splits the CPU for strategy mirrored; it does nothing with default")
        return tf.distribute.get_strategy()
    if cpu_devices:
        split_cpu(cpu_devices)
        return tf.distribute.MirroredStrategy([f"/cpu:{index}" for index in range(cpu_devices)])
    return tf.distribute.MirroredStrategy()


def split_cpu(count: int) -> None:
    """``count`` logical CPU devices; TensorFlow allows this only before it starts its runtime."""
    if count < 1:
        raise ValueError(f"cpu_devices must be >= 1, got {count}")
    [cpu] = tf.config.list_physical_devices("CPU")[:1]
    current = tf.config.get_logical_device_configuration(cpu) or []
    if len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as error:
        raise ValueError(f"Train.cpu_devices={count}: TensorFlow already started in this process with "
                         f"{max(1, len(current))} CPU device(s); run Train in a worker of its own") from error


def learning_rate(config: TrainConfig) -> float | keras.optimizers.schedules.LearningRateSchedule:
    if config.lr_schedule == "constant":
        return config.learning_rate
    if config.lr_schedule != "cosine":
        raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {config.lr_schedule!r}")
    if config.steps_per_epoch < 1:
        raise ValueError("the cosine schedule needs steps_per_epoch >= 1")
    warmup = min(max(config.warmup_steps, 0), max(config.total_steps - 1, 0))
    if not warmup:
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, config.total_steps)
    return keras.optimizers.schedules.CosineDecay(0.0, config.total_steps - warmup, warmup_target=config.learning_rate,
                                                  warmup_steps=warmup)


OPTIMIZERS = ("adam", "sgd")


def make_optimizer(config: TrainConfig, rate: float | keras.optimizers.schedules.LearningRateSchedule | None = None
                   ) -> keras.optimizers.Optimizer:
    """Adam, or SGD with ``config.momentum``, at ``rate`` (default: the config's schedule)."""
    rate = learning_rate(config) if rate is None else rate
    if config.optimizer == "adam" and config.momentum:
        raise ValueError("Train.momentum is for optimizer sgd; Adam keeps its own moment estimates")
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=rate)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=rate, momentum=config.momentum)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}")


def compile_model(config: TrainConfig) -> keras.Model:
    model = build_model(config.model, input_shape=config.image_shape, num_classes=config.num_classes,
                        num_heads=config.num_heads, **config.model_options)
    model.compile(
        optimizer=make_optimizer(config),
        jit_compile=config.jit_compile,
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


class NaNGuard(keras.callbacks.Callback):
    """Stops at the first non-finite batch loss and remembers it (TerminateOnNaN only stops quietly)."""

    def __init__(self) -> None:
        super().__init__()
        self.bad_batch: tuple[int, int] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_batch = (self._epoch, batch)
            self.model.stop_training = True


class AtomicBestWeights(keras.callbacks.Callback):
    """The weights of the best ``val_loss`` so far, written to a temporary file and renamed over ``path``: a kill
    mid-write leaves the previous best, never a truncated file that would block every rerun. The best loss is
    kept beside it (``<path>.json``), so a resumed run does not take a worse epoch for an improvement."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = Path(path)
        self._record = self._path.with_name(self._path.name + ".json")
        self._best = math.inf
        if self._path.exists() and self._record.exists():
            self._best = float(json.loads(self._record.read_text())["val_loss"])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("val_loss")
        if loss is None or not float(loss) < self._best:
            return
        self._best = float(loss)
        temporary = self._path.with_name(f".{self._path.stem}.tmp.weights.h5")
        self.model.save_weights(str(temporary))
        os.replace(temporary, self._path)
        self._record.write_text(json.dumps({"val_loss": self._best, "epoch": epoch}))


def discard_unreadable_checkpoints(work_dir: Path) -> None:
    """Remove the resume state a killed process left half-written (Keras writes its backup in place): a run
    starts that training over instead of failing on a truncated HDF5 file, run after run."""
    import h5py

    for path in [*sorted((work_dir / BACKUP_DIR).rglob("*.h5")), work_dir / BEST_WEIGHTS_FILE]:
        if not path.exists():
            continue
        try:
            h5py.File(path, "r").close()
        except OSError:
            if BACKUP_DIR in path.relative_to(work_dir).parts:
                shutil.rmtree(work_dir / BACKUP_DIR, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


class SeedStateBackup(keras.callbacks.Callback):
    """The random-seed states of the model's layers (dropout's), beside BackupAndRestore's backup: Keras saves
    weights without them, so a resumed run would draw other dropout masks than the uninterrupted one did.
    One file per finished epoch (the last two kept); the one of the epoch the backup resumes from is loaded."""

    def __init__(self, backup_dir: Path) -> None:
        super().__init__()
        self._dir = Path(backup_dir)

    def _states(self) -> list:
        return [generator.state for layer in self.model._flatten_layers()  # noqa: SLF001 - Keras's own walk
                for generator in getattr(layer, "_seed_generators", [])]

    def on_train_begin(self, logs: dict | None = None) -> None:
        saved = self._dir / f"seed_states-{resumed_epoch(self._dir.parent)}.npy"
        if saved.exists():
            for state, value in zip(self._states(), np.load(saved), strict=True):
                state.assign(value)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        temporary = self._dir / ".seed_states.tmp.npy"
        np.save(temporary, np.array([np.asarray(state.numpy()) for state in self._states()]))
        os.replace(temporary, self._dir / f"seed_states-{epoch + 1}.npy")
        (self._dir / f"seed_states-{epoch - 1}.npy").unlink(missing_ok=True)


class StopAtStep(keras.callbacks.Callback):
    """Stops training once the optimizer has taken ``max_steps`` steps (counted across resumes)."""

    def __init__(self, max_steps: int) -> None:
        super().__init__()
        self._max_steps = max_steps

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if int(self.model.optimizer.iterations.numpy()) >= self._max_steps:
            self.model.stop_training = True


class EpochReporter(keras.callbacks.Callback):
    def __init__(self, report: Callable[[int, dict], None]) -> None:
        super().__init__()
        self._report = report

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._report(epoch + 1, dict(logs or {}))


class SampleImages(keras.callbacks.Callback):
    """Writes a few training inputs to TensorBoard once, so a person can see what the model sees."""

    def __init__(self, log_dir: Path, images: np.ndarray) -> None:
        super().__init__()
        self._log_dir = log_dir
        self._images = images

    def on_train_begin(self, logs: dict | None = None) -> None:
        writer = tf.summary.create_file_writer(str(self._log_dir / "samples"))
        with writer.as_default():
            tf.summary.image("training_inputs", self._images.astype(np.float32) / 255.0, step=0,
                             max_outputs=len(self._images))
        writer.close()


def class_weight_map(config: TrainConfig) -> dict[int, float] | None:
    """``config.class_weights`` as Keras's ``class_weight`` argument (None: unweighted)."""
    return {index: float(weight) for index, weight in enumerate(config.class_weights)} or None


def fit(
    config: TrainConfig,
    train_files: Sequence[str],
    validation_files: Sequence[str],
    work_dir: Path,
    *,
    sample_images: np.ndarray | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    stats: dict | None = None,
) -> keras.Model:
    """Train ``config.model`` on TFRecord shards (resuming from ``work_dir/backup`` if present); returns the
    model with the best weights. Raises TrainingDivergedError when the loss stops being finite."""
    discard_unreadable_checkpoints(work_dir)  # before reading the epoch: a discarded backup restarts at 0
    first_epoch = resumed_epoch(work_dir)
    forget_epochs_from(work_dir, first_epoch)
    return fit_model(config, lambda: compile_model(config),
                     lambda: tfrecord_datasets(config, train_files, validation_files, first_epoch=first_epoch),
                     work_dir, sample_images=sample_images, on_epoch=on_epoch, stats=stats,
                     steps_per_epoch=batches_per_epoch(config))


def history_lines_before(history: Path, epoch: int) -> list[str]:
    """The header and the rows of the epochs before ``epoch`` of a ``history.csv`` (epoch first, as CSVLogger
    writes it); none when there is no file."""
    if not history.exists():
        return []
    with open(history, encoding="utf-8", newline="") as file:  # CSVLogger ends lines with \r\n: keep them
        lines = file.read().splitlines(keepends=True)
    return lines[:1] + [line for line in lines[1:] if int(line.split(",", 1)[0]) < epoch]


def replace_history(history: Path, lines: Sequence[str]) -> None:
    """``history`` becomes ``lines`` at once (a temporary file renamed over it)."""
    temporary = history.with_suffix(".tmp")
    with open(temporary, "w", encoding="utf-8", newline="") as file:
        file.write("".join(lines))
    temporary.replace(history)


def forget_epochs_from(work_dir: Path, first_epoch: int) -> None:
    """What a killed run logged of the epochs a resumed run does again: their history rows (CSVLogger appends)
    and, when it starts over, its TensorBoard logs."""
    history = work_dir / HISTORY_FILE
    if first_epoch == 0:
        history.unlink(missing_ok=True)
        shutil.rmtree(work_dir / TENSORBOARD_DIR, ignore_errors=True)
    elif history.exists():
        replace_history(history, history_lines_before(history, first_epoch))


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle and augmentation (distinct for every (seed, epoch) that matters)."""
    return seed * 100_003 + epoch


def resumed_epoch(work_dir: Path) -> int:
    """The epoch a resumed ``fit`` starts at: the epochs BackupAndRestore recorded as finished (0 if none)."""
    metadata = work_dir / BACKUP_DIR / BACKUP_METADATA_FILE
    try:
        return int(json.loads(metadata.read_text())["epoch"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return 0


def replicas_in_sync(config: TrainConfig) -> int:
    """The replicas ``make_strategy`` trains ``config`` on: one, or under mirrored ``cpu_devices``, else every
    local GPU (else the CPU alone)."""
    if config.strategy != "mirrored":
        return 1
    return config.cpu_devices or len(tf.config.list_logical_devices("GPU")) or 1


def batches_per_epoch(config: TrainConfig) -> int:
    """Training batches in one pass over the split: whole ones only over several replicas (tfrecord_datasets)."""
    replicas = replicas_in_sync(config)
    if replicas > 1 and config.train_examples:
        return config.train_examples // whole_batch(config.batch_size, config.train_examples, replicas,
                                                    config.strategy)
    return config.steps_per_epoch


def tfrecord_datasets(config: TrainConfig, train_files: Sequence[str], validation_files: Sequence[str], *,
                      first_epoch: int | None = None) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """(shuffled, augmented training batches; validation batches in file order) of TFRecord shards.

    With ``first_epoch``, the training batches are the epochs from ``first_epoch`` to the last one by one, each
    shuffled and augmented from seeds of its own (the run's seed and the epoch's number): a run resumed at
    epoch k sees exactly the batches an uninterrupted run saw from epoch k on. ``fit`` then needs
    ``steps_per_epoch`` (``batches_per_epoch``). Without it, one pass, reshuffled by tf.data every epoch.

    Over several replicas (mirrored) the batches are formed so that Keras splits them (tasks/data/split_sizes.py):
    whole training batches, of a smaller global batch for a split smaller than ``config.batch_size``, and every
    validation example counting equally (the split's size: ``config.validation_examples``, counted if unknown).
    """
    replicas = replicas_in_sync(config)
    even = replicas > 1
    # A split of unknown size (train_examples 0) is taken to hold at least one batch.
    batch_size = whole_batch(config.batch_size, config.train_examples or config.batch_size, replicas,
                             config.strategy)

    def one_pass(seed: int) -> tf.data.Dataset:
        return make_dataset(train_files, image_shape=config.image_shape, num_heads=config.num_heads,
                            batch_size=batch_size, training=True, augment=config.augment,
                            shuffle_buffer=config.shuffle_buffer, seed=seed, autotune=config.input_autotune,
                            drop_remainder=even)

    if first_epoch is None:
        train = one_pass(config.seed)
    else:
        passes = [one_pass(epoch_seed(config.seed, epoch)) for epoch in range(first_epoch, config.epochs_to_run)]
        train = passes[0] if passes else one_pass(config.seed).take(0)
        for more in passes[1:]:
            train = train.concatenate(more)
    return train, validation_dataset(config, validation_files, replicas)


def validation_dataset(config: TrainConfig, files: Sequence[str], replicas: int) -> tf.data.Dataset:
    """Validation batches in file order, formed for ``replicas`` replicas (``validation_batching``; a split
    read more than once is the files listed that many times)."""
    preferred = max(config.batch_size, 256)
    batch_size, passes = preferred, 1
    if replicas > 1:
        examples = config.validation_examples or count_records(files)
        batch_size, passes = validation_batching(examples, replicas, preferred)
    return make_dataset(list(files) * passes, image_shape=config.image_shape, num_heads=config.num_heads,
                        batch_size=batch_size, training=False, autotune=config.input_autotune)


def fine_tune(
    config: TrainConfig,
    build: Callable[[], keras.Model],
    train_files: Sequence[str],
    validation_files: Sequence[str],
    work_dir: Path,
    *,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> keras.Model:
    """Train ``build()`` (backbone with its top layers unfrozen, and the trained head) end to end from the
    images, at ``config.learning_rate`` (constant), with the same callbacks as ``fit``."""

    def compiled() -> keras.Model:
        model = build()
        model.compile(optimizer=make_optimizer(config, config.learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
        return model

    return fit_model(config, compiled, lambda: tfrecord_datasets(config, train_files, validation_files), work_dir,
                     on_epoch=on_epoch)


def fit_head(
    config: TrainConfig,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    work_dir: Path,
    *,
    hidden_units: int = 0,
    dropout: float = 0.0,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> keras.Model:
    """Train a softmax head (optionally one hidden layer) on cached features ``(features (N, D), labels)``,
    with the same resume, NaN guard, early stopping and history as ``fit``."""

    def build() -> keras.Model:
        model = build_feature_head(int(train[0].shape[1]), config.num_classes, hidden_units=hidden_units,
                                   dropout=dropout)
        model.compile(optimizer=make_optimizer(config),
                      loss=keras.losses.SparseCategoricalCrossentropy(),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
        return model

    def datasets() -> tuple[tf.data.Dataset, tf.data.Dataset]:
        # Batched for the replicas as tfrecord_datasets does (tasks/data/split_sizes.py).
        replicas = replicas_in_sync(config)
        batch_size = whole_batch(config.batch_size, len(train[0]), replicas, config.strategy)
        validation_batch, passes = validation_batching(len(validation[0]), replicas, max(config.batch_size, 256))
        shuffled = tf.data.Dataset.from_tensor_slices(train).shuffle(
            min(len(train[0]), config.shuffle_buffer), seed=config.seed, reshuffle_each_iteration=True)
        return (shuffled.batch(batch_size, drop_remainder=replicas > 1).prefetch(2),
                tf.data.Dataset.from_tensor_slices(validation).repeat(passes).batch(validation_batch))

    return fit_model(config, build, datasets, work_dir, on_epoch=on_epoch)


def fit_model(
    config: TrainConfig,
    build: Callable[[], keras.Model],
    datasets: Callable[[], tuple[tf.data.Dataset, tf.data.Dataset]],
    work_dir: Path,
    *,
    sample_images: np.ndarray | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    stats: dict | None = None,
    steps_per_epoch: int | None = None,
) -> keras.Model:
    """``model.fit`` of ``build()`` on ``datasets()`` = (train, validation) with tfpipe's callbacks: backup and
    resume, NaN guard, ``history.csv``, early stopping on val_loss, best-weights checkpoint, TensorBoard."""
    keras.utils.set_random_seed(config.seed)
    discard_unreadable_checkpoints(work_dir)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        strategy = make_strategy(config.strategy, config.cpu_devices)
        if stats is not None:
            stats["num_replicas_in_sync"] = int(strategy.num_replicas_in_sync)
        with strategy.scope():
            model = build()
        train, validation = datasets()
        guard = NaNGuard()
        callbacks: list[keras.callbacks.Callback] = [
            SeedStateBackup(work_dir / BACKUP_DIR),  # before BackupAndRestore: saved before the epoch counts as done
            keras.callbacks.BackupAndRestore(str(work_dir / BACKUP_DIR),
                                             save_freq=config.checkpoint_every_steps or "epoch"),
            guard,
            keras.callbacks.CSVLogger(str(work_dir / HISTORY_FILE), append=True),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True),
            AtomicBestWeights(work_dir / BEST_WEIGHTS_FILE),
            keras.callbacks.TensorBoard(str(work_dir / TENSORBOARD_DIR), histogram_freq=1),
        ]
        if sample_images is not None and len(sample_images):
            callbacks.append(SampleImages(work_dir / TENSORBOARD_DIR, sample_images))
        if on_epoch is not None:
            callbacks.append(EpochReporter(on_epoch))
        if config.max_steps:
            callbacks.append(StopAtStep(config.max_steps))
        model.fit(train, validation_data=validation, epochs=config.epochs_to_run, callbacks=callbacks, verbose=2,
                  steps_per_epoch=steps_per_epoch, class_weight=class_weight_map(config))
        if guard.bad_batch is not None:
            epoch, batch = guard.bad_batch
            raise TrainingDivergedError(f"loss became non-finite in epoch {epoch + 1}, batch {batch}")
        if stats is not None:
            stats["steps"] = int(model.optimizer.iterations.numpy())
        if (work_dir / BEST_WEIGHTS_FILE).exists():
            # Early stopping restores best weights only when it fires; after a resume it may not have seen
            # the best epoch. The checkpoint file always holds the best validation loss so far.
            model.load_weights(str(work_dir / BEST_WEIGHTS_FILE))
        return model
    finally:
        keras.mixed_precision.set_global_policy("float32")
