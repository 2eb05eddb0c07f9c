"""A restricted unpickler for data pickles that hold only plain containers and numeric numpy arrays.

CIFAR ships as Python pickles. ``pickle.load`` on a downloaded file runs whatever callable the file names,
so this module resolves only the handful of globals a numpy array needs, as stand-ins that check every value
before numpy sees it, and rejects every other global before it can be called. Before loading, a walk over the
opcodes refuses what the unpickler would act on before any check could (memo indices, lengths and frames that
no real pickle has). After loading, the result is walked and anything that is not a plain container, a
scalar, bytes/str, or a numeric numpy array is rejected too.
"""

from __future__ import annotations

import codecs
import contextlib

# The codecs the unpickler and ``_codecs.encode`` use, imported now rather than while a pickle loads (the fuzz
# contract: loading a pickle imports nothing).
import encodings.ascii  # noqa: F401, E402
import encodings.latin_1  # noqa: F401, E402
import encodings.raw_unicode_escape  # noqa: F401, E402
import encodings.utf_8  # noqa: F401, E402
import io
import math
import mmap
import pickle
import pickletools
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from tasks.formats.errors import FormatError, UnsafePickleError
from tasks.formats.huge_pages import HugePageReader

PICKLE_PROTO_OPCODE = 0x80
SUPPORTED_PROTOCOLS = range(2, 6)
NUMERIC_DTYPE_KINDS = frozenset("biuf")
PLAIN_SCALAR_TYPES = frozenset({bytes, str, int, float, bool, type(None)})

# Exceptions the pickle machinery raises on malformed bytes (and numpy on a checked state it still refuses).
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
    BufferError,
)


# Spellings of latin-1 a pickle's ``_codecs.encode`` call may name (Python 3's protocol 2 writes 'latin1').
LATIN1_NAMES = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "iso8859_1", "l1"})


# What numpy writes for a numeric dtype's BUILD state: (version, byte order, subarray, names, fields, element
# size, alignment, flags); versions 3 and 4 differ only in how non-numeric dtypes are described.
_DTYPE_STATE_TAIL = (None, None, None, -1, -1, 0)
_BYTE_ORDERS = frozenset("<>|=")
_DTYPE_KIND_NAMES = {"O": "object", "U": "str", "S": "bytes", "a": "bytes", "V": "void (structured)",
                     "M": "datetime", "m": "timedelta", "c": "complex"}
MAX_ARRAY_DIMENSIONS = 64  # numpy 2's NPY_MAXDIMS
MAX_NESTING = 100  # containers above an array; data pickles nest a few levels


class _Refuses:
    """Base of what the allow-list hands the unpickler: no ``__dict__`` and a ``__setstate__`` that refuses, so
    a pickle's BUILD cannot set attributes on it (BUILD with a slot state would otherwise ``setattr`` them)."""

    __slots__ = ("_where",)

    def __init__(self, where: str | None) -> None:
        self._where = where

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError(f"pickle applies BUILD to {self}, which takes no state", path=self._where)

    def _refuse(self, message: str) -> UnsafePickleError:
        return UnsafePickleError(f"malformed numpy pickle: {message}", path=self._where)


class _Latin1Encode(_Refuses):
    """``_codecs.encode(text, 'latin1')``, the call Python 3's protocol-2 pickles make to write bytes, and no other.

    The real ``codecs.encode`` looks up whatever codec the pickle names: an unknown name raises LookupError and a
    known one imports its ``encodings`` module, both outside the allow-list (found by bench/fuzz).
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "_codecs.encode"

    def __call__(self, text: str, encoding: str, errors: str = "strict") -> bytes:
        if not isinstance(encoding, str) or encoding.lower() not in LATIN1_NAMES or errors != "strict":
            raise UnsafePickleError(
                f"pickle asks for _codecs.encode with codec {encoding!r} (errors {errors!r}); only latin1 is allowed",
                path=self._where,
            )
        return codecs.encode(text, "latin1")


class _EmptyBytes(_Refuses):
    """``bytes()``: how Python 3's protocol 2 writes ``b''`` (an empty array's data, an empty file name)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "bytes"

    def __call__(self, *args: Any) -> bytes:
        if args:
            raise self._refuse(f"bytes called with {len(args)} argument(s); pickles call it only for b''")
        return b""


