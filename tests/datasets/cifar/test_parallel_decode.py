"""CIFAR batches decoded by a thread pool must equal the serial decode, in order, errors included."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import tasks.datasets.cifar.parallel_decode as parallel
from tasks.datasets.cifar.codec import CIFAR100
from tasks.formats.errors import FormatError
from tests.fakes.cifar import write_cifar_batch

SIZES = [7, 10, 3, 12, 5, 9, 1]


def make_batches(directory: Path) -> tuple[list[Path], list[np.ndarray]]:
    rng = np.random.default_rng(7)
    paths, images = [], []
    for index, size in enumerate(SIZES):
        pixels = rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8)
        path = directory / f"batch_{index}"
        write_cifar_batch(path, pixels, rng.integers(0, 100, size), spec=CIFAR100,
                          coarse_labels=rng.integers(0, 20, size), protocol=2 + index % 4)
        paths.append(path)
        images.append(pixels)
    return paths, images


@pytest.mark.parametrize("workers", [2, 3, 8])
def test_threaded_decode_equals_serial_decode_in_order(tmp_path: Path, workers: int) -> None:
    paths, images = make_batches(tmp_path)
    serial = list(parallel.iter_batches(paths, CIFAR100, workers=1))
    threaded = list(parallel.iter_batches(paths, CIFAR100, workers=workers))  # every batch kept: none is reused
    assert [name for name, _ in threaded] == [name for name, _ in serial] == [p.name for p in paths]
    for (_, got), (_, want), pixels in zip(threaded, serial, images, strict=True):
        np.testing.assert_array_equal(got.images, pixels)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.coarse_labels, want.coarse_labels)


def test_decoding_runs_on_pool_threads_at_most_workers_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths, _ = make_batches(tmp_path)
    started: list[str] = []
    threads: set[str] = set()

    read_rows = parallel.read_spec_rows

    def recording_read(path: Path, spec: object) -> object:
        started.append(path.name)
        threads.add(threading.current_thread().name)
        return read_rows(path, spec)

    monkeypatch.setattr(parallel, "read_spec_rows", recording_read)
    batches = parallel.iter_batches(paths, CIFAR100, workers=2)
    first_name, _ = next(batches)
    assert first_name == "batch_0"
    assert len(started) <= 3  # batch 0 (held by the caller) and at most two decoded ahead
    assert [name for name, _ in batches] == [p.name for p in paths[1:]]
    assert all(name.startswith("cifar-decode") for name in threads)


@pytest.mark.parametrize("workers", [1, 2])
def test_images_out_receives_every_batch_in_order(tmp_path: Path, workers: int) -> None:
    paths, images = make_batches(tmp_path)
    out = np.full((sum(SIZES) + 4, 32, 32, 3), 77, dtype=np.uint8)
    yielded = [batch.images for _, batch in parallel.iter_batches(paths, CIFAR100, workers=workers, images_out=out)]
    np.testing.assert_array_equal(out[: sum(SIZES)], np.concatenate(images))
    assert (out[sum(SIZES) :] == 77).all()
    assert all(np.shares_memory(view, out) for view in yielded)


def test_images_out_too_small_is_an_error(tmp_path: Path) -> None:
    paths, _ = make_batches(tmp_path)
    out = np.empty((sum(SIZES[:3]) + 1, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="batch_3.*overflows images_out"):
        list(parallel.iter_batches(paths, CIFAR100, workers=2, images_out=out))


@pytest.mark.parametrize("with_out", [False, True])
@pytest.mark.parametrize("workers", [2, 3])
def test_a_bad_batch_raises_its_error_in_turn(tmp_path: Path, workers: int, with_out: bool) -> None:
    paths, images = make_batches(tmp_path)
    data = paths[3].read_bytes()
    paths[3].write_bytes(data[: len(data) // 2])
    out = np.zeros((sum(SIZES), 32, 32, 3), dtype=np.uint8) if with_out else None
    names = []
    with pytest.raises(FormatError, match="batch_3.*truncated"):
        for name, batch in parallel.iter_batches(paths, CIFAR100, workers=workers, images_out=out):
            np.testing.assert_array_equal(batch.images, images[len(names)])
            names.append(name)
    assert names == [p.name for p in paths[:3]]


def test_leaving_early_stops_the_pool(tmp_path: Path) -> None:
    paths, images = make_batches(tmp_path)
    out = np.zeros((sum(SIZES), 32, 32, 3), dtype=np.uint8)
    batches = parallel.iter_batches(paths, CIFAR100, workers=3, images_out=out)
    np.testing.assert_array_equal(next(batches)[1].images, images[0])
    batches.close()  # a consumer that stops after one batch: no thread is left waiting
    assert not [t for t in threading.enumerate() if t.name.startswith("cifar-decode")]


def test_workers_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers"):
        list(parallel.iter_batches([tmp_path / "x"], CIFAR100, workers=0))
