"""A custom training loop over Keras 3 models and optimizers, for the strategies ``model.fit`` cannot use. No Luigi.

``multi_worker`` (MultiWorkerMirroredStrategy: every worker runs this loop in lock step, gradients all-reduced)
and ``parameter_server`` (ParameterServerStrategy: the chief runs this loop and schedules steps on the workers
through a ``ClusterCoordinator``; the variables live on the parameter servers). It keeps what ``fit`` gives the
other strategies:

- the loss of a step is the per-example loss summed and divided by the GLOBAL batch (``compute_average_loss``),
  so N replicas of batch B/N move the weights as one replica of batch B;
- the step counter is a plain ``tf.Variable`` (one ``assign_add`` op on its parameter server; Keras's
  ``optimizer.iterations`` may lose increments under asynchronous updates);
- ``tf.train.CheckpointManager`` checkpoints every ``checkpoint_every_steps`` and at every epoch end; a restarted
  chief (and, multi-worker, the restarted workers) resume from the chief's latest checkpoint;
- a NaN guard (TrainingDivergedError), early stopping on the validation loss with the best weights restored,
  ``history.csv`` rows like CSVLogger's and TensorBoard scalars, written by the chief alone.

Non-chief workers write their checkpoints to a scratch directory of their own (MultiWorkerMirroredStrategy needs
every worker to save) and nothing else.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tasks.data.split_sizes import check_training_replicas
from tasks.training.files import BEST_WEIGHTS_FILE, CHECKPOINTS_DIR, HISTORY_FILE, TENSORBOARD_DIR
from tasks.training.fit import (
    TrainConfig,
    TrainingDivergedError,
    history_lines_before,
    make_optimizer,
    replace_history,
)
from tasks.training.plan import TrainingJob

HISTORY_COLUMNS = ("epoch", "accuracy", "learning_rate", "loss", "val_accuracy", "val_loss")

DatasetFn = Callable[[tf.distribute.InputContext], tf.data.Dataset]


@dataclass(frozen=True)
class LoopPlan:
    """How many steps: ``steps_per_epoch`` global steps an epoch, ``total_steps`` in all (``max_steps`` caps it)."""

    steps_per_epoch: int
    total_steps: int
    checkpoint_every_steps: int

    @classmethod
    def of(cls, config: TrainConfig) -> LoopPlan:
        every = config.checkpoint_every_steps or config.steps_per_epoch
        return cls(config.steps_per_epoch, config.total_steps, max(1, min(every, config.steps_per_epoch)))


def make_cluster_strategy(name: str) -> tuple[tf.distribute.Strategy, Any]:
    """(strategy, coordinator or None) from TF_CONFIG."""
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy(), None
    if name == "parameter_server":
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        strategy = tf.distribute.experimental.ParameterServerStrategy(resolver)
        return strategy, tf.distribute.coordinator.ClusterCoordinator(strategy)
    if name == "default":
        # One device: the benchmark against model.fit, and the tests of the loop itself.
        return tf.distribute.get_strategy(), None
    raise ValueError(f"no custom training loop for strategy {name!r}")


def correct_per_example(probabilities: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """(B,): the fraction of an example's heads (one for most datasets) whose most probable class is right."""
    correct = tf.cast(tf.equal(tf.argmax(probabilities, axis=-1, output_type=tf.int32), labels), tf.float32)
    return tf.reduce_mean(tf.reshape(correct, [tf.shape(correct)[0], -1]), axis=1)