class _NdarrayClass(_Refuses):
    """``numpy.ndarray`` as a pickle names it: only ever the first argument of ``_reconstruct``. Called directly
    it would make an uninitialised array of any shape (28 bytes asked for 16 GB; found probing the allow-list)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "numpy.ndarray"

    def __call__(self, *args: Any) -> None:
        raise self._refuse("it calls numpy.ndarray directly (numpy writes arrays through _reconstruct or "
                           "_frombuffer)")


class _Dtype(_Refuses):
    """A numeric dtype as numpy pickles it: ``dtype(typecode, False, True)``, then BUILD with its state.

    Nothing of numpy runs on the pickle's values: the state is checked against what numpy writes and the dtype
    is made from its canonical string. numpy's own ``dtype.__setstate__`` takes any flags and sizes, and a
    uint8 dtype whose flags claim it holds objects makes numpy decref its bytes as pointers when the array is
    freed (found by bench/fuzz: crashes and "deallocated bytearray object has exported buffers").
    """

    __slots__ = ("typecode", "byte_order", "built")

    def __init__(self, where: str | None, typecode: str = "", byte_order: str = "=") -> None:
        super().__init__(where)
        self.typecode, self.byte_order, self.built = typecode, byte_order, False

    def __repr__(self) -> str:
        return f"numpy.dtype({self.typecode!r})"

    def __call__(self, typecode: Any, align: Any = False, copy: Any = True) -> _Dtype:
        typecode = _text(typecode)  # Python 2 pickles, read with encoding="bytes", give b'u1'
        if not isinstance(typecode, str) or len(typecode) > 4 or typecode[:1] not in NUMERIC_DTYPE_KINDS \
                or not typecode[1:].isdigit():
            kind = _DTYPE_KIND_NAMES.get(typecode[:1], "unknown") if isinstance(typecode, str) else "unknown"
            raise UnsafePickleError(f"numpy array of dtype {kind} ({typecode!r}): only numeric arrays (bool, "
                                    "integers, floats) are allowed", path=self._where)
        # numpy writes False, True; older numpy and Python 2 wrote 0, 1
        if type(align) not in (bool, int) or align != 0 or type(copy) not in (bool, int) or copy != 1:
            raise self._refuse(f"dtype({typecode!r}, {align!r}, {copy!r}) is not how numpy writes a dtype")
        return _Dtype(self._where, typecode)

    def __setstate__(self, state: Any) -> None:
        if not self.typecode or self.built:
            raise self._refuse("BUILD applied to numpy.dtype itself or twice to one dtype")
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] in (3, 4)
                and _text(state[1]) in _BYTE_ORDERS and state[2:] == _DTYPE_STATE_TAIL):
            raise self._refuse(f"dtype {self.typecode!r} has the state {state!r}; numpy writes "
                               f"(3, byte order, {', '.join(map(repr, _DTYPE_STATE_TAIL))})")
        self.byte_order, self.built = _text(state[1]), True

    def resolve(self) -> np.dtype:
        try:
            dtype = np.dtype(self.typecode if self.byte_order in "|=" else self.byte_order + self.typecode)
        except TypeError:
            raise UnsafePickleError(f"numpy array of unknown dtype {self.typecode!r}", path=self._where) from None
        if dtype.kind not in NUMERIC_DTYPE_KINDS or dtype.str[1:] != self.typecode:
            raise UnsafePickleError(f"numpy array of dtype {self.typecode!r}: only numeric arrays are allowed",
                                    path=self._where)
        return dtype


def _text(value: Any) -> Any:
    """A short bytes value as text (latin-1), anything else as it is."""
    return value.decode("latin1") if type(value) is bytes and len(value) <= 8 else value


class _Array(_Refuses):
    """A numpy array being unpickled: made by ``_reconstruct`` and given its shape, dtype and bytes by BUILD, or
    made whole by ``_frombuffer``. ``load_restricted`` puts ``array`` in its place once the pickle is read."""

    __slots__ = ("array",)

    def __init__(self, where: str | None, array: np.ndarray | None = None) -> None:
        super().__init__(where)
        self.array = array

    def __repr__(self) -> str:
        return "a numpy array"

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            raise self._refuse("BUILD applied to an array that already has its data")
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise self._refuse(f"an array state of type {type(state).__name__} (numpy writes "
                               "(1, shape, dtype, is_fortran, bytes))")
        shape, dtype, is_fortran, data = state
        if not isinstance(data, bytes):
            raise self._refuse(f"array data of type {type(data).__name__}, not bytes")
        if type(is_fortran) is not bool:
            raise self._refuse(f"is_fortran {is_fortran!r} is not a bool")
        checked = _array_layout(self, shape, dtype, data)
        array = np.empty(0, np.uint8)
        # Every value checked: what numpy writes (its stub wants an np.bool is_fortran; numpy pickles a bool).
        array.__setstate__((1, shape, checked, is_fortran, data))  # type: ignore[arg-type]
        self.array = array


class _Reconstruct(_Refuses):
    """``numpy._core.multiarray._reconstruct(ndarray, (0,), b'b')``, the start of every protocol 2-4 array."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "numpy's _reconstruct"

    def __call__(self, cls: Any, shape: Any, typecode: Any) -> _Array:
        if type(cls) is not _NdarrayClass or shape != (0,) or typecode not in (b"b", "b"):
            raise self._refuse(f"_reconstruct({cls!r}, {shape!r}, {typecode!r}); numpy writes "
                               "_reconstruct(numpy.ndarray, (0,), b'b')")
        return _Array(self._where)


