"""The split sizes training and evaluation need, and how batches of small splits are formed. No TF.

Splits of any size train and evaluate. Two are refused before any work, with one line naming the split, its
size and what would fix it: an empty split, and a training split with fewer examples than the replicas that
share each batch (a replica would get no example at all).

Over several replicas (``Train.strategy=mirrored``), Keras 3's ``fit`` needs batches it can split over them:

- training batches are whole (a partial last batch is dropped): a training split smaller than the global batch
  trains on a smaller one, so that an epoch never has zero batches (``whole_batch``);
- Keras's first evaluation step reduces every replica's share of the first batch into one tensor (its symbolic
  build), which fails unless the shares have one shape; a replica whose share of a later batch is empty fails
  in layers such as batch normalisation. Shares of unequal size count exactly. So the validation batch is a
  multiple of the replicas whose last batch still reaches every replica, and a split too small for that is read
  a few times over, in batches that split evenly (``validation_batching``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tasks.formats.dataset_info import DatasetInfo

# What makes a split bigger, by split: ImageDirs carves validation out of the decoded training images, the
# decode stage sets the test split apart.
REMEDY = {
    "train": "add images or lower ImageDirs.validation_fraction",
    "validation": "add images or raise ImageDirs.validation_fraction",
    "test": "add images or raise the decode stage's test_fraction",
}
# The splits an empty split's images went to instead: validation comes out of the decoded train split.
POOLED = {"train": ("train", "validation"), "validation": ("train", "validation")}


class SplitSizeError(ValueError):
    """A split too small to train or evaluate on: empty, or a training split smaller than the replicas."""


def pool_size(info: DatasetInfo, split: str) -> int:
    """The images ``split`` was carved from: train and validation share theirs, test is one of all."""
    pooled = POOLED.get(split, tuple(info.splits))
    return sum(info.splits[name].count for name in pooled if name in info.splits)


def check_split_sizes(info: DatasetInfo, splits: Sequence[str], *, replicas: int = 1,
                      strategy: str = "default") -> None:
    """SplitSizeError unless every split of ``splits`` holds an example (and ``train``, one per replica)."""
    for split in splits:
        if info.count(split) == 0:
            remedy = REMEDY.get(split, "add images")
            raise SplitSizeError(f"{split} split is empty (0 of {pool_size(info, split)} images went to it): "
                                 f"{remedy}")
    if "train" in splits:
        check_training_replicas(info.count("train"), replicas, strategy)


def check_training_replicas(examples: int, replicas: int, strategy: str) -> None:
    """SplitSizeError when ``examples`` training images cannot give each of ``replicas`` replicas one."""
    if examples < replicas:
        raise SplitSizeError(f"train split holds {examples} image(s), fewer than the {replicas} replicas of "
                             f"Train.strategy={strategy}: add images or train on fewer devices")


def whole_batch(batch_size: int, examples: int, replicas: int, strategy: str = "mirrored") -> int:
    """The global training batch over ``replicas`` replicas, which get whole batches only: ``batch_size``, or
    for a split smaller than it the largest multiple of ``replicas`` the split holds. One replica takes any
    batch, partial ones too: ``batch_size`` itself."""
    if replicas <= 1:
        return batch_size
    if batch_size % replicas:
        raise ValueError(f"Train.batch_size={batch_size} (the global batch) does not split evenly over "
                         f"{replicas} replicas")
    check_training_replicas(examples, replicas, strategy)
    return min(batch_size, examples - examples % replicas)


def validation_batching(examples: int, replicas: int, preferred: int) -> tuple[int, int]:
    """(batch size, passes over the split) for evaluating ``examples`` over ``replicas`` replicas: a batch that
    is a multiple of the replicas, near ``preferred``, whose last batch leaves no replica without an example
    (tf.distribute hands each replica ``ceil(size / replicas)`` of a batch in turn, the last ones what is left).
    Batches up to ``2 * replicas**2`` are tried even above ``preferred`` (2 x replicas examples a replica): then
    nearly every split of that size or more has one that works (all do for 2 to 8 replicas). A split without one
    is read ``replicas / gcd(examples, replicas)`` times, which makes every batch a multiple of the replicas
    while every example counts equally often (the mean loss and accuracy are the split's own)."""
    if examples < 1:
        raise SplitSizeError("validation split is empty: nothing to evaluate")
    largest = max(preferred, 2 * replicas * replicas) // replicas
    for multiple in range(min(largest, examples // replicas), 0, -1):
        if every_replica_gets_one(examples % (replicas * multiple), replicas):
            return replicas * multiple, 1
    passes = replicas // math.gcd(examples, replicas)
    return replicas * min(largest, examples * passes // replicas), passes


def every_replica_gets_one(size: int, replicas: int) -> bool:
    """Whether a batch of ``size`` (0: none) split as tf.distribute splits it gives every replica an example."""
    return size == 0 or size - (replicas - 1) * math.ceil(size / replicas) >= 1
