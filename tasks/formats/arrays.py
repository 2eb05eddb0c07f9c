"""Decoded examples on disk: append-only raw arrays plus a JSON header, read back memory-mapped.

The decode stage streams batch by batch, so the number of examples is not known when writing starts;
an ``.npy`` header would have to be rewritten. Instead each column is a raw little-endian file and
``arrays.json`` records dtype and shape once the writer closes. Readers get ``np.memmap`` views, so a
60,000-image split costs no RAM until touched.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tasks.formats.errors import FormatError

HEADER_NAME = "arrays.json"  # each column's dtype and shape, and the row count, written when the writer closes
COLUMN_SUFFIX = ".bin"  # ``<column>.bin``: one column's raw little-endian rows


def column_file(directory: Path, name: str) -> Path:
    """The file holding column ``name`` of the arrays in ``directory``."""
    return Path(directory) / f"{name}{COLUMN_SUFFIX}"


class ArrayWriter:
    """Append rows to named columns; every ``append`` must give every column the same row count."""

    def __init__(self, directory: Path, columns: dict[str, tuple[str, tuple[int, ...]]]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.columns = {name: (np.dtype(dtype).newbyteorder("<"), tuple(shape)) for name, (dtype, shape)
                        in columns.items()}
        self.rows = 0
        self._handles: dict[str, BinaryIO] = {
            name: open(column_file(self.directory, name), "wb") for name in self.columns  # noqa: SIM115
        }

    def append(self, **batch: np.ndarray | Sequence) -> None:
        if set(batch) != set(self.columns):
            raise ValueError(f"append needs columns {sorted(self.columns)}, got {sorted(batch)}")
        counts = set()
        for name, values in batch.items():
            dtype, shape = self.columns[name]
            array = np.asarray(values, dtype=dtype)
            if array.shape[1:] != shape:
                raise ValueError(f"column {name!r}: rows of shape {array.shape[1:]}, expected {shape}")
            counts.add(array.shape[0])
            self._handles[name].write(np.ascontiguousarray(array).tobytes())
        if len(counts) != 1:
            raise ValueError(f"columns of one append differ in length: {counts}")
        self.rows += counts.pop()

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        header = {
            "rows": self.rows,
            "columns": {name: {"dtype": dtype.str, "shape": list(shape)}
                        for name, (dtype, shape) in self.columns.items()},
        }
        (self.directory / HEADER_NAME).write_text(json.dumps(header, indent=2, sort_keys=True))

    def abort(self) -> None:
        for handle in self._handles.values():
            handle.close()

    def __enter__(self) -> ArrayWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def open_arrays(directory: Path) -> dict[str, np.ndarray]:
    """Memory-mapped, read-only columns written by ``ArrayWriter``."""
    directory = Path(directory)
    header_path = directory / HEADER_NAME
    try:
        header = json.loads(header_path.read_text())
    except (OSError, ValueError) as error:
        raise FormatError(f"unreadable array header ({error})", path=header_path) from error
    rows = int(header["rows"])
    columns = {}
    for name, spec in header["columns"].items():
        path = column_file(directory, name)
        shape = (rows, *spec["shape"])
        dtype = np.dtype(spec["dtype"])
        expected = int(np.prod(shape)) * dtype.itemsize
        if path.stat().st_size != expected:
            raise FormatError(f"holds {path.stat().st_size} bytes, header says {expected}", path=path)
        columns[name] = (np.memmap(path, dtype=dtype, mode="r", shape=shape) if rows
                         else np.zeros(shape, dtype=dtype))
    return columns