class _FromBuffer(_Refuses):
    """``numpy._core.numeric._frombuffer(buffer, dtype, shape, order)``, how protocol 5 writes an array in band.

    A bytearray buffer is copied: the pickle keeps a reference to it and could resize it (APPENDS) under a
    numpy array that shares its memory.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "numpy's _frombuffer"

    def __call__(self, buffer: Any, dtype: Any, shape: Any, order: Any) -> _Array:
        if type(buffer) not in (bytes, bytearray):
            raise self._refuse(f"_frombuffer of a {type(buffer).__name__}, not bytes or a bytearray")
        if order not in ("C", "F"):
            raise self._refuse(f"_frombuffer with order {order!r}")
        checked = _array_layout(self, shape, dtype, buffer)
        data = bytearray(buffer) if type(buffer) is bytearray else buffer
        return _Array(self._where, np.frombuffer(data, dtype=checked).reshape(shape, order=order))


def _array_layout(caller: _Refuses, shape: Any, dtype: Any, data: bytes | bytearray) -> np.dtype:
    """The dtype of an array of ``shape`` filled from ``data``, once shape, dtype and size agree."""
    if type(dtype) is not _Dtype or not dtype.typecode:
        raise caller._refuse(f"an array whose dtype is {dtype!r}")
    if not (type(shape) is tuple and len(shape) <= MAX_ARRAY_DIMENSIONS
            and all(type(n) is int and n >= 0 for n in shape)):
        raise caller._refuse(f"an array of shape {shape!r}")
    resolved = dtype.resolve()
    expected = resolved.itemsize * math.prod(shape)
    if len(data) != expected:
        raise caller._refuse(f"an array of shape {shape} and dtype {resolved} needs {expected} bytes, "
                             f"its data has {len(data)}")
    return resolved


# (module, name) -> what find_class hands out for it, made per unpickler so that errors name the file.
ALLOWED_GLOBALS: dict[tuple[str, str], type[_Refuses]] = {
    ("numpy", "ndarray"): _NdarrayClass,
    ("numpy", "dtype"): _Dtype,
    # Python 3 writes bytes in protocol 2 as _codecs.encode(str, 'latin1').
    ("_codecs", "encode"): _Latin1Encode,
    ("__builtin__", "bytes"): _EmptyBytes,
    ("builtins", "bytes"): _EmptyBytes,
    **{(f"{package}.multiarray", "_reconstruct"): _Reconstruct for package in ("numpy.core", "numpy._core")},
    **{(f"{package}.numeric", "_frombuffer"): _FromBuffer for package in ("numpy.core", "numpy._core")},
}


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` hands out only checked stand-ins for numpy's array and dtype makers and
    latin-1 ``_codecs.encode``; numpy's own code never sees a value from the pickle that was not checked."""

    def __init__(self, file: IO[bytes] | io.RawIOBase, *, path_for_errors: str | None) -> None:
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
        return found(self._path_for_errors)


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
            return _load_from_stream(fileobj, where, own_file=True)
    where = str(path_for_errors) if path_for_errors is not None else str(getattr(fileobj_or_path, "name", "<stream>"))
    return _load_from_stream(fileobj_or_path, where, own_file=False)


