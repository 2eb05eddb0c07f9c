"""A restricted unpickler for data pickles that hold only plain containers and numeric numpy arrays.

CIFAR ships as Python pickles. ``pickle.load`` on a downloaded file runs whatever callable the file names,
so this module resolves only the handful of globals a numpy array needs and rejects every other one
before it can be called. After loading, the result is walked and anything that is not a plain container,
a scalar, bytes/str, or a numeric numpy array is rejected too.
"""

from __future__ import annotations

import codecs

# The codecs pickletools decodes opcode arguments with, imported now rather than while a pickle is scanned (the
# fuzz contract: loading a pickle imports nothing).
import encodings.ascii  # noqa: F401, E402
import encodings.latin_1  # noqa: F401, E402
import encodings.raw_unicode_escape  # noqa: F401, E402
import encodings.utf_8  # noqa: F401, E402
import io
import pickle
import pickletools
import struct
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from tasks.formats.errors import FormatError, UnsafePickleError
from tasks.formats.huge_pages import HugePageReader

PICKLE_PROTO_OPCODE = 0x80
SUPPORTED_PROTOCOLS = range(2, 6)
NUMERIC_DTYPE_KINDS = frozenset("biuf")
PLAIN_SCALAR_TYPES = frozenset({bytes, str, int, float, bool, type(None)})

# Exceptions the pickle machinery (and numpy's __setstate__/_reconstruct) raise on malformed bytes.
_MALFORMED_PICKLE_ERRORS = (
    EOFError,
    pickle.UnpicklingError,
    struct.error,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    AttributeError,
    OverflowError,
)


def _numpy_private(module_suffix: str, name: str) -> Callable[..., Any]:
    """Resolve ``numpy._core.<suffix>.<name>`` (numpy 2) or ``numpy.core.<suffix>.<name>`` (numpy 1)."""
    try:
        module = __import__(f"numpy._core.{module_suffix}", fromlist=[name])
    except ImportError:  # numpy < 2 has no numpy._core
        module = __import__(f"numpy.core.{module_suffix}", fromlist=[name])
    return getattr(module, name)


# Spellings of latin-1 a pickle's ``_codecs.encode`` call may name (Python 3's protocol 2 writes 'latin1').
LATIN1_NAMES = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "iso8859_1", "l1"})


class _Latin1Encode:
    """``_codecs.encode(text, 'latin1')``, the call Python 3's protocol-2 pickles make to write bytes, and no other.

    The real ``codecs.encode`` looks up whatever codec the pickle names: an unknown name raises LookupError and a
    known one imports its ``encodings`` module, both outside the allow-list (found by bench/fuzz). ``find_class``
    makes one per unpickler, so the refusal names the file; ``__slots__`` leaves BUILD no ``__dict__`` to fill.
    """

    __slots__ = ("_where",)

    def __init__(self, where: str | None) -> None:
        self._where = where

    def __call__(self, text: str, encoding: str, errors: str = "strict") -> bytes:
        if not isinstance(encoding, str) or encoding.lower() not in LATIN1_NAMES or errors != "strict":
            raise UnsafePickleError(
                f"pickle asks for _codecs.encode with codec {encoding!r} (errors {errors!r}); only latin1 is allowed",
                path=self._where,
            )
        return codecs.encode(text, "latin1")


class _FromBuffer:
    """numpy's ``_frombuffer`` (protocol-5 arrays) behind an object with no attributes to set.

    Handed out as it is, the Python function would let a pickle's BUILD opcode rewrite its ``__defaults__`` or
    ``__dict__`` for the whole process (found by bench/fuzz); an instance with empty ``__slots__`` has neither.
    """

    __slots__ = ()
    _function = staticmethod(_numpy_private("numeric", "_frombuffer"))

    def __call__(self, *args: Any) -> np.ndarray:
        return self._function(*args)


