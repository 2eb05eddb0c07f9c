"""Test support: a ``.gnt`` writer (CASIA HWDB sample layout, see :mod:`tasks.datasets.hwdb.gnt`).

Writes real-format fake data for tests and bench; not product code, which only reads ``.gnt`` files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tasks.datasets.hwdb.gnt import HEADER, HEADER_SIZE, TAG_ENCODING


def encode_sample(tag: str, bitmap: np.ndarray) -> bytes:
    """One sample's bytes; ``tag`` must be a single character with a 2-byte GB2312 code."""
    bitmap = np.asarray(bitmap)
    if bitmap.dtype != np.uint8 or bitmap.ndim != 2 or 0 in bitmap.shape:
        raise ValueError(f"bitmap must be a non-empty 2-D uint8 array, got {bitmap.shape} {bitmap.dtype}")
    height, width = bitmap.shape
    if width > 0xFFFF or height > 0xFFFF:
        raise ValueError(f"bitmap {width}x{height} does not fit the 16-bit size fields")
    try:
        tag_bytes = tag.encode(TAG_ENCODING)
    except UnicodeEncodeError as exc:
        raise ValueError(f"tag {tag!r} has no GB2312 code") from exc
    if len(tag) != 1 or len(tag_bytes) != 2:
        raise ValueError(f"tag {tag!r} must be one character with a 2-byte GB2312 code")
    header = HEADER.pack(HEADER_SIZE + width * height, tag_bytes, width, height)
    return header + np.ascontiguousarray(bitmap).tobytes()


def write_gnt(path: str | Path, samples: Iterable[tuple[str, np.ndarray]]) -> int:
    """Write ``(tag, bitmap)`` pairs as a ``.gnt`` file; returns the number of samples written."""
    count = 0
    with open(path, "wb") as stream:
        for tag, bitmap in samples:
            stream.write(encode_sample(tag, bitmap))
            count += 1
    return count
