"""IDX codec (MNIST, Fashion-MNIST): a fully validating reader for plain or gzip files, and the inverse writer.

An IDX file is a 4-byte magic, the dimensions, then the data, every number big-endian::

    2 bytes     zero
    1 byte      dtype code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    1 byte      number of dimensions d
    d x uint32  dimension sizes
    data        prod(dims) values of that dtype, row-major

MNIST labels are idx1-ubyte (magic 0x00000801 = 2049, dims ``(N,)``) and images idx3-ubyte (magic
0x00000803 = 2051, dims ``(N, rows, cols)``). Compression is detected by the gzip magic bytes ``1f 8b``,
never by the file name. The header is checked before any data is read, the data size is capped before
anything is allocated, the data is read with one call and decoded with ``np.frombuffer``, and a byte after
the data is an error. Every violation raises IdxFormatError naming the file and the byte offset; for a gzip
file offsets count bytes of the decompressed stream.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass
from gzip import BadGzipFile, GzipFile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tasks.formats.errors import IdxFormatError

GZIP_MAGIC = b"\x1f\x8b"
MAGIC_SIZE = 4
DIM_SIZE = 4
LABELS_MAGIC = 0x00000801  # 2049: idx1-ubyte, dims (N,)
IMAGES_MAGIC = 0x00000803  # 2051: idx3-ubyte, dims (N, rows, cols)
LABELS_HEADER_SIZE = MAGIC_SIZE + DIM_SIZE  # 8: label i is at byte 8 + i
MAX_DATA_BYTES = 4 << 30  # 4 GiB; real MNIST train images are 47 MB
GZIP_LEVEL = 6
DTYPE_CODES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_BY_KIND = {(dtype.kind, dtype.itemsize): code for code, dtype in DTYPE_CODES.items()}
_MAGIC_NAMES = {LABELS_MAGIC: "idx1-ubyte label", IMAGES_MAGIC: "idx3-ubyte image"}
_GZIP_ERRORS = (BadGzipFile, EOFError, zlib.error)


@dataclass(frozen=True)
class IdxHeader:
    magic: int
    dims: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype:
        return DTYPE_CODES[(self.magic >> 8) & 0xFF]

    @property
    def size(self) -> int:
        """Header bytes: the data starts at this offset."""
        return MAGIC_SIZE + DIM_SIZE * len(self.dims)

    @property
    def data_bytes(self) -> int:
        return math.prod(self.dims) * self.dtype.itemsize


class _Source:
    """One open IDX stream (the file itself, or a GzipFile over it) and how to report errors in it."""

    def __init__(self, path: str, raw: BinaryIO, stream: BinaryIO | GzipFile, gzipped: bool) -> None:
        self.path = path
        self.raw = raw
        self.stream = stream
        self.gzipped = gzipped

    def error(self, message: str, offset: int | None) -> IdxFormatError:
        return IdxFormatError(message, path=self.path, offset=offset, decompressed=self.gzipped)

    def read(self, count: int, offset: int, what: str) -> bytes:
        """Up to ``count`` bytes at (decompressed) ``offset``; a broken gzip stream becomes IdxFormatError."""
        try:
            return self.stream.read(count)
        except _GZIP_ERRORS as exc:
            raise self.error(f"corrupt or truncated gzip stream while reading {what}: {exc}", offset) from exc

    def trailing_bytes(self, end: int) -> int | None:
        """How many bytes follow offset ``end`` in a plain file; None for gzip (unknown without inflating)."""
        return None if self.gzipped else os.fstat(self.raw.fileno()).st_size - end


def _read_header(source: _Source, expect_magic: int | None, nonzero_axes: tuple[int, ...], max_bytes: int) -> IdxHeader:
    raw = source.read(MAGIC_SIZE, 0, "the magic number")
    if len(raw) < MAGIC_SIZE:
        raise source.error(f"header truncated: the file ends after {len(raw)} of the 4 magic bytes", len(raw))
    magic = int.from_bytes(raw, "big")
    if raw[0] or raw[1]:
        raise source.error(f"bad magic 0x{magic:08x}: an IDX file starts with two zero bytes", 0)
    if raw[2] not in DTYPE_CODES:
        known = ", ".join(f"0x{code:02x}" for code in DTYPE_CODES)
        raise source.error(f"unknown dtype code 0x{raw[2]:02x} in magic 0x{magic:08x}; known: {known}", 2)
    ndim = raw[3]
    if ndim == 0:
        raise source.error(f"magic 0x{magic:08x} declares zero dimensions; at least one is needed", 3)
    if expect_magic is not None and magic != expect_magic:
        raise source.error(
            f"magic 0x{magic:08x} ({magic}) is not the {_MAGIC_NAMES[expect_magic]} magic "
            f"0x{expect_magic:08x} ({expect_magic})",
            0,
        )
    raw = source.read(DIM_SIZE * ndim, MAGIC_SIZE, "the dimensions")
    if len(raw) < DIM_SIZE * ndim:
        raise source.error(
            f"header truncated: {ndim} dimensions need {DIM_SIZE * ndim} bytes after the magic, "
            f"the file ends after {len(raw)}",
            MAGIC_SIZE + len(raw),
        )
    header = IdxHeader(magic, struct.unpack(f">{ndim}I", raw))
    if header.data_bytes > max_bytes:
        shape = " x ".join(map(str, header.dims))
        raise source.error(
            f"dimensions {shape} of {header.dtype.itemsize}-byte values make {header.data_bytes} bytes, "
            f"over the {max_bytes}-byte cap",
            MAGIC_SIZE,
        )
    # numpy refuses a shape whose non-zero dimensions overflow intp even when a zero makes it empty (found by
    # bench/fuzz: "cannot reshape array of size 0 into shape (50331882, 1610612752, 16777216, 0, ...)")
    if math.prod(d for d in header.dims if d) * header.dtype.itemsize > np.iinfo(np.intp).max:
        shape = " x ".join(map(str, header.dims))
        raise source.error(f"dimensions {shape} cannot be an array shape: their non-zero sizes overflow", MAGIC_SIZE)
    for axis in nonzero_axes:
        if header.dims[axis] == 0:
            raise source.error(f"dimension {axis} is zero in dims {header.dims}", MAGIC_SIZE + DIM_SIZE * axis)
    return header


def _read_data(source: _Source, header: IdxHeader) -> np.ndarray:
    wanted = header.data_bytes
    # A plain file's size is known: dimensions claiming more data than it holds are refused before ``read``
    # reserves the claimed size (up to max_bytes; a MemoryError where memory is not overcommitted).
    on_disk = source.trailing_bytes(header.size)
    if on_disk is not None and on_disk < wanted:
        raise _truncated_data(source, header, on_disk)
    data = source.read(wanted, header.size, "the data")
    if len(data) < wanted:
        raise _truncated_data(source, header, len(data))
    end = header.size + wanted
    if source.read(1, end, "past the data"):
        extra = source.trailing_bytes(end)
        count = "" if extra is None else f"{extra} "
        raise source.error(f"{count}trailing bytes after the {wanted}-byte data of dims {header.dims}", end)
    # astype copies into native byte order, so the result is writable and independent of ``data``
    return np.frombuffer(data, dtype=header.dtype).reshape(header.dims).astype(header.dtype.newbyteorder("="))


def _truncated_data(source: _Source, header: IdxHeader, got: int) -> IdxFormatError:
    return source.error(
        f"truncated data: dims {header.dims} of {header.dtype.name} need {header.data_bytes} bytes from offset "
        f"{header.size}, got {got}",
        header.size + got,
    )


def _load(
    path: str | Path,
    *,
    expect_magic: int | None = None,
    nonzero_axes: tuple[int, ...] = (),
    max_bytes: int = MAX_DATA_BYTES,
) -> tuple[np.ndarray, bool]:
    """The array in ``path`` and whether the file was gzip-compressed."""
    with open(path, "rb") as raw:
        gzipped = raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
        raw.seek(0)
        if not gzipped:
            source = _Source(str(path), raw, raw, gzipped=False)
            return _read_data(source, _read_header(source, expect_magic, nonzero_axes, max_bytes)), False
        with GzipFile(fileobj=raw, mode="rb") as stream:
            source = _Source(str(path), raw, stream, gzipped=True)
            return _read_data(source, _read_header(source, expect_magic, nonzero_axes, max_bytes)), True


def read_idx(path: str | Path, *, max_bytes: int = MAX_DATA_BYTES) -> np.ndarray:
    """Any IDX file, plain or gzip, as a native-byte-order array of its dtype and dimensions."""
    return _load(path, max_bytes=max_bytes)[0]


def read_idx_labels(path: str | Path) -> np.ndarray:
    """An idx1-ubyte label file (magic 2049) as uint8 ``(N,)``."""
    return _load(path, expect_magic=LABELS_MAGIC)[0]


def read_idx_images(path: str | Path) -> np.ndarray:
    """An idx3-ubyte image file (magic 2051) as uint8 ``(N, rows, cols)``; rows and cols must be non-zero."""
    return _load(path, expect_magic=IMAGES_MAGIC, nonzero_axes=(1, 2))[0]


def read_idx_pair(
    images_path: str | Path, labels_path: str | Path, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, rows, cols)`` and labels ``(N,)``, both uint8, checked to agree in count and (if given)
    every label ``< num_classes``."""
    if num_classes is not None and not 1 <= num_classes <= 256:
        raise ValueError(f"num_classes must be in 1..256 for uint8 labels, got {num_classes}")
    labels, labels_gzipped = _load(labels_path, expect_magic=LABELS_MAGIC)
    images, images_gzipped = _load(images_path, expect_magic=IMAGES_MAGIC, nonzero_axes=(1, 2))
    if len(images) != len(labels):
        raise IdxFormatError(
            f"{len(images)} images (count at byte offset {MAGIC_SIZE}) but {labels_path} holds {len(labels)} labels",
            path=images_path,
            offset=MAGIC_SIZE,
            decompressed=images_gzipped,
        )
    if num_classes is not None and len(labels):
        bad = np.flatnonzero(labels >= num_classes)
        if bad.size:
            index = int(bad[0])
            raise IdxFormatError(
                f"label {int(labels[index])} of sample {index} is not below num_classes={num_classes} "
                f"({bad.size} bad labels in all; images in {images_path})",
                path=labels_path,
                offset=LABELS_HEADER_SIZE + index,
                decompressed=labels_gzipped,
            )
    return images, labels


def _encode_parts(array: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The IDX header and the big-endian array to write after it."""
    array = np.asarray(array)
    code = _CODE_BY_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(f"IDX has no dtype code for {array.dtype}; use uint8, int8, int16, int32, float32 or float64")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got shape {array.shape}")
    if any(dim > 0xFFFFFFFF for dim in array.shape):
        raise ValueError(f"shape {array.shape} does not fit the 32-bit dimension fields")
    header = bytes((0, 0, code, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    return header, array.astype(DTYPE_CODES[code], copy=False)


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes (header + big-endian row-major data) of a uint8/int8/int16/int32/float32/float64 array."""
    header, data = _encode_parts(array)
    return header + data.tobytes()


def write_idx(path: str | Path, array: np.ndarray, gzip: bool = False) -> None:
    """Write ``array`` as an IDX file, gzip-compressed if asked (no name or timestamp in the gzip header,
    so the bytes are reproducible)."""
    header, data = _encode_parts(array)
    with open(path, "wb") as raw:
        if not gzip:
            raw.write(header)
            raw.write(data.tobytes())
            return
        with GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0) as stream:
            stream.write(header)
            stream.write(data.tobytes())
