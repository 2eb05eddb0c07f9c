"""Split sizes: the refusals (an empty split, fewer training examples than replicas) in one line each, and the
batching that lets every other size train and evaluate over several replicas. No TensorFlow."""

from __future__ import annotations

import math

import pytest

from tasks.data.split_sizes import (
    SplitSizeError,
    check_split_sizes,
    every_replica_gets_one,
    validation_batching,
    whole_batch,
)
from tasks.formats.dataset_info import DatasetInfo, SplitInfo


def info(train: int, validation: int, test: int) -> DatasetInfo:
    return DatasetInfo("fake", (8, 8, 1), 3, 1, {"train": SplitInfo(train), "validation": SplitInfo(validation),
                                                 "test": SplitInfo(test)})


def test_an_empty_validation_split_is_refused_naming_its_size_and_the_fix() -> None:
    with pytest.raises(SplitSizeError) as refused:
        check_split_sizes(info(30, 0, 6), ("train", "validation"))
    assert str(refused.value) == ("validation split is empty (0 of 30 images went to it): add images or raise "
                                  "ImageDirs.validation_fraction")


def test_an_empty_train_or_test_split_is_refused_with_its_own_fix() -> None:
    with pytest.raises(SplitSizeError, match=r"^train split is empty \(0 of 4 images went to it\): add images or "
                                             r"lower ImageDirs.validation_fraction$"):
        check_split_sizes(info(0, 4, 6), ("train", "validation"))
    with pytest.raises(SplitSizeError, match=r"^test split is empty \(0 of 34 images went to it\): add images or "
                                             r"raise the decode stage's test_fraction$"):
        check_split_sizes(info(30, 4, 0), ("test",))


def test_a_train_split_smaller_than_the_replicas_is_refused_and_any_other_size_passes() -> None:
    with pytest.raises(SplitSizeError, match=r"^train split holds 1 image\(s\), fewer than the 2 replicas of "
                                             r"Train.strategy=mirrored: add images or train on fewer devices$"):
        check_split_sizes(info(1, 1, 1), ("train", "validation"), replicas=2, strategy="mirrored")
    check_split_sizes(info(2, 1, 1), ("train", "validation", "test"), replicas=2, strategy="mirrored")
    check_split_sizes(info(1, 1, 1), ("train", "validation", "test"))


def test_refusals_are_value_errors_so_the_cli_prints_them_without_a_traceback() -> None:
    from pipelines.commands.common import EXPECTED_ERRORS

    assert issubclass(SplitSizeError, EXPECTED_ERRORS)


def test_whole_training_batches_shrink_to_a_split_smaller_than_the_batch() -> None:
    assert whole_batch(64, 1000, 1) == 64
    assert whole_batch(64, 10, 1) == 64  # one replica takes a partial batch as it is
    assert whole_batch(64, 1000, 2) == 64
    assert whole_batch(64, 41, 2) == 40  # one whole batch an epoch instead of none
    assert whole_batch(64, 2, 2) == 2
    with pytest.raises(ValueError, match="Train.batch_size=63 .* does not split evenly over 2 replicas"):
        whole_batch(63, 1000, 2)
    with pytest.raises(SplitSizeError, match="fewer than the 4 replicas"):
        whole_batch(64, 3, 4)


def shares(size: int, replicas: int) -> list[int]:
    """How tf.distribute splits a batch of ``size`` over ``replicas`` (measured: 7 over 3 is 3, 3, 1)."""
    each = math.ceil(size / replicas)
    return [max(0, min(each, size - index * each)) for index in range(replicas)]


@pytest.mark.parametrize("replicas", [2, 3, 4, 8])
def test_validation_batches_of_every_split_size_reach_every_replica(replicas: int) -> None:
    for examples in range(1, 700):
        batch, passes = validation_batching(examples, replicas, preferred=256)
        total = examples * passes
        sizes = [batch] * (total // batch) + ([total % batch] if total % batch else [])
        assert sizes[0] % replicas == 0, (examples, batch)  # Keras's first step needs equal shares
        assert all(min(shares(size, replicas)) >= 1 for size in sizes), (examples, batch, sizes)
        assert passes == 1 or all(size % replicas == 0 for size in sizes), (examples, passes, sizes)
        assert batch <= max(256, 2 * replicas**2)
        if examples >= 2 * replicas**2:  # big enough never to be read twice, nor in tiny batches
            assert passes == 1 and batch >= min(examples, 256) // 2, (examples, batch)


def test_validation_batching_on_one_replica_is_the_preferred_batch() -> None:
    assert validation_batching(1000, 1, 256) == (256, 1)
    assert validation_batching(41, 1, 256) == (41, 1)
    assert every_replica_gets_one(0, 4) and every_replica_gets_one(7, 3) and not every_replica_gets_one(6, 4)
