"""TFRecord files and ``tf.train.Example`` protos, written and read without TensorFlow.

A TFRecord is ``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``.
An Example is a tiny protobuf (``Features`` = map<string, Feature>); we encode it by hand, which is
several times faster than building ``tf.train.Example`` objects and keeps TensorFlow out of the writer
process. The CRC comes from ``google-crc32c`` (hardware CRC32C; pure Python would be ~1000x slower).
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, overload

import google_crc32c
import numpy as np

from tasks.formats.errors import FormatError

FeatureValue = bytes | int | Sequence[int] | Sequence[bytes]
_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    return _mask_crc(google_crc32c.value(data))


@overload
def _mask_crc(crc: int) -> int: ...
@overload
def _mask_crc(crc: np.ndarray) -> np.ndarray: ...
def _mask_crc(crc: int | np.ndarray) -> int | np.ndarray:
    """TFRecord's CRC masking, for one int or a uint32 array (whose shifts and sum wrap at 32 bits)."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


# ---- protobuf wire format ------------------------------------------------------------------------------
def _slow_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 negatives are 10-byte two's complement varints
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = tuple(_slow_varint(i) for i in range(1 << 14))


def _varint(value: int) -> bytes:
    """Protobuf varint; a table lookup for the small values (lengths, labels) that dominate."""
    if 0 <= value < 16384:
        return _SMALL_VARINTS[value]
    return _slow_varint(value)


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    return _varint((field_number << 3) | 2) + _varint(len(payload)) + payload


def _bytes_list(values: Sequence[bytes]) -> bytes:
    return b"".join(_length_delimited(1, v) for v in values)


def _int64_list(values: Sequence[int]) -> bytes:
    packed = b"".join(_varint(int(v)) for v in values)
    return _length_delimited(1, packed) if values else b""


def encode_feature(value: FeatureValue) -> bytes:
    """One ``Feature`` message: bytes (or list of bytes) -> bytes_list, int(s) -> int64_list."""
    if isinstance(value, bytes | bytearray | memoryview):
        return _length_delimited(1, _bytes_list([bytes(value)]))
    if isinstance(value, int):
        return _length_delimited(3, _int64_list([value]))
    values: list[Any] = list(value)  # ints (numpy's too) or bytes
    if values and isinstance(values[0], bytes | bytearray):
        return _length_delimited(1, _bytes_list([bytes(v) for v in values]))
    return _length_delimited(3, _int64_list([int(v) for v in values]))


@functools.lru_cache(maxsize=256)
def _bytes_entry_prefix(name: str, length: int) -> bytes:
    """Everything of a one-value bytes map entry before the value itself (depends only on its length)."""
    marker = b"\0" * length
    return _map_entry_generic(name, marker)[:-length] if length else _map_entry_generic(name, b"")


@functools.lru_cache(maxsize=1 << 16)
def _int_entry(name: str, values: tuple[int, ...]) -> bytes:
    return _map_entry_generic(name, list(values))


def _map_entry(name: str, value: FeatureValue) -> bytes:
    if isinstance(value, bytes):
        return _bytes_entry_prefix(name, len(value)) + value
    if isinstance(value, int):
        return _int_entry(name, (value,))
    if isinstance(value, list | tuple) and all(isinstance(v, int) for v in value):
        return _int_entry(name, tuple(value))
    return _map_entry_generic(name, value)


def _map_entry_generic(name: str, value: FeatureValue) -> bytes:
    entry = _length_delimited(1, name.encode()) + _length_delimited(2, encode_feature(value))
    return _length_delimited(1, entry)


def encode_example(features: Mapping[str, FeatureValue]) -> bytes:
    """Serialized ``tf.train.Example`` with map entries in sorted key order (deterministic bytes)."""
    return _length_delimited(1, b"".join(_map_entry(name, features[name]) for name in sorted(features)))


