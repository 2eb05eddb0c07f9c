"""CIFAR batch files decoded with a pool of threads, yielded in order. No Luigi, no TensorFlow.

Threads, not processes: the heavy steps release the GIL (the pickle's 30 MB string is read by ``readinto``,
the plane interleave is ``cv2.merge``), so pool threads read and check the next files while the consumer's
thread interleaves the current one, straight into the caller's array if it gives one. The forked design
this replaced decoded into shared memory that both processes faulted in, 4 KiB at a time: on this VM that
cost more than the decode itself (docs/PERFORMANCE.md). Threads are also safe with TensorFlow loaded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from tasks.formats.cifar import CifarBatch, CifarSpec, chw_rows_to_hwc, read_cifar_rows


def iter_batches(paths: Sequence[Path], spec: CifarSpec, *, workers: int = 1,
                 images_out: np.ndarray | None = None) -> Iterator[tuple[str, CifarBatch]]:
    """``(batch file name, batch)`` for each path, in order; ``workers`` threads read and check the files.

    At most ``workers`` files are read ahead of the batch the caller holds, so memory stays at about
    ``workers + 1`` batches whatever the number of files. A batch that fails to decode raises its
    FormatError when its turn comes; the files queued behind it are abandoned.

    ``images_out``, a C-contiguous uint8 (M, 32, 32, 3) array, receives the pixels of all batches in
    order (batch i in the rows after batch i-1), each yielded batch's ``images`` being a view of its rows:
    the caller that wants every image in one array gets it with no copy. ValueError if they do not fit.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    start = 0
    for path, rows in _iter_rows(paths, spec, workers):
        count = len(rows.images)
        if images_out is None:
            images = chw_rows_to_hwc(rows.images)
        elif start + count > len(images_out):
            raise ValueError(f"{path}: batch of {count} images overflows images_out ({start} of {len(images_out)} "
                             "rows used)")
        else:
            images = chw_rows_to_hwc(rows.images, images_out[start : start + count])
        start += count
        yield path.name, replace(rows, images=images)


def _iter_rows(paths: Sequence[Path], spec: CifarSpec, workers: int) -> Iterator[tuple[Path, CifarBatch]]:
    """``(path, batch with planar rows)`` in order, read by ``workers`` threads (inline for one)."""
    if workers == 1 or len(paths) <= 1:
        for path in paths:
            yield path, _read_rows(path, spec)
        return
    pending: deque[tuple[Path, Future[CifarBatch]]] = deque()
    remaining = iter(paths)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cifar-decode") as pool:
        try:
            for path in remaining:
                pending.append((path, pool.submit(_read_rows, path, spec)))
                if len(pending) == workers:
                    break
            while pending:
                path, future = pending.popleft()
                rows = future.result()
                next_path = next(remaining, None)
                if next_path is not None:
                    pending.append((next_path, pool.submit(_read_rows, next_path, spec)))
                yield path, rows
        finally:
            for _, future in pending:
                future.cancel()


def _read_rows(path: Path, spec: CifarSpec) -> CifarBatch:
    return read_cifar_rows(path, num_classes=spec.num_classes, label_key=spec.label_key,
                           num_coarse_classes=spec.num_coarse_classes)