def _load_from_stream(fileobj: IO[bytes], where: str, *, own_file: bool) -> Any:
    stream = _check_leading_bytes(fileobj, where)
    start = stream.tell()
    with _bytes_to_walk(stream, mappable=own_file) as data:
        _check_opcode_arguments(data, where)
    stream.seek(start)
    try:
        loaded = RestrictedUnpickler(HugePageReader(stream), path_for_errors=where).load()
    except FormatError:
        raise
    except _MALFORMED_PICKLE_ERRORS as exc:
        raise FormatError(f"truncated or malformed pickle ({type(exc).__name__}: {exc})", path=where) from exc
    except MemoryError as exc:
        # The unpickler allocates what a length field (BINBYTES8, FRAME...) declares before reading it: a
        # 14-byte file can ask for a terabyte. That is bad input, to be named like any other.
        raise FormatError("malformed pickle: a length field asks for more memory than can be allocated",
                          path=where) from exc
    result = _with_arrays(loaded, where)
    # Every array was filled from the pickle's bytes (its size checked); an independent last word on that.
    check_plain_data(result, where, max_array_bytes=stream.tell() - start)
    return result


def _with_arrays(value: Any, where: str) -> Any:
    """``value`` with every unpickled `_Array` replaced by its numpy array: lists and dicts in place, tuples
    rebuilt when they hold one. Dict keys are left as they are (`check_plain_data` refuses an array there)."""
    done: dict[int, Any] = {}

    def visit(item: Any, depth: int) -> Any:
        kind = type(item)
        if kind is _Array:
            if item.array is None:
                raise UnsafePickleError("malformed numpy pickle: an array was never given its data (no BUILD)",
                                        path=where)
            return item.array
        if kind is not list and kind is not dict and kind is not tuple:
            return item
        if id(item) in done:
            return done[id(item)]
        if depth > MAX_NESTING:
            raise FormatError(f"malformed pickle: containers nested more than {MAX_NESTING} deep", path=where)
        done[id(item)] = item  # before the children: a list may hold itself
        if kind is list:
            if not set(map(type, item)) <= PLAIN_SCALAR_TYPES:
                for i, child in enumerate(item):
                    item[i] = visit(child, depth + 1)
        elif kind is dict:
            for key, child in item.items():
                item[key] = visit(child, depth + 1)  # same keys: no resize while iterating
        else:
            children = tuple(visit(child, depth + 1) for child in item)
            if any(new is not old for new, old in zip(children, item, strict=True)):
                done[id(item)] = children
        return done[id(item)]

    return visit(value, 0)


# Each opcode's byte -> (name, argument size): a byte count, or one of pickletools' markers for an argument up to a
# newline or taken from a 1-, 4- (signed or not) or 8-byte length before it; 0 for no argument.
_OPCODE_ARGUMENTS = {ord(op.code): (op.name, 0 if op.arg is None else op.arg.n) for op in pickletools.opcodes}
_LENGTH_PREFIXES = {pickletools.TAKEN_FROM_ARGUMENT1: ("<B", 1), pickletools.TAKEN_FROM_ARGUMENT4: ("<i", 4),
                    pickletools.TAKEN_FROM_ARGUMENT4U: ("<I", 4), pickletools.TAKEN_FROM_ARGUMENT8U: ("<Q", 8)}
_TWO_LINES = frozenset({"GLOBAL", "INST"})  # module and name, each up to a newline


@contextlib.contextmanager
def _bytes_to_walk(stream: IO[bytes], *, mappable: bool) -> Iterator[bytes | mmap.mmap]:
    """The pickle's bytes, from its first. A file this module opened (``mappable``; its pickle starts at byte
    0) is mapped read-only rather than read: the walk skips the megabytes of array data it does not need, and a map
    faults in only the pages it touches, where a 30 MB read would fault in all of them, 4 KiB at a time (the
    cost `HugePageReader` avoids for the load itself). A caller's stream is read: its ``fileno`` may be another
    file's (a ``GzipFile`` answers with the compressed file's)."""
    if not mappable:
        yield stream.read()
        return
    try:
        mapped = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # a file mmap refuses (an empty or special file): read it instead
        yield stream.read()
        return
    try:
        yield mapped
    finally:
        mapped.close()


