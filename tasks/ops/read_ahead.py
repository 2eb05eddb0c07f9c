"""Read an iterator's items on a background thread, a few ahead of the consumer. No Luigi, no TensorFlow.

The producer is Python that reads and decodes shards; the consumer spends its time in TensorFlow kernels,
which release the GIL, so the two overlap. Items arrive in order; an exception raised by the source reaches
the consumer at the item where it happened; a consumer that stops early (an error, a ``break``) stops the
thread, which never blocks past ``POLL_SECONDS`` on a full queue.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
POLL_SECONDS = 0.1
_END = object()


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def read_ahead(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """The items of ``items``, in order, read by a daemon thread at most ``depth`` items ahead."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    ready: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
        except Exception as error:  # noqa: BLE001 - handed to the consumer, which raises it
            offer(_Raised(error))
            return
        offer(_END)

    thread = threading.Thread(target=produce, name="tfpipe-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=10 * POLL_SECONDS)