def weights_digest(model: keras.Model) -> str:
    """sha256 of every weight's bytes in order: equal on every worker of a synchronous cluster."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


class CustomLoop:
    """One training run: build once, then ``run()``. ``is_chief`` decides who writes history, TensorBoard, best
    weights and checkpoints in ``checkpoint_dir`` (the others checkpoint to ``scratch_dir``)."""

    def __init__(self, config: TrainConfig, strategy: tf.distribute.Strategy, coordinator: Any,
                 build: Callable[[], keras.Model], train_fn: DatasetFn, validation: tf.data.Dataset, *,
                 work_dir: Path, is_chief: bool, scratch_dir: Path | None = None,
                 on_epoch: Callable[[int, dict], None] | None = None,
                 log: Callable[[str], None] = print) -> None:
        self.config, self.strategy, self.coordinator = config, strategy, coordinator
        self.plan = LoopPlan.of(config)
        self.work_dir, self.is_chief, self.on_epoch, self.log = work_dir, is_chief, on_epoch, log
        self.validation = validation
        with strategy.scope():
            self.model = build()
            self.optimizer = make_optimizer(config)
            self.optimizer.build(self.model.trainable_variables)
            ordinary = dict(trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.step = tf.Variable(0, dtype=tf.int64, name="global_step", **ordinary)
            self.best_val_loss = tf.Variable(math.inf, dtype=tf.float64, name="best_val_loss", **ordinary)
            self.epochs_without_improvement = tf.Variable(0, dtype=tf.int64, name="wait", **ordinary)
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, step=self.step,
                                              best_val_loss=self.best_val_loss,
                                              wait=self.epochs_without_improvement)
        self.checkpoint_dir = work_dir / CHECKPOINTS_DIR
        own_dir = self.checkpoint_dir if is_chief else (scratch_dir or work_dir) / CHECKPOINTS_DIR
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(own_dir), max_to_keep=2)
        self.iterator = self._train_iterator(train_fn)
        self.train_steps = self._train_function()
        self.evaluate_batch = self._evaluation_function()
        self.sum_over_replicas = tf.function(lambda value: strategy.reduce(
            tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(value,)), axis=None))

    # -- input -----------------------------------------------------------------------------------------------

    def _train_iterator(self, train_fn: DatasetFn) -> Any:
        if self.coordinator is None:
            return iter(self.strategy.distribute_datasets_from_function(train_fn))
        per_worker = self.coordinator.create_per_worker_dataset(
            lambda: self.strategy.distribute_datasets_from_function(train_fn))
        return iter(per_worker)

    # -- one step --------------------------------------------------------------------------------------------

    def _replica_step(self, batch: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        images, labels = batch
        with tf.GradientTape() as tape:
            probabilities = self.model(images, training=True)
            per_element = self.loss_fn(labels, probabilities)
            # Multi-head labels (B, heads): one loss per example, the mean over its heads (as fit's reduction).
            per_example = tf.reshape(per_element, [tf.shape(per_element)[0], -1])
            per_example = tf.reduce_mean(per_example, axis=1)
            if self.config.class_weights:  # single-label data only (Train sets no weights for multi-head)
                weights = tf.constant(self.config.class_weights, tf.float32)
                per_example *= tf.gather(weights, tf.reshape(labels, [-1]))
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.config.batch_size)
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
        gradients = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables, strict=True))
        self.step.assign_add(1)
        return tf.reduce_sum(per_example), tf.reduce_sum(correct_per_example(probabilities, labels)), tf.cast(
            tf.shape(per_example)[0], tf.float32)

    def _train_function(self) -> Callable[[Any], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
        strategy = self.strategy

        @tf.function
        def train_step(iterator: Any) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            per_replica = strategy.run(self._replica_step, args=(next(iterator),))
            return tuple(strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in per_replica)

        return train_step

    def _run_steps(self, count: int) -> np.ndarray:
        """``count`` global steps; the sums (loss, correct, examples) over them."""
        if self.coordinator is None:
            totals = [self.train_steps(self.iterator) for _ in range(count)]
            return np.sum([[float(v) for v in step] for step in totals], axis=0) if totals else np.zeros(3)
        scheduled = [self.coordinator.schedule(self.train_steps, args=(self.iterator,)) for _ in range(count)]
        self.coordinator.join()
        return np.sum([[float(v) for v in result.fetch()] for result in scheduled], axis=0) if scheduled \
            else np.zeros(3)

    # -- validation, agreement ---------------------------------------------------------------------------------

    def _evaluation_function(self) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
        @tf.function
        def batch_sums(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            probabilities = self.model(images, training=False)
            per_element = self.loss_fn(labels, probabilities)
            per_example = tf.reduce_mean(tf.reshape(per_element, [tf.shape(per_element)[0], -1]), axis=1)
            return (tf.reduce_sum(per_example), tf.reduce_sum(correct_per_example(probabilities, labels)),
                    tf.cast(tf.shape(per_example)[0], tf.float32))

        return batch_sums

    def _evaluate(self) -> tuple[float, float]:
        """(val_loss, val_accuracy) of the current weights over the whole validation set, on this host."""
        total = np.zeros(3)
        for images, labels in self.validation:
            total += [float(v) for v in self.evaluate_batch(images, labels)]
        return total[0] / max(total[2], 1.0), total[1] / max(total[2], 1.0)

    def _chief_says(self, decision: bool) -> bool:
        """The chief's ``decision`` on every worker (a collective), so that all stop at the same step even if
        their validation numbers differ in the last bit."""
        if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return decision
        vote = tf.constant(1.0 if (self.is_chief and decision) else 0.0)
        return float(self.sum_over_replicas(vote)) > 0

    # -- bookkeeping -------------------------------------------------------------------------------------------

    def _restore(self) -> int:
        latest = tf.train.latest_checkpoint(str(self.checkpoint_dir))
        if latest is None:
            return 0
        self.checkpoint.restore(latest).expect_partial()
        self.log(f"resumed from {latest} at step {int(self.step.numpy())}")
        return int(self.step.numpy())

    def _current_learning_rate(self) -> float:
        rate = self.optimizer.learning_rate
        return float(rate.numpy() if hasattr(rate, "numpy") else rate)

    def _write_history(self, row: dict[str, float]) -> None:
        """Rows of earlier epochs are kept; a row for this epoch (after a resume) is replaced."""
        path = self.work_dir / HISTORY_FILE
        lines = history_lines_before(path, int(row["epoch"])) or [",".join(HISTORY_COLUMNS) + "\r\n"]
        text = io.StringIO()
        csv.DictWriter(text, fieldnames=HISTORY_COLUMNS).writerow({key: row[key] for key in HISTORY_COLUMNS})
        replace_history(path, [*lines, text.getvalue()])

    def _write_scalars(self, writers: dict[str, Any], epoch: int, row: dict[str, float]) -> None:
        """The scalars ``fit``'s TensorBoard callback writes, under the same names and runs."""
        for split, prefix in (("train", ""), ("validation", "val_")):
            with writers[split].as_default():
                for name in ("loss", "accuracy"):
                    tf.summary.scalar(f"epoch_{name}", row[prefix + name], step=epoch)
                if split == "train":
                    tf.summary.scalar("epoch_learning_rate", row["learning_rate"], step=epoch)
            writers[split].flush()

    # -- the loop ----------------------------------------------------------------------------------------------

    def run(self) -> keras.Model:
        """Train to ``total_steps`` (or until early stopping); returns the model with the best weights on the
        chief, the last weights elsewhere. Raises TrainingDivergedError on a non-finite loss."""
        writers = ({split: tf.summary.create_file_writer(str(self.work_dir / TENSORBOARD_DIR / split))
                    for split in ("train", "validation")} if self.is_chief else {})
        step = self._restore()
        plan = self.plan
        best_file = self.work_dir / BEST_WEIGHTS_FILE
        stopped = int(self.epochs_without_improvement.numpy()) >= self.config.patience
        while step < plan.total_steps and not stopped:
            epoch = step // plan.steps_per_epoch
            epoch_end = min((epoch + 1) * plan.steps_per_epoch, plan.total_steps)
            sums, started = np.zeros(3), time.monotonic()
            while step < epoch_end:
                count = min(plan.checkpoint_every_steps - step % plan.checkpoint_every_steps, epoch_end - step)
                sums += self._run_steps(count)
                step = int(self.step.numpy())
                if not math.isfinite(sums[0]):
                    raise TrainingDivergedError(f"loss became non-finite in epoch {epoch + 1}, by step {step}")
                self.manager.save(checkpoint_number=step)
            val_loss, val_accuracy = self._evaluate()
            row = {"epoch": epoch, "loss": sums[0] / max(sums[2], 1.0), "accuracy": sums[1] / max(sums[2], 1.0),
                   "val_loss": val_loss, "val_accuracy": val_accuracy,
                   "learning_rate": self._current_learning_rate()}
            improved = self._chief_says(val_loss < float(self.best_val_loss.numpy()))
            if improved:
                self.best_val_loss.assign(val_loss)
                self.epochs_without_improvement.assign(0)
                if self.is_chief:  # renamed into place: a kill mid-write keeps the previous best
                    temporary = best_file.with_name(".best.tmp.weights.h5")
                    self.model.save_weights(str(temporary))
                    temporary.replace(best_file)
            else:
                self.epochs_without_improvement.assign_add(1)
            stopped = int(self.epochs_without_improvement.numpy()) >= self.config.patience
            self.manager.save(checkpoint_number=step)
            if self.is_chief:
                self._write_history(row)
                self._write_scalars(writers, epoch, row)
            self.log(f"epoch {epoch + 1}: step {step}/{plan.total_steps}, " + ", ".join(
                f"{k}={v:.4f}" for k, v in sorted(row.items()) if k != "epoch")
                + f" ({time.monotonic() - started:.1f} s)")
            if self.on_epoch is not None:
                self.on_epoch(epoch + 1, {k: float(v) for k, v in row.items() if k != "epoch"})
        for writer in writers.values():
            writer.close()
        self.last_weights_sha256 = weights_digest(self.model)
        self.log(f"weights after step {int(self.step.numpy())}: sha256 {self.last_weights_sha256}")
        if self.is_chief and best_file.exists():
            self.model.load_weights(str(best_file))
        return self.model


