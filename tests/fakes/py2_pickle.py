"""Test support: pickles laid out as Python 2's ``cPickle.dump(obj, f, 2)`` wrote them.

Writes real-format fake data for tests and bench; not product code (product code only reads pickles,
through the restricted unpickler in :mod:`tasks.formats.safe_pickle`).

The official CIFAR python batches are such pickles: every byte string (keys, file names, the 30 MB pixel
string) is a ``SHORT_BINSTRING``/``BINSTRING`` and numpy's helpers are named ``numpy.core.multiarray``.
Python 3's own protocol 2 writes bytes as ``_codecs.encode(str, 'latin1')`` calls instead, which the
unpickler reads along a different path; test archives and benchmarks written with this module exercise
the path the real files take. Writing only: reading is always the restricted unpickler.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import Any

# numpy 2 moved its private modules; Python 2 era files name the old ones.
PY2_MODULE_NAMES = {"numpy._core.multiarray": "numpy.core.multiarray", "numpy._core.numeric": "numpy.core.numeric"}


class Python2Pickler(pickle._Pickler):
    """Protocol 2 with Python 2's byte strings: bytes, and text that fits latin-1, become BINSTRINGs."""

    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file: io.BufferedIOBase) -> None:
        super().__init__(file, protocol=2)
        self._memo_origin = object()
        self.memo[id(self._memo_origin)] = (0, self._memo_origin)  # cPickle's memo indices start at 1

    def save_py2_string(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_text(self, obj: str) -> None:
        try:
            encoded = obj.encode("latin-1")  # a Python 2 ``str``
        except UnicodeEncodeError:
            self.save_str(obj)  # a Python 2 ``unicode``: BINUNICODE, as Python 3 writes it
            return
        self.save_py2_string(encoded)
        self.memo[id(obj)] = self.memo.pop(id(encoded))  # memoize the text object, not the temporary bytes

    def save_global(self, obj: Any, name: str | None = None) -> None:
        qualified = name or obj.__qualname__
        module = PY2_MODULE_NAMES.get(obj.__module__, obj.__module__)
        self.write(pickle.GLOBAL + f"{module}\n{qualified}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_text


def dumps_python2(obj: Any) -> bytes:
    buffer = io.BytesIO()
    Python2Pickler(buffer).dump(obj)
    return buffer.getvalue()