def _check_opcode_arguments(data: bytes | mmap.mmap, where: str) -> None:
    """Refuse, before the unpickler runs, what no real pickle has and the unpickler would act on first:

    - a memo index above the opcodes read so far: CPython's unpickler grows its memo table to twice an index
      before storing at it, so a 5-byte LONG_BINPUT of 4e9 zero-fills gigabytes (found by bench/fuzz);
    - a length (BINBYTES8, BYTEARRAY8, FRAME...) past the end of the file: the unpickler allocates what it
      declares before reading, gigabytes for a few bytes (found by bench/fuzz as out-of-memory inputs);
    - a FRAME inside a frame, or an opcode running past the end of its frame. Python's own unpickler refuses
      both; CPython's C one reads on from the file instead and drops the rest of the frame, so it would run
      opcodes this walk never saw (a memo index of gigabytes hidden that way was found by bench/fuzz).

    A walk over the opcodes that only skips their arguments (pickletools.genops would build every string and
    bytes object: slower than the load itself). It stops quietly at STOP or an unknown opcode: the unpickler
    names those. ``data`` is the pickle, from its first byte (offsets in errors count from there)."""
    position, count, frame_end = 0, 0, -1
    while position < len(data):
        offset = position
        name, size = _OPCODE_ARGUMENTS.get(data[position], ("", None))
        position += 1
        if size is None or name == "STOP":
            return
        if name == "FRAME" and offset < frame_end:
            raise _truncated(where, name, offset, f"a new frame inside the frame that ends at offset {frame_end}")
        index = None
        if size == pickletools.UP_TO_NEWLINE:
            for _ in range(2 if name in _TWO_LINES else 1):
                end = data.find(b"\n", position)
                if end < 0:
                    raise _truncated(where, name, offset, "its line has no end")
                line, position = data[position:end], end + 1
            if name == "PUT":
                if not line.strip().isdigit():
                    _check_inside_frame(where, name, offset, position, frame_end)
                    return
                index = int(line)
        elif size in _LENGTH_PREFIXES:
            layout, width = _LENGTH_PREFIXES[size]
            if position + width > len(data):
                raise _truncated(where, name, offset, f"its {width}-byte length is cut off")
            (length,) = struct.unpack_from(layout, data, position)
            if length < 0:
                _check_inside_frame(where, name, offset, position + width, frame_end)
                return
            position += width + length
            if position > len(data):
                raise _truncated(where, name, offset, f"it declares {length} bytes, "
                                 f"{max(0, len(data) - offset - 1 - width)} remain")
        else:
            if position + size > len(data):
                raise _truncated(where, name, offset, f"its {size}-byte argument is cut off")
            if name in ("BINPUT", "LONG_BINPUT"):
                index = int.from_bytes(data[position:position + size], "little")
            elif name == "FRAME":
                frame = int.from_bytes(data[position:position + size], "little")
                if frame > len(data) - position - size:
                    raise _truncated(where, name, offset, f"it declares a {frame}-byte frame, "
                                     f"{len(data) - position - size} bytes remain")
                frame_end = position + size + frame
            position += size
        _check_inside_frame(where, name, offset, position, frame_end)
        if index is not None and index > count:
            raise FormatError(f"malformed pickle: memo index {index} at opcode {count} (no pickle has one so "
                              "high)", path=where, offset=offset)
        count += 1


def _check_inside_frame(where: str, opcode: str, offset: int, end: int, frame_end: int) -> None:
    """Refuse an opcode at ``offset`` whose bytes up to ``end`` cross the end of the frame it starts in.
    Checked before the walk stops early on an opcode it leaves to the unpickler, too: the C unpickler reads
    such an opcode's rest from after the frame, not what the walk read."""
    if offset < frame_end < end:
        raise _truncated(where, opcode, offset, f"it runs past the end of its frame at offset {frame_end}")


def _truncated(where: str, opcode: str, offset: int, detail: str) -> FormatError:
    return FormatError(f"truncated or malformed pickle: {opcode}: {detail}", path=where,
                       offset=offset)


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
            what = repr(item) if isinstance(item, _Refuses) else f"object of type {kind.__name__}"
            raise UnsafePickleError(f"{what} at {trail} is not allowed", path=where)


def _check_numeric_array(array: np.ndarray, trail: str, where: str) -> None:
    if array.dtype.kind not in NUMERIC_DTYPE_KINDS or array.dtype.fields is not None:
        raise UnsafePickleError(
            f"numpy array at {trail} has dtype {array.dtype} (object/structured/non-numeric arrays are not allowed)",
            path=where,
        )