def sharded_training_input(config: TrainConfig, files: tuple[str, ...], image_format: str) -> DatasetFn:
    """Each input pipeline (one per worker) reads its own part of the shards, batches of the per-replica size,
    repeated without end: the loop decides how many steps to take. Shards without a record are left out, so
    that no worker's part is empty while the split holds an example per worker."""
    from tasks.data.input_pipeline import make_dataset

    files = tuple(name for name in files if Path(name).stat().st_size > 0) or files

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return make_dataset(list(files), image_shape=config.image_shape, num_heads=config.num_heads,
                            batch_size=context.get_per_replica_batch_size(config.batch_size), training=True,
                            augment=config.augment, shuffle_buffer=config.shuffle_buffer,
                            seed=config.seed + context.input_pipeline_id, drop_remainder=True, repeat=True,
                            image_format=image_format, autotune=config.input_autotune,
                            shard=(context.num_input_pipelines, context.input_pipeline_id))

    return dataset_fn


def train_on_cluster(run: TrainingJob, report: Callable[..., None] | None = None) -> dict[str, Any]:
    """This member's part of the training: the chief's saves the model to ``run.model_file``. Returns what the
    Train manifest records (replicas in sync, steps taken, the digest of the weights after the last step)."""
    from models.builders import build_model
    from tasks.data.input_pipeline import make_dataset

    config = run.config
    strategy, coordinator = make_cluster_strategy(config.strategy)
    if config.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"Train.batch_size={config.batch_size} (the global batch) does not split evenly over "
                         f"{strategy.num_replicas_in_sync} replicas")
    if config.train_examples:  # Train checks it first where it can count the replicas without TensorFlow
        check_training_replicas(config.train_examples, strategy.num_replicas_in_sync, config.strategy)
    keras.utils.set_random_seed(config.seed)
    validation = make_dataset(list(run.validation_files), image_shape=config.image_shape,
                              num_heads=config.num_heads, batch_size=max(config.batch_size, 256), training=False,
                              image_format=run.image_format)

    def build() -> keras.Model:
        return build_model(config.model, input_shape=config.image_shape, num_classes=config.num_classes,
                           num_heads=config.num_heads, **config.model_options)

    def on_epoch(epoch: int, logs: dict) -> None:
        if report is not None:
            report(epoch, logs)

    loop = CustomLoop(config, strategy, coordinator, build,
                      sharded_training_input(config, run.train_files, run.image_format), validation,
                      work_dir=run.work_dir, is_chief=run.is_chief, scratch_dir=run.scratch_dir, on_epoch=on_epoch)
    model = loop.run()
    if run.model_file is not None:
        model.save(run.model_file)
    return {"num_replicas_in_sync": int(strategy.num_replicas_in_sync), "steps": int(loop.step.numpy()),
            "weights_sha256": loop.last_weights_sha256}


def serve(job: str, index: int) -> tf.distribute.Server:
    """A parameter server or a worker of a parameter-server cluster: a TensorFlow server the chief's coordinator
    sends variables and steps to. It runs in background threads until the process exits."""
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return tf.distribute.Server(resolver.cluster_spec(), job_name=job, task_index=index,
                                protocol=resolver.rpc_layer or "grpc", start=True)
