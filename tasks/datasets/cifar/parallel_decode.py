"""CIFAR batch files decoded with a pool of threads, yielded in order. No Luigi, no TensorFlow.

Threads, not processes: the heavy steps release the GIL (the pickle's 30 MB string is read by ``readinto``,
the plane interleave is ``cv2.merge``), so pool threads read and check the next files while the consumer's
thread interleaves the current one, straight into the caller's array if it gives one. The forked design
this replaced decoded into shared memory that both processes faulted in, 4 KiB at a time: on this VM that
cost more than the decode itself (docs/PERFORMANCE.md). Threads are also safe with TensorFlow loaded.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from tasks.datasets.cifar.codec import CifarBatch, CifarSpec, chw_rows_to_hwc, read_spec_rows


def iter_batches(paths: Sequence[Path], spec: CifarSpec, *, workers: int = 1,
                 images_out: np.ndarray | None = None) -> Iterator[tuple[str, CifarBatch]]:
    """``(batch file name, batch)`` for each path, in order, decoded by ``workers`` threads.

    At most ``workers`` files are decoded ahead of the batch the caller holds, so memory stays at about
    ``workers + 1`` batches whatever the number of files. A batch that fails to decode raises its
    FormatError when its turn comes; the files queued behind it are abandoned.

    ``images_out``, a C-contiguous uint8 (M, 32, 32, 3) array, receives the pixels of all batches in
    order (batch i in the rows after batch i-1), each yielded batch's ``images`` being a view of its rows:
    the caller that wants every image in one array gets it with no copy. ValueError if they do not fit.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    placement = _Placement(images_out)
    if workers == 1 or len(paths) <= 1:
        for index, path in enumerate(paths):
            yield path.name, _decode(path, spec, placement, index)
        return
    pending: deque[tuple[Path, Future[CifarBatch]]] = deque()
    remaining = enumerate(paths)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cifar-decode") as pool:
        try:
            for index, path in remaining:
                pending.append((path, pool.submit(_decode, path, spec, placement, index)))
                if len(pending) == workers:
                    break
            while pending:
                path, future = pending.popleft()
                batch = future.result()
                following = next(remaining, None)
                if following is not None:
                    next_index, next_path = following
                    pending.append((next_path, pool.submit(_decode, next_path, spec, placement, next_index)))
                yield path.name, batch
        finally:
            placement.abandon()
            for _, future in pending:
                future.cancel()


class _Placement:
    """Where each batch's pixels go: a new array, or the rows of ``images_out`` after the previous batch's.

    Batch i learns its first row once batch i-1 has been read (its row count is known), not once it has
    been interleaved, so threads interleave their batches at the same time. Jobs start in batch order on a
    FIFO pool, so the batch waited for is always already running or done. A batch that fails, or an
    abandoned run, settles the batches behind it with the error instead of leaving them waiting.
    """

    def __init__(self, images_out: np.ndarray | None) -> None:
        self.images_out = images_out
        self._ends: dict[int, Future[int]] = {}  # batch index -> the row after its last one
        self._lock = threading.Lock()

    def _end_of(self, index: int) -> Future[int]:
        with self._lock:
            return self._ends.setdefault(index, Future())

    def _settle(self, end: Future[int], *, rows: int | None = None, error: BaseException | None = None) -> None:
        """Set ``end`` unless something settled it first (an abandoned run settles every open end)."""
        with self._lock:
            if end.done():
                return
            if error is not None:
                end.set_exception(error)
            else:
                assert rows is not None, "settled with rows or an error"
                end.set_result(rows)

    def rows_for(self, path: Path, index: int, count: int) -> np.ndarray | None:
        """The destination of batch ``index``'s ``count`` images (None: a new array)."""
        if self.images_out is None:
            return None
        end = self._end_of(index)
        try:
            start = 0 if index == 0 else self._end_of(index - 1).result()
            if start + count > len(self.images_out):
                raise ValueError(f"{path}: batch of {count} images overflows images_out ({start} of "
                                 f"{len(self.images_out)} rows used)")
        except BaseException as exc:
            self._settle(end, error=exc)
            raise
        self._settle(end, rows=start + count)
        return self.images_out[start : start + count]

    def fail(self, index: int, error: BaseException) -> None:
        if self.images_out is not None:
            self._settle(self._end_of(index), error=error)

    def abandon(self) -> None:
        with self._lock:
            ends = list(self._ends.values())
        for end in ends:
            self._settle(end, error=RuntimeError("decoding abandoned"))


def _decode(path: Path, spec: CifarSpec, placement: _Placement, index: int) -> CifarBatch:
    try:
        rows = read_spec_rows(path, spec)
    except BaseException as exc:
        placement.fail(index, exc)
        raise
    destination = placement.rows_for(path, index, len(rows.images))
    return replace(rows, images=chw_rows_to_hwc(rows.images, destination))
