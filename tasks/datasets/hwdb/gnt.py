"""CASIA HWDB ``.gnt`` codec: a block-buffered, fully validating streaming reader and a counter.

Each sample is a 10-byte header followed by a grayscale bitmap::

    uint32 LE  total size (== 10 + width * height)
    2 bytes    tag code, GB2312, lead byte first (decode bytes[4:6] as 'gb2312', not as a LE integer)
    uint16 LE  width
    uint16 LE  height
    width * height uint8, row-major, 255 = background

The reader pulls the file in large blocks into one reusable buffer and parses headers with
``struct.unpack_from``, so memory stays at about one block plus one sample whatever the file size.
Only a clean end of file exactly at a sample boundary ends iteration; anything else raises
GntFormatError naming the file, the byte offset and the sample index. The writer used by tests and bench
is ``tests/fakes/gnt.py``.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.formats.errors import GntFormatError

HEADER = struct.Struct("<I2sHH")
HEADER_SIZE = HEADER.size  # 10
TAG_ENCODING = "gb2312"
DEFAULT_BLOCK_SIZE = 4 << 20
DEFAULT_MAX_DIM = 1024


@dataclass(frozen=True)
class GntSample:
    tag: str
    bitmap: np.ndarray  # (H, W) uint8
    offset: int  # byte offset of the sample header in the file
    index: int  # 0-based sample number in the file


_TAG_CACHE: dict[bytes, str] = {}  # tag bytes -> character; at most 65536 two-byte keys


def _parse_header(
    raw: bytes | bytearray, at: int, *, path: str, offset: int, index: int, max_dim: int
) -> tuple[str, int, int]:
    """Unpack and validate the 10-byte header at ``raw[at:]``; returns ``(tag, width, height)``."""
    size, tag_bytes, width, height = HEADER.unpack_from(raw, at)
    if 0 < width <= max_dim and 0 < height <= max_dim and size == HEADER_SIZE + width * height:
        tag = _TAG_CACHE.get(tag_bytes)
        if tag is not None:  # fast path: a valid header with a tag seen before
            return tag, width, height
    problem = _header_problem(size, tag_bytes, width, height, max_dim)
    if problem is not None:
        raise GntFormatError(f"sample {index}: {problem}", path=path, offset=offset, index=index)
    tag = _TAG_CACHE[tag_bytes] = tag_bytes.decode(TAG_ENCODING)
    return tag, width, height


def _header_problem(size: int, tag_bytes: bytes, width: int, height: int, max_dim: int) -> str | None:
    """What is wrong with a header, or None if it is valid."""
    if width == 0 or height == 0:
        return f"zero-sized bitmap {width}x{height}"
    if width > max_dim or height > max_dim:
        return f"bitmap {width}x{height} exceeds max_dim={max_dim}"
    if size != HEADER_SIZE + width * height:
        return f"size field {size} != 10 + {width}*{height} = {HEADER_SIZE + width * height}"
    try:
        tag = tag_bytes.decode(TAG_ENCODING)
    except UnicodeDecodeError:
        tag = ""
    if len(tag) != 1:
        return f"tag bytes {tag_bytes.hex(' ')} are not one GB2312 character"
    return None


def _truncated(what: str, index: int, got: int, wanted: str, *, path: str, offset: int) -> GntFormatError:
    return GntFormatError(
        f"sample {index}: truncated {what}, {got} of {wanted} before end of file",
        path=path,
        offset=offset,
        index=index,
    )


class _BlockBuffer:
    """A window over a binary file in one reusable bytearray, refilled with ``readinto`` in blocks.

    ``data[pos:end]`` holds unread bytes; ``base`` is the file offset of ``data[0]``. The array grows only
    when a single sample is larger than the block size, so memory is bounded by max(block, sample).
    """

    def __init__(self, stream: io.RawIOBase, block_size: int) -> None:
        self._stream = stream
        self.data = bytearray(max(block_size, HEADER_SIZE))
        self.pos = 0
        self.end = 0
        self.base = 0
        self.at_eof = False

    @property
    def available(self) -> int:
        return self.end - self.pos

    @property
    def file_offset(self) -> int:
        return self.base + self.pos

    def ensure(self, count: int) -> bool:
        """Make ``count`` bytes available from ``pos``; False if the file ends first."""
        if self.end - self.pos < count and not self.at_eof:
            self._refill(count)
        return self.end - self.pos >= count

    def _refill(self, count: int) -> None:
        unread = self.end - self.pos
        if count > len(self.data):
            grown = bytearray(count)
            grown[:unread] = self.data[self.pos : self.end]
            self.data = grown
        else:
            self.data[:unread] = self.data[self.pos : self.end]  # carry the tail to the front
        self.base += self.pos
        self.pos, self.end = 0, unread
        with memoryview(self.data) as view:
            while self.end < len(self.data):
                got = self._stream.readinto(view[self.end :])
                if not got:
                    self.at_eof = True
                    break
                self.end += got


def iter_gnt(
    path: str | Path, *, block_size: int = DEFAULT_BLOCK_SIZE, max_dim: int = DEFAULT_MAX_DIM
) -> Iterator[GntSample]:
    """Stream every sample of a ``.gnt`` file, validating each header and bitmap length."""
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    where = str(path)
    with open(path, "rb", buffering=0) as stream:
        buffer = _BlockBuffer(stream, block_size)
        index = 0
        while buffer.ensure(HEADER_SIZE):
            offset = buffer.file_offset
            tag, width, height = _parse_header(
                buffer.data, buffer.pos, path=where, offset=offset, index=index, max_dim=max_dim
            )
            bitmap_size = width * height
            if not buffer.ensure(HEADER_SIZE + bitmap_size):
                got = buffer.available - HEADER_SIZE
                raise _truncated(
                    "bitmap", index, got, f"{bitmap_size} bytes ({width}x{height})", path=where, offset=offset
                )
            start = buffer.pos + HEADER_SIZE
            # copy: the buffer is overwritten by the next refill
            bitmap = np.frombuffer(buffer.data, np.uint8, bitmap_size, start).reshape(height, width).copy()
            buffer.pos = start + bitmap_size
            yield GntSample(tag=tag, bitmap=bitmap, offset=offset, index=index)
            index += 1
        if buffer.available:  # a clean end of file falls exactly on a sample boundary
            got = buffer.available
            raise _truncated("header", index, got, f"{HEADER_SIZE} bytes", path=where, offset=buffer.file_offset)


def iter_gnt_tags(path: str | Path, *, max_dim: int = DEFAULT_MAX_DIM) -> Iterator[str]:
    """Yield each sample's character by reading only headers and seeking over bitmaps.

    Validates exactly like iter_gnt (same GntFormatError for a bad header or a truncated sample), so a
    dictionary pass over a file fails where a decode pass would.
    """
    where = str(path)
    with open(path, "rb", buffering=0) as stream:
        file_size = os.fstat(stream.fileno()).st_size
        offset, index = 0, 0
        while offset < file_size:
            stream.seek(offset)
            raw = stream.read(HEADER_SIZE)
            if len(raw) < HEADER_SIZE:
                raise _truncated("header", index, len(raw), f"{HEADER_SIZE} bytes", path=where, offset=offset)
            tag, width, height = _parse_header(raw, 0, path=where, offset=offset, index=index, max_dim=max_dim)
            end = offset + HEADER_SIZE + width * height
            if end > file_size:
                got = file_size - offset - HEADER_SIZE
                raise _truncated(
                    "bitmap", index, got, f"{width * height} bytes ({width}x{height})", path=where, offset=offset
                )
            yield tag
            offset, index = end, index + 1


def count_gnt_samples(path: str | Path, *, max_dim: int = DEFAULT_MAX_DIM) -> int:
    """Count samples by reading only headers and seeking over bitmaps (same validation as iter_gnt)."""
    return sum(1 for _tag in iter_gnt_tags(path, max_dim=max_dim))