def _build_allow_list() -> dict[tuple[str, str], Any]:
    reconstruct = _numpy_private("multiarray", "_reconstruct")  # a C function: nothing on it can be set
    frombuffer = _FromBuffer()
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writes bytes in protocol 2 as _codecs.encode(str, 'latin1'); find_class instantiates this.
        ("_codecs", "encode"): _Latin1Encode,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return allowed


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = _build_allow_list()


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` returns only the allow-listed numpy/codecs callables."""

    def __init__(self, file: IO[bytes], *, path_for_errors: str | None) -> None:
        super().__init__(file, encoding="bytes")
        self._path_for_errors = path_for_errors

    def find_class(self, module: str, name: str) -> Any:
        try:
            found = ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"pickle asks for global {module}.{name}, which is not on the allow-list "
                f"(only numpy arrays and plain containers are accepted); refusing to load it",
                path=self._path_for_errors,
            ) from None
        return _Latin1Encode(self._path_for_errors) if found is _Latin1Encode else found


def load_restricted(fileobj_or_path: str | Path | IO[bytes], *, path_for_errors: str | Path | None = None) -> Any:
    """Load a data pickle without running arbitrary code.

    Accepts a path or a binary file object. ``path_for_errors`` names the source in error messages
    (defaults to the path, or the file object's ``name``). Raises UnsafePickleError for any global
    outside the allow-list or a disallowed object in the result, and FormatError for bytes that are
    not a (complete) pickle.
    """
    if isinstance(fileobj_or_path, (str, Path)):
        where = str(path_for_errors if path_for_errors is not None else fileobj_or_path)
        with open(fileobj_or_path, "rb") as fileobj:
            return _load_from_stream(fileobj, where)
    where = str(path_for_errors) if path_for_errors is not None else str(getattr(fileobj_or_path, "name", "<stream>"))
    return _load_from_stream(fileobj_or_path, where)


def _load_from_stream(fileobj: IO[bytes], where: str) -> Any:
    stream = _check_leading_bytes(fileobj, where)
    start = stream.tell()
    _check_memo_indices(stream, where)
    stream.seek(start)
    try:
        result = RestrictedUnpickler(HugePageReader(stream), path_for_errors=where).load()
    except FormatError:
        raise
    except _MALFORMED_PICKLE_ERRORS as exc:
        raise FormatError(f"truncated or malformed pickle ({type(exc).__name__}: {exc})", path=where) from exc
    except MemoryError as exc:
        # The unpickler allocates what a length field (BINBYTES8, FRAME...) declares before reading it: a
        # 14-byte file can ask for a terabyte. That is bad input, to be named like any other.
        raise FormatError("malformed pickle: a length field asks for more memory than can be allocated",
                          path=where) from exc
    except (SystemError, RuntimeError) as exc:
        # numpy's own reaction to a dtype state (BUILD) with forged flags: "get_clear_loop not set for the DType
        # 'uint8'" or "error return without exception set" (found by bench/fuzz). Bad input, named as such.
        raise FormatError(f"malformed pickle: numpy rejected an array or dtype state ({type(exc).__name__}: "
                          f"{exc})", path=where) from exc
    # Every array a real pickle holds was filled from its bytes; a bigger one is an uninitialised
    # ``ndarray(shape)`` from a lying shape (30 bytes asked for 16 GB; found by bench/fuzz).
    check_plain_data(result, where, max_array_bytes=stream.tell() - start)
    return result


# Each opcode's byte -> (name, argument size): a byte count, or one of pickletools' markers for an argument up to a
# newline or taken from a 1-, 4- (signed or not) or 8-byte length before it; 0 for no argument.
_OPCODE_ARGUMENTS = {ord(op.code): (op.name, 0 if op.arg is None else op.arg.n) for op in pickletools.opcodes}
_LENGTH_PREFIXES = {pickletools.TAKEN_FROM_ARGUMENT1: ("<B", 1), pickletools.TAKEN_FROM_ARGUMENT4: ("<i", 4),
                    pickletools.TAKEN_FROM_ARGUMENT4U: ("<I", 4), pickletools.TAKEN_FROM_ARGUMENT8U: ("<Q", 8)}
_TWO_LINES = frozenset({"GLOBAL", "INST"})  # module and name, each up to a newline


def _check_memo_indices(stream: IO[bytes], where: str) -> None:
    """Refuse a memo index no real pickle has: CPython's unpickler grows its memo table to twice an index
    before storing at it, so a 5-byte LONG_BINPUT of 4e9 zero-fills gigabytes (found by bench/fuzz). Pickles
    number their memo entries from 0 up, one per PUT or MEMOIZE, so an index is below the opcodes read so far.

    A walk over the opcodes that only skips their arguments (pickletools.genops would build every string and
    bytes object: slower than the load itself). It stops quietly at the end, at STOP, at an unknown opcode or an
    argument running past the end: the unpickler itself names those."""
    data = stream.read()
    position, count = 0, 0
    while position < len(data):
        offset = position
        name, size = _OPCODE_ARGUMENTS.get(data[position], ("", None))
        position += 1
        if size is None or name == "STOP":
            return
        index = None
        if size == pickletools.UP_TO_NEWLINE:
            for _ in range(2 if name in _TWO_LINES else 1):
                end = data.find(b"\n", position)
                if end < 0:
                    return
                line, position = data[position:end], end + 1
            if name == "PUT":
                if not line.strip().isdigit():
                    return
                index = int(line)
        elif size in _LENGTH_PREFIXES:
            layout, width = _LENGTH_PREFIXES[size]
            if position + width > len(data):
                return
            (length,) = struct.unpack_from(layout, data, position)
            if length < 0:
                return
            position += width + length
        else:
            if name in ("BINPUT", "LONG_BINPUT") and position + size <= len(data):
                index = int.from_bytes(data[position:position + size], "little")
            position += size
        if position > len(data):
            return
        if index is not None and index > count:
            raise FormatError(f"malformed pickle: memo index {index} at opcode {count} (no pickle has one so "
                              "high)", path=where, offset=offset)
        count += 1


def _check_leading_bytes(fileobj: IO[bytes], where: str) -> IO[bytes]:
    """Reject files that do not start with PROTO (0x80) and a protocol 2..5; return a stream at the start."""
    start = fileobj.tell() if fileobj.seekable() else None
    head = fileobj.read(2)
    if len(head) < 2 or head[0] != PICKLE_PROTO_OPCODE or head[1] not in SUPPORTED_PROTOCOLS:
        raise FormatError(
            f"does not look like a pickle: unexpected leading bytes {head.hex(' ') or '(empty file)'} "
            f"(expected 80 02..80 05, the PROTO opcode and a protocol 2-5)",
            path=where,
            offset=0,
        )
    if start is not None:
        fileobj.seek(start)
        return fileobj
    return io.BytesIO(head + fileobj.read())


def check_plain_data(value: Any, where: str, *, max_array_bytes: int | None = None) -> None:
    """Walk a loaded object and reject anything but plain containers, scalars and numeric arrays.

    ``max_array_bytes`` (the pickle's length) also rejects any array larger than the bytes it could come from.
    """
    stack: list[tuple[Any, str]] = [(value, "<root>")]
    seen: set[int] = set()
    while stack:
        item, trail = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        kind = type(item)
        if kind is dict:
            for key, child in item.items():
                stack.append((key, f"{trail} key"))
                stack.append((child, f"{trail}[{key!r}]"))
        elif kind is list or kind is tuple:
            if set(map(type, item)) <= PLAIN_SCALAR_TYPES:
                continue  # the common case (labels, filenames): one C-level pass, no per-item trail
            stack.extend((child, f"{trail}[{i}]") for i, child in enumerate(item))
        elif kind is np.ndarray:
            _check_numeric_array(item, trail, where)
            if max_array_bytes is not None and item.nbytes > max_array_bytes:
                raise UnsafePickleError(
                    f"numpy array at {trail} of shape {item.shape} holds {item.nbytes} bytes, more than the "
                    f"{max_array_bytes}-byte pickle: its data cannot have come from the file",
                    path=where,
                )
        elif kind not in PLAIN_SCALAR_TYPES:
            raise UnsafePickleError(f"object of type {kind.__name__} at {trail} is not allowed", path=where)


def _check_numeric_array(array: np.ndarray, trail: str, where: str) -> None:
    if array.dtype.kind not in NUMERIC_DTYPE_KINDS or array.dtype.fields is not None:
        raise UnsafePickleError(
            f"numpy array at {trail} has dtype {array.dtype} (object/structured/non-numeric arrays are not allowed)",
            path=where,
        )
    canonical = np.dtype(array.dtype.str)
    if array.dtype.flags != canonical.flags:  # a BUILD state can set any flag byte on a dtype
        forged = array.dtype.flags
        # Repair it before the array is freed: numpy cannot deallocate an array whose uint8 dtype claims to hold
        # object references, and would raise RuntimeError from wherever the last reference goes (bench/fuzz).
        array.dtype.__setstate__(canonical.__reduce__()[2])
        raise UnsafePickleError(
            f"numpy array at {trail} has dtype {array.dtype} with flags {forged} (forged in the pickle)",
            path=where,
        )
