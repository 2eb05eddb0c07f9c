"""Read an iterator's items on a background thread, a few ahead of the consumer. No Luigi, no TensorFlow.

The producer is Python that reads and decodes shards; the consumer spends its time in TensorFlow kernels,
which release the GIL, so the two overlap. One pool thread calls ``next`` on the source, in order, at most
``depth`` calls ahead; an exception raised by the source reaches the consumer at the item where it happened;
a consumer that stops early (an error, a ``break``) cancels the calls not yet started and waits for the one
running, so no thread outlives it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from enum import Enum
from typing import TypeVar

T = TypeVar("T")
THREAD_NAME = "tfpipe-read-ahead"


class _End(Enum):
    """What ``next`` returns once the source is exhausted (an Enum member, so ``is`` narrows it away)."""

    END = 0


_END = _End.END


def read_ahead(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """The items of ``items``, in order, read by one thread at most ``depth`` items ahead."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    source = iter(items)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)
    try:
        pending: deque[Future[T | _End]] = deque(pool.submit(next, source, _END) for _ in range(depth))
        while True:
            item = pending.popleft().result()
            if item is _END:
                return
            pending.append(pool.submit(next, source, _END))
            yield item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
