"""read_ahead: order, errors at the item where they happen, and a thread that stops with its consumer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tasks.features.read_ahead import THREAD_NAME, read_ahead


def _live_readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]


def _wait_for_no_readers(seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while _live_readers() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_items_arrive_in_order_and_complete() -> None:
    assert list(read_ahead(range(1000), depth=3)) == list(range(1000))


def test_an_empty_source_gives_nothing() -> None:
    assert list(read_ahead(iter(()))) == []


def test_the_source_runs_ahead_of_the_consumer_by_at_most_depth() -> None:
    produced: list[int] = []

    def source() -> Iterator[int]:
        for i in range(50):
            produced.append(i)
            yield i

    reader = read_ahead(source(), depth=2)
    assert next(reader) == 0
    time.sleep(0.3)
    # one handed out, two queued, one more read and waiting for room
    assert len(produced) <= 4
    reader.close()
    _wait_for_no_readers()


def test_an_error_in_the_source_reaches_the_consumer_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("shard-00003: truncated record at offset 77")

    seen: list[int] = []
    with pytest.raises(ValueError, match="offset 77"):
        for item in read_ahead(source()):
            seen.append(item)
    assert seen == [1, 2]


def test_a_consumer_that_stops_early_stops_the_thread() -> None:
    def endless() -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1

    for item in read_ahead(endless(), depth=2):
        if item == 5:
            break
    _wait_for_no_readers()
    assert _live_readers() == []


def test_an_error_in_the_consumer_stops_the_thread() -> None:
    def endless() -> Iterator[int]:
        while True:
            yield 0

    with pytest.raises(RuntimeError):
        for _ in read_ahead(endless()):
            raise RuntimeError("the model failed")
    _wait_for_no_readers()
    assert _live_readers() == []


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"):
        next(read_ahead(range(3), depth=0))
