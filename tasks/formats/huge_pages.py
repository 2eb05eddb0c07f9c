"""Transparent huge pages for large read buffers that numpy does not allocate. No Luigi, no TensorFlow.

NumPy asks Linux for huge pages (``madvise(MADV_HUGEPAGE)``) on every array of 4 MiB or more; the 30 MB
string an unpickler reads a CIFAR batch into gets no such advice, so the kernel faults it in 4 KiB at a
time: ~7,500 page faults per batch, which on a VM cost more than reading the bytes (docs/PERFORMANCE.md).
``HugePageReader`` gives a file's large ``readinto`` buffers the same advice numpy gives its own.
Advice only: where the kernel or platform has no transparent huge pages, nothing changes.
"""

from __future__ import annotations

import ctypes
import io
import mmap
import sys
from typing import IO, TYPE_CHECKING, cast

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

HUGE_PAGE_BYTES = 2 * 1024 * 1024
ADVISE_FROM_BYTES = 4 * 1024 * 1024  # numpy's threshold for the same advice
_MADV_HUGEPAGE: int | None = getattr(mmap, "MADV_HUGEPAGE", None) if sys.platform.startswith("linux") else None


def _load_madvise():  # noqa: ANN202 - a ctypes function or None
    if _MADV_HUGEPAGE is None:
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


_madvise = _load_madvise()


def huge_page_span(address: int, length: int) -> tuple[int, int]:
    """``(start, length)`` of the whole 2 MiB pages inside ``[address, address + length)``; length 0 if none."""
    start = -(-address // HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES
    end = (address + length) // HUGE_PAGE_BYTES * HUGE_PAGE_BYTES
    return start, max(0, end - start)


def advise_huge_pages(buffer: WriteableBuffer) -> bool:
    """Advise huge pages for the 2 MiB-aligned interior of a writable buffer of >= 4 MiB, before it is filled.

    Only whole huge pages inside the buffer are advised, so no neighbouring memory is touched. Returns
    whether advice was given (False on small buffers, read-only ones, or platforms without THP).
    """
    size = memoryview(buffer).nbytes
    if _madvise is None or size < ADVISE_FROM_BYTES:
        return False
    try:
        address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    except TypeError:  # read-only buffer
        return False
    start, length = huge_page_span(address, size)
    return length > 0 and _madvise(start, length, _MADV_HUGEPAGE) == 0


class HugePageReader(io.RawIOBase):
    """A read-only binary stream over ``source`` that advises huge pages for every large ``readinto`` buffer.

    Wrap a file handed to ``pickle.Unpickler``: the C unpickler allocates each large bytes object and fills
    it with one ``readinto`` call, so the advice lands before any of its pages is touched.
    """

    def __init__(self, source: IO[bytes]) -> None:
        super().__init__()
        self._source = source
        self.name = getattr(source, "name", "<stream>")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        advise_huge_pages(buffer)
        # Binary files (io's readers, GzipFile...) all have readinto; typing.IO just does not declare it.
        return cast(io.BufferedIOBase, self._source).readinto(buffer)

    def read(self, size: int = -1) -> bytes:
        return self._source.read(size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._source.readline(-1 if size is None else size)  # both mean: to the end of the line

    def peek(self, size: int = 0) -> bytes:
        peek = getattr(self._source, "peek", None)
        if peek is None:
            raise NotImplementedError("the wrapped stream has no peek")  # the C unpickler then stops asking
        return peek(size)
