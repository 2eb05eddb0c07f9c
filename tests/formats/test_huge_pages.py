"""Huge-page advice for large read buffers: only whole 2 MiB pages inside the buffer, and the unpickler's big
strings reach it before they are filled."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

import tasks.formats.huge_pages as huge_pages
from tasks.formats.huge_pages import HUGE_PAGE_BYTES, HugePageReader, huge_page_span
from tasks.formats.safe_pickle import load_restricted

MIB = 1024 * 1024


def test_span_covers_only_whole_huge_pages_inside_the_buffer() -> None:
    assert huge_page_span(0, 6 * MIB) == (0, 6 * MIB)
    assert huge_page_span(1, 6 * MIB) == (HUGE_PAGE_BYTES, 4 * MIB)  # starts after, ends before the buffer
    assert huge_page_span(HUGE_PAGE_BYTES - 4096, HUGE_PAGE_BYTES) == (HUGE_PAGE_BYTES, 0)
    start, length = huge_page_span(3 * MIB + 17, 9 * MIB)
    assert start % HUGE_PAGE_BYTES == 0 and start >= 3 * MIB + 17 and start + length <= 12 * MIB + 17


def test_small_and_read_only_buffers_get_no_advice() -> None:
    assert not huge_pages.advise_huge_pages(bytearray(MIB))
    assert not huge_pages.advise_huge_pages(memoryview(bytes(8 * MIB)))


@pytest.mark.skipif(huge_pages._madvise is None, reason="no MADV_HUGEPAGE on this platform")
def test_large_writable_buffers_are_advised() -> None:
    assert huge_pages.advise_huge_pages(bytearray(8 * MIB))


def test_the_unpickler_reads_large_strings_through_readinto(monkeypatch: pytest.MonkeyPatch) -> None:
    advised: list[int] = []
    advise = huge_pages.advise_huge_pages
    monkeypatch.setattr(huge_pages, "advise_huge_pages", lambda buffer: advised.append(len(buffer)) or advise(buffer))
    payload = np.random.default_rng(0).integers(0, 256, 6 * MIB, dtype=np.uint8)
    data = pickle.dumps({b"data": payload, b"labels": [1, 2, 3]}, protocol=4)
    loaded = pickle.Unpickler(HugePageReader(io.BytesIO(data))).load()
    np.testing.assert_array_equal(loaded[b"data"], payload)
    assert loaded[b"labels"] == [1, 2, 3] and max(advised) >= 6 * MIB
    assert np.array_equal(load_restricted(io.BytesIO(data))[b"data"], payload)


def test_a_stream_without_peek_still_loads() -> None:
    class NoPeek(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:
            return self._inner.readinto(buffer)

    data = pickle.dumps({b"x": list(range(1000)), b"y": b"z" * 5000}, protocol=2)
    assert pickle.Unpickler(HugePageReader(NoPeek(data))).load() == {b"x": list(range(1000)), b"y": b"z" * 5000}