class ExampleEncoder:
    """``encode_example`` for many records sharing some feature values (format, height, width...).

    The constant map entries are encoded once; per record only the varying ones are. Same bytes as
    ``encode_example`` on the merged dict.
    """

    def __init__(self, constant: Mapping[str, FeatureValue], varying: Sequence[str]) -> None:
        overlap = set(constant) & set(varying)
        if overlap:
            raise ValueError(f"features both constant and varying: {sorted(overlap)}")
        self._constant = {name: _map_entry(name, value) for name, value in constant.items()}
        self._order = sorted([*constant, *varying])

    def encode(self, varying: Mapping[str, FeatureValue]) -> bytes:
        constant = self._constant
        body = b"".join([constant[name] if name in constant else _map_entry(name, varying[name])
                         for name in self._order])
        return b"\x0a" + _varint(len(body)) + body


    def frame_batch(self, small: Mapping[str, EntryColumn | Sequence[FeatureValue]],
                    blobs: Mapping[str, np.ndarray]) -> np.ndarray:
        """TFRecord-framed bytes (a flat uint8 array) of N examples, built column-wise with numpy.

        ``small`` holds the per-row values of the cheap varying features (labels, keys), best as
        ``EntryColumn``s (``int_entry_column``, ``bytes_entry_column``: no Python work per row), or as plain
        per-row values. ``blobs`` holds bytes features whose values all have one length, as (N, S) uint8
        arrays (raw pixels). Rows whose entries have the same lengths share a layout, so each such group is
        one array copy per column. Same bytes as ``TFRecordWriter.write(encode(...))`` row by row.
        """
        count = len(next(iter(blobs.values())))
        columns = {name: values if isinstance(values, EntryColumn) else entry_column(name, values)
                   for name, values in small.items()}
        names = list(columns)
        lengths = np.stack([columns[n].lengths for n in names], axis=1) if names else np.zeros((count, 0), int)
        if count and (lengths == lengths[0]).all():  # one layout: the usual case, no grouping needed
            return self._frame_layout(dict(zip(names, lengths[0].tolist(), strict=True)), None, columns,
                                      blobs).reshape(-1)
        layouts, layout_of_row = np.unique(lengths, axis=0, return_inverse=True)
        layout_of_row = layout_of_row.reshape(-1)
        by_row: list[bytes] = [b""] * count
        for layout, layout_lengths in enumerate(layouts.tolist()):
            rows = np.flatnonzero(layout_of_row == layout)
            matrix = self._frame_layout(dict(zip(names, layout_lengths, strict=True)), rows, columns, blobs)
            for position, row in enumerate(rows.tolist()):
                by_row[row] = matrix[position].tobytes()
        return np.frombuffer(b"".join(by_row), dtype=np.uint8)

    def _frame_layout(self, lengths: dict[str, int], rows: np.ndarray | None, columns: Mapping[str, EntryColumn],
                      blobs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Framed records (one per row of ``rows``, or of every row if None) sharing entry ``lengths``."""
        pieces: list[bytes | str] = []
        for name in self._order:
            if name in self._constant:
                pieces.append(self._constant[name])
            elif name in blobs:
                pieces.extend([_bytes_entry_prefix(name, blobs[name].shape[1]), name])
            else:
                pieces.append(name)
        width = {**lengths, **{name: array.shape[1] for name, array in blobs.items()}}
        body_length = sum(len(p) if isinstance(p, bytes) else width[p] for p in pieces)
        head = b"\x0a" + _varint(body_length)
        record_length = len(head) + body_length
        count = len(next(iter(blobs.values()))) if rows is None else len(rows)
        matrix = np.empty((count, 12 + record_length + 4), dtype=np.uint8)
        matrix[:, :12] = np.frombuffer(_record_header(record_length), dtype=np.uint8)
        position = 12
        for piece in [head, *pieces]:
            if isinstance(piece, bytes):
                matrix[:, position : position + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
                position += len(piece)
                continue
            source = blobs[piece] if piece in blobs else columns[piece].data
            values = source if rows is None else source[rows]
            matrix[:, position : position + width[piece]] = values[:, : width[piece]]
            position += width[piece]
        matrix[:, -4:] = masked_crc32c_rows(matrix[:, 12 : 12 + record_length]).view(np.uint8).reshape(count, 4)
        return matrix


@dataclass(frozen=True)
class EntryColumn:
    """The serialized ``Features`` map entries of one feature for N rows: row i is ``data[i, :lengths[i]]``."""

    data: np.ndarray  # (N, W) uint8
    lengths: np.ndarray  # (N,) int


def _column_from_entries(entries: Sequence[bytes], index: np.ndarray | None = None) -> EntryColumn:
    """An EntryColumn from distinct entries and each row's index into them (identity if None)."""
    table_lengths = np.fromiter(map(len, entries), dtype=np.int64, count=len(entries))
    table = np.zeros((len(entries), int(table_lengths.max(initial=0))), dtype=np.uint8)
    for position, entry in enumerate(entries):
        table[position, : len(entry)] = np.frombuffer(entry, dtype=np.uint8)
    if index is None:
        return EntryColumn(table, table_lengths)
    return EntryColumn(table[index], table_lengths[index])


def entry_column(name: str, values: Sequence[FeatureValue]) -> EntryColumn:
    """Entries of any feature, one Python encoding per row (the general, slower path)."""
    return _column_from_entries([_map_entry(name, value) for value in values])


def int_entry_column(name: str, values: np.ndarray) -> EntryColumn:
    """Entries of an int64_list feature from (N,) or (N, k) integers: one encoding per distinct row."""
    rows = np.asarray(values).reshape(len(values), -1)
    if rows.shape[1] == 1:  # 1-D unique is a plain sort, several times faster than unique rows
        distinct, inverse = np.unique(rows[:, 0], return_inverse=True)
        distinct = distinct[:, None]
    else:
        distinct, inverse = np.unique(rows, axis=0, return_inverse=True)
    entries = [_int_entry(name, tuple(row)) for row in distinct.tolist()]
    return _column_from_entries(entries, inverse.reshape(-1))


def bytes_entry_column(name: str, values: np.ndarray) -> EntryColumn:
    """Entries of a one-value bytes feature from a fixed-width ``S`` array (trailing NULs are padding, as in
    numpy's own ``tolist``): one prefix per distinct value length, the values copied column-wise."""
    width = values.dtype.itemsize
    raw = np.ascontiguousarray(values).view(np.uint8).reshape(len(values), width)
    nonzero = raw != 0
    value_lengths = np.where(nonzero.any(axis=1), width - np.argmax(nonzero[:, ::-1], axis=1), 0)
    distinct = np.unique(value_lengths).tolist()
    prefixes = {length: _bytes_entry_prefix(name, length) for length in distinct}
    data = np.zeros((len(values), max(map(len, prefixes.values()), default=0) + width), dtype=np.uint8)
    lengths = np.zeros(len(values), dtype=np.int64)
    for length, prefix in prefixes.items():
        rows = np.flatnonzero(value_lengths == length)
        data[rows, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
        data[rows, len(prefix) : len(prefix) + length] = raw[rows, :length]
        lengths[rows] = len(prefix) + length
    return EntryColumn(data, lengths)


def masked_crc32c_rows(rows: np.ndarray) -> np.ndarray:
    """``masked_crc32c`` of every row of a 2-D uint8 array, as little-endian uint32."""
    crcs = np.fromiter(map(google_crc32c.value, rows), dtype=np.uint32, count=len(rows))
    return _mask_crc(crcs).astype("<u4")


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated field")
            yield number, wire, buf[pos : pos + length]
            pos += length
        elif wire == 0:
            value, pos = _read_varint(buf, pos)
            yield number, wire, value
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _delimited(buf: bytes, message: str, used: frozenset[int]) -> Iterator[tuple[int, bytes]]:
    """``(number, payload)`` of the length-delimited fields of ``buf``.

    A varint where a used field must be a message or bytes is a ValueError: taken as bytes, ``bytes(v)`` of a
    10-byte varint would allocate up to 2**64 bytes, and as a message it is no ``bytes`` at all (found by
    bench/fuzz). Unknown varint fields are skipped, as protobuf does.
    """
    for number, _wire, payload in _fields(buf):
        if not isinstance(payload, int):  # wire type 2 (a varint, wire type 0, is the only int)
            yield number, payload
        elif number in used:
            raise ValueError(f"field {number} of a {message} is a varint, expected a length-delimited field")


_FEATURE_FIELDS = frozenset({1, 2, 3})
_ONE = frozenset({1})
_ENTRY_FIELDS = frozenset({1, 2})


def _decode_feature(buf: bytes) -> list[bytes] | list[int]:
    for number, payload in _delimited(buf, "Feature", _FEATURE_FIELDS):
        if number == 1:
            return [bytes(v) for n, v in _delimited(payload, "BytesList", _ONE) if n == 1]
        if number == 3:
            values: list[int] = []
            for n, _wire, v in _fields(payload):
                if n != 1:
                    continue
                if isinstance(v, int):  # wire type 0, a varint; else packed varints
                    values.append(v - (1 << 64) if v >= 1 << 63 else v)
                    continue
                pos = 0
                while pos < len(v):
                    item, pos = _read_varint(v, pos)
                    values.append(item - (1 << 64) if item >= 1 << 63 else item)
            return values
        if number == 2:
            raise ValueError("float_list features are not used by tfpipe")
    return []


def decode_example(data: bytes) -> dict[str, list[bytes] | list[int]]:
    """Parse a serialized Example into ``{name: [values]}`` (bytes and int64 lists only)."""
    features: dict[str, list[bytes] | list[int]] = {}
    for number, features_msg in _delimited(data, "Example", _ONE):
        if number != 1:
            continue
        for entry_number, entry in _delimited(features_msg, "Features", _ONE):
            if entry_number != 1:
                continue
            name, value = "", b""
            for n, v in _delimited(entry, "Features map entry", _ENTRY_FIELDS):
                if n == 1:
                    name = bytes(v).decode()
                elif n == 2:
                    value = v
            features[name] = _decode_feature(value)
    return features


# ---- record framing ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def _record_header(length: int) -> bytes:
    """``uint64 length | masked crc of it``: the same bytes for every record of one size."""
    header = struct.pack("<Q", length)
    return header + struct.pack("<I", masked_crc32c(header))


class TFRecordWriter:
    """Append records to one file; use as a context manager so it is closed on every path."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._handle: BinaryIO = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self.count = 0

    def write(self, record: bytes) -> None:
        self._handle.write(_record_header(len(record)) + record + struct.pack("<I", masked_crc32c(record)))
        self.count += 1

    def write_many(self, records: Sequence[bytes]) -> None:
        """Frame and write a batch of records in one system call."""
        pack, crc = struct.pack, masked_crc32c
        self._handle.write(b"".join([_record_header(len(r)) + r + pack("<I", crc(r)) for r in records]))
        self.count += len(records)

    def write_framed(self, framed: bytes | np.ndarray, count: int) -> None:
        """Write records already framed by ``ExampleEncoder.frame_batch``."""
        # An ndarray is a buffer (numpy's stub declares it one for Python 3.12+ only).
        self._handle.write(framed)  # type: ignore[arg-type]
        self.count += count

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_records(path: str | Path, *, verify: bool = True) -> Iterator[bytes]:
    """Yield each record's bytes; a truncated file or bad CRC raises FormatError with the offset."""
    path = Path(path)
    with open(path, "rb") as handle:
        file_size = os.fstat(handle.fileno()).st_size
        index = 0
        while True:
            offset = handle.tell()
            header = handle.read(12)
            if not header:
                return
            if len(header) < 12:
                raise FormatError("truncated record header", path=path, offset=offset, index=index)
            (length,) = struct.unpack_from("<Q", header)
            (length_crc,) = struct.unpack_from("<I", header, 8)
            if verify and masked_crc32c(header[:8]) != length_crc:
                raise FormatError("record length CRC mismatch", path=path, offset=offset, index=index)
            if length > file_size - offset - 16:  # checked before reading: a lying length must not be allocated
                raise FormatError(f"truncated record: length field {length} runs past the end of the file "
                                  f"({file_size} bytes)", path=path, offset=offset, index=index)
            data = handle.read(length)
            footer = handle.read(4)
            if len(data) < length or len(footer) < 4:
                raise FormatError("truncated record", path=path, offset=offset, index=index)
            if verify and masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                raise FormatError("record data CRC mismatch", path=path, offset=offset, index=index)
            yield data
            index += 1


def shard_names(dataset: str, split: str, num_shards: int) -> list[str]:
    """TFDS-style names: ``<dataset>-<split>.tfrecord-00000-of-00008``."""
    return [f"{dataset}-{split}.tfrecord-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]


def write_labels_txt(path: Path, class_names: Sequence[str]) -> None:
    path.write_text("".join(f"{i}:{name}\n" for i, name in enumerate(class_names)))


def read_labels_txt(path: Path) -> list[str]:
    names: list[str] = []
    for line_number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        index, sep, name = line.partition(":")
        if not sep or not index.isdigit() or int(index) != len(names):
            raise FormatError(f"line {line_number} is not '<index>:<name>' in order", path=path)
        names.append(name)
    return names
