"""Fuzz targets: one ``fuzz_<name>(data: bytes) -> None`` per byte-level reader of tfpipe.

Each target hands the bytes to the real reader the way the pipeline does -- a file for the readers that take
a path (rewritten in place in one scratch directory, on tmpfs where there is one), a ``BytesIO`` for the
unpickler -- and judges the outcome:

* the reader's named error (its documented contract, ``EXPECTED`` below) is a correct refusal, and it must
  name the file (and the byte offset, for the codecs that promise one);
* a result must pass the target's invariants: round trips, a second reader that must agree, nothing written
  outside the extraction directory, nothing outside the unpickler's allow-list called or imported;
* anything else -- another exception type, or a broken invariant (``ContractViolation``) -- propagates, and
  atheris (``run.py``) or the tests (``tests/reliability/test_fuzz_targets.py``) count it as a crash.
"""

from __future__ import annotations

import atexit
import codecs
import gzip
import io
import math
import os
import shutil
import stat
import struct
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.fuzz import sentinel
from tasks.datasets.hwdb.gnt import HEADER, HEADER_SIZE, iter_gnt, iter_gnt_tags
from tasks.datasets.images.folder import load_image
from tasks.datasets.mnist.idx import GZIP_MAGIC, encode_idx, read_idx
from tasks.formats.errors import ArchiveError, FormatError, GntFormatError, IdxFormatError
from tasks.formats.safe_pickle import ALLOWED_GLOBALS, RestrictedUnpickler, load_restricted
from tasks.formats.tfrecord import decode_example, masked_crc32c, read_records
from tasks.sources.archive import safe_extract

Target = Callable[[bytes], None]

# Small blocks make the GNT reader refill and grow its buffer inside nearly every input.
GNT_BLOCK_SIZE = 256
PICKLE_NAME = "<fuzz>/batch.pkl"
# The caps are part of safe_extract's API; small ones keep a zip or bzip2 bomb from filling tmpfs.
ARCHIVE_MAX_BYTES = 16 << 20
ARCHIVE_MAX_MEMBERS = 2048
IMAGE_SIZE = 24
TFRECORD_MODES = 3  # first byte % 3: 0 raw file, 1 one validly framed record, 2 a forged length with a valid CRC
PLAIN_TYPES = (bytes, str, int, float, bool, type(None))
NUMERIC_KINDS = frozenset("biuf")
# The one codec allow-listed pickles use (_codecs.encode(text, 'latin1')) is imported now, so that the first
# pickle holding bytes does not count as "the unpickler imported a module".
codecs.lookup("latin1")

# What each reader is documented to raise on bad bytes; every other exception is a crash.
EXPECTED: dict[str, tuple[type[BaseException], ...]] = {
    "gnt": (GntFormatError,),
    "safe_pickle": (FormatError,),  # UnsafePickleError is a FormatError
    "idx": (IdxFormatError,),
    "archive": (ArchiveError,),
    "tfrecord": (FormatError,),  # read_records; decode_example's own contract is ValueError (see fuzz_tfrecord)
    "image": (FormatError,),
}


class ContractViolation(AssertionError):
    """A reader returned, or refused, in a way its contract does not allow."""


# ---- scratch files ---------------------------------------------------------------------------------------
SCRATCH_BASE_ENV = "TFPIPE_FUZZ_SCRATCH"


def tmpfs_dir() -> str | None:
    """/dev/shm when it is there and writable (scratch files rewritten per input stay in memory), else None."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


class Scratch:
    """One private directory (tmpfs when available) whose files the targets rewrite for every input."""

    def __init__(self, root: Path | None = None) -> None:
        self._root = root
        self.names: set[str] = set()  # entries the targets made in the root; anything else got there by escape

    @property
    def root(self) -> Path:
        if self._root is None:
            # run.py names a base it removes itself: a child killed by libFuzzer (OOM, crash) skips atexit
            base = os.environ.get(SCRATCH_BASE_ENV) or tmpfs_dir()
            self._root = Path(tempfile.mkdtemp(prefix="tfpipe-fuzz-", dir=base))
        return self._root

    def path(self, name: str) -> Path:
        self.names.add(name)
        return self.root / name

    def write(self, name: str, data: bytes) -> Path:
        path = self.path(name)
        path.write_bytes(data)
        return path

    def close(self) -> None:
        if self._root is not None:
            remove_tree(self._root)
            self._root = None


SCRATCH = Scratch()
atexit.register(SCRATCH.close)


def remove_tree(root: Path) -> None:
    """Delete ``root`` even when extraction left directories without write permission."""

    def unlock_and_retry(function: Callable[..., Any], path: str, _info: object) -> None:
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
        function(path)

    if root.is_symlink() or root.is_file():
        root.unlink()
    elif root.exists():
        shutil.rmtree(root, onerror=unlock_and_retry)


def check_names(error: BaseException, path: str | Path, *, offset: bool = False) -> None:
    """A named error must say which file (and, when ``offset``, where in it) -- the codecs' promise."""
    if str(path) not in str(error):
        raise ContractViolation(f"{type(error).__name__} does not name the file {path}: {error}") from error
    if offset and getattr(error, "offset", None) is None:
        raise ContractViolation(f"{type(error).__name__} gives no byte offset: {error}") from error


# ---- gnt -------------------------------------------------------------------------------------------------
def fuzz_gnt(data: bytes) -> None:
    """``iter_gnt`` over the bytes as a ``.gnt`` file, checked against ``iter_gnt_tags`` (which must agree)."""
    path = SCRATCH.write("input.gnt", data)
    samples, error = _gnt_streamed(path, data)
    tags, tags_error = _gnt_tags(path)
    if [tag for tag, _ in samples] != tags:
        raise ContractViolation(f"iter_gnt read tags {samples[:3]}..., iter_gnt_tags {tags[:3]}...")
    if error != tags_error:
        raise ContractViolation(f"iter_gnt stopped with {error}, iter_gnt_tags with {tags_error}")


def _gnt_streamed(path: Path, data: bytes) -> tuple[list[tuple[str, int]], tuple[int, int] | None]:
    """``(tag, offset)`` of every sample iter_gnt yields, and the ``(offset, index)`` of its error or None."""
    samples: list[tuple[str, int]] = []
    expected_offset = 0
    try:
        for sample in iter_gnt(path, block_size=GNT_BLOCK_SIZE):
            _check_gnt_sample(sample.tag, sample.bitmap, sample.offset, expected_offset, data)
            samples.append((sample.tag, sample.offset))
            expected_offset = sample.offset + HEADER_SIZE + sample.bitmap.size
    except GntFormatError as exc:
        check_names(exc, path, offset=True)
        return samples, (exc.offset, exc.index)
    if expected_offset != len(data):
        raise ContractViolation(f"iter_gnt ended cleanly at byte {expected_offset} of {len(data)}")
    return samples, None


def _check_gnt_sample(tag: str, bitmap: np.ndarray, offset: int, expected_offset: int, data: bytes) -> None:
    if offset != expected_offset:
        raise ContractViolation(f"sample at byte {offset}, the previous one ended at {expected_offset}")
    if len(tag) != 1:
        raise ContractViolation(f"tag {tag!r} at byte {offset} is not one character")
    height, width = bitmap.shape
    size, _tag, width_field, height_field = HEADER.unpack_from(data, offset)
    if (width, height) != (width_field, height_field) or size != HEADER_SIZE + width * height:
        raise ContractViolation(f"sample at byte {offset}: bitmap {width}x{height} disagrees with its header")
    start = offset + HEADER_SIZE
    if bitmap.tobytes() != data[start : start + width * height]:
        raise ContractViolation(f"sample at byte {offset}: bitmap bytes differ from the file's")


def _gnt_tags(path: Path) -> tuple[list[str], tuple[int, int] | None]:
    tags: list[str] = []
    try:
        for tag in iter_gnt_tags(path):
            tags.append(tag)
    except GntFormatError as exc:
        check_names(exc, path, offset=True)
        return tags, (exc.offset, exc.index)
    return tags, None


# ---- restricted unpickler ----------------------------------------------------------------------------------
def fuzz_safe_pickle(data: bytes) -> None:
    """``load_restricted`` on the bytes, as a stream and as a file (which it walks through a memory map): the
    same outcome both ways, and nothing outside the allow-list may run, be imported or be changed."""
    modules_before = len(sys.modules)
    state_before = _allow_list_state()
    from_stream, stream_error = _load_pickle(io.BytesIO(data))
    from_file, file_error = _load_pickle(SCRATCH.write("input.pkl", data))
    _check_no_escape(modules_before, state_before)
    if stream_error != file_error:
        raise ContractViolation(f"a stream and a file of the same bytes differ: {stream_error!r} / {file_error!r}")
    if not _same_data(from_stream, from_file):
        raise ContractViolation("a stream and a file of the same bytes loaded different values")
    check_plain(from_stream, max_array_bytes=len(data))


def _load_pickle(source: io.BytesIO | Path) -> tuple[object, str | None]:
    """(what ``load_restricted`` returned, None) or (None, the text of its named error, which names the file)."""
    try:
        return load_restricted(source, path_for_errors=PICKLE_NAME), None
    except FormatError as exc:
        check_names(exc, PICKLE_NAME)
        return None, f"{type(exc).__name__}: {exc}"


def _same_data(left: object, right: object, seen: set[tuple[int, int]] | None = None) -> bool:
    """Equal loaded values (arrays by dtype, shape and bytes; NaN equal to NaN); a container that holds itself
    is compared once."""
    seen = set() if seen is None else seen
    if type(left) is not type(right):
        return False
    if isinstance(left, np.ndarray):
        return left.dtype == right.dtype and left.shape == right.shape and left.tobytes() == right.tobytes()
    if isinstance(left, (list, tuple, dict)):
        if (id(left), id(right)) in seen:
            return True
        seen.add((id(left), id(right)))
        if isinstance(left, dict):
            return left.keys() == right.keys() and all(_same_data(left[k], right[k], seen) for k in left)
        return len(left) == len(right) and all(_same_data(a, b, seen) for a, b in zip(left, right, strict=True))
    if isinstance(left, float) and math.isnan(left):
        return math.isnan(right)
    return left == right


def _allow_list_state() -> tuple[object, ...]:
    """What a pickle could change on the allow-listed objects: which they are and their writable attributes."""
    state: list[object] = [RestrictedUnpickler.find_class, tuple(ALLOWED_GLOBALS.items())]
    for value in ALLOWED_GLOBALS.values():  # the stand-in classes find_class instantiates, and their bases
        state.extend(dict(vars(klass)) for klass in value.__mro__)
    return tuple(state)


def _check_no_escape(modules_before: int, state_before: tuple[object, ...]) -> None:
    if sentinel.CALLS:
        calls = list(sentinel.CALLS)
        sentinel.CALLS.clear()
        raise ContractViolation(f"the unpickler ran code outside its allow-list: {calls}")
    if len(sys.modules) != modules_before:
        raise ContractViolation(f"the unpickler imported modules: {len(sys.modules) - modules_before} new; "
                                f"last {list(sys.modules)[-3:]}")
    if _allow_list_state() != state_before:
        raise ContractViolation("the pickle changed an allow-listed object (its defaults or attributes)")


def check_plain(value: object, *, max_array_bytes: int) -> None:
    """An independent walk of a loaded result: plain containers, scalars and numeric arrays only, and no array
    larger than the pickle (its data could not have come from the bytes: a lying shape)."""
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        kind = type(item)
        if kind is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif kind is np.ndarray:
            if item.dtype.kind not in NUMERIC_KINDS or item.dtype.fields is not None:
                raise ContractViolation(f"load_restricted returned an array of dtype {item.dtype}")
            if item.nbytes > max_array_bytes:
                raise ContractViolation(f"load_restricted returned a {item.nbytes}-byte array from "
                                        f"{max_array_bytes} bytes")
        elif kind not in PLAIN_TYPES:
            raise ContractViolation(f"load_restricted returned an object of type {kind.__name__}")


# ---- idx -------------------------------------------------------------------------------------------------
IdxOutcome = tuple[str, object]  # ("array", (dtype, shape, bytes)) or ("error", decompressed offset)


def fuzz_idx(data: bytes) -> None:
    """``read_idx`` on the bytes; a plain file must also read the same when gzip-compressed (same error offset)."""
    path = SCRATCH.write("input.idx", data)
    outcome, array = _idx_outcome(path)
    if data.startswith(GZIP_MAGIC):
        return  # a (corrupt) gzip stream: the named error or an array is all there is to check
    if array is not None and encode_idx(array) != data:
        raise ContractViolation("read_idx accepted a file that encode_idx does not write back byte for byte")
    gz_path = SCRATCH.write("input.idx.gz", gzip.compress(data, compresslevel=1, mtime=0))
    gz_outcome, _ = _idx_outcome(gz_path)
    if gz_outcome != outcome:
        raise ContractViolation(f"plain file gave {_short(outcome)}, the same bytes gzipped {_short(gz_outcome)}")


def _idx_outcome(path: Path) -> tuple[IdxOutcome, np.ndarray | None]:
    try:
        array = read_idx(path)
    except IdxFormatError as exc:
        check_names(exc, path, offset=True)
        return ("error", exc.offset), None
    if not array.flags.writeable or array.dtype.byteorder not in "=|":
        raise ContractViolation(f"read_idx returned a read-only or non-native array ({array.dtype})")
    return ("array", (array.dtype.str, array.shape, array.tobytes())), array


def _short(outcome: IdxOutcome) -> str:
    kind, value = outcome
    return f"error at offset {value}" if kind == "error" else f"an array {value[:2]}"  # type: ignore[index]


# ---- archives --------------------------------------------------------------------------------------------
def fuzz_archive(data: bytes) -> None:
    """``safe_extract`` of the bytes (tar, compressed tar or zip by content); nothing may land outside ``dest``."""
    outer = SCRATCH.path("archive")
    jail = outer / "jail"
    jail.mkdir(parents=True, exist_ok=True)
    archive = jail / "input.archive"
    archive.write_bytes(data)
    dest = jail / "out"
    try:
        extracted: list[str] | None = safe_extract(archive, dest, max_total_bytes=ARCHIVE_MAX_BYTES,
                                                   max_members=ARCHIVE_MAX_MEMBERS)
    except ArchiveError as exc:
        check_names(exc, archive)
        extracted = None
    try:
        _check_nothing_escaped(outer, jail, extracted is not None)
        if extracted is not None:
            _check_extracted(dest, extracted)
    finally:
        remove_tree(dest)


def _check_nothing_escaped(outer: Path, jail: Path, succeeded: bool) -> None:
    """Only the archive (and ``out`` after success) may exist around the extraction: no staging, no escapes."""
    expected = {"input.archive", "out"} if succeeded else {"input.archive"}
    found = {entry.name for entry in os.scandir(jail)}
    if found != expected:
        raise ContractViolation(f"beside the archive: {sorted(found)} (expected {sorted(expected)})")
    for where, allowed in ((outer, {"jail"}), (SCRATCH.root, SCRATCH.names)):
        stray = {entry.name for entry in os.scandir(where)} - allowed
        if stray:
            raise ContractViolation(f"extraction wrote outside its directory: {sorted(stray)} in {where}")


def _check_extracted(dest: Path, extracted: list[str]) -> None:
    """Every extracted entry is a regular file or directory (no link, device, FIFO) and is listed if a file."""
    files = set()
    total = 0
    for directory, subdirectories, names in os.walk(dest):
        for name in subdirectories + names:
            full = os.path.join(directory, name)
            mode = os.lstat(full).st_mode
            if stat.S_ISREG(mode):
                files.add(Path(full).relative_to(dest).as_posix())
                total += os.lstat(full).st_size
            elif not stat.S_ISDIR(mode):
                raise ContractViolation(f"extracted {full} with file mode {oct(mode)}")
    if files != set(extracted) or len(extracted) != len(set(extracted)):
        raise ContractViolation(f"safe_extract listed {sorted(extracted)[:5]}, wrote {sorted(files)[:5]}")
    if total > ARCHIVE_MAX_BYTES:
        raise ContractViolation(f"extracted {total} bytes, over the cap of {ARCHIVE_MAX_BYTES}")


# ---- tfrecord ----------------------------------------------------------------------------------------------
def frame_record(payload: bytes) -> bytes:
    """One TFRecord frame: length, masked CRC of the length, the payload, masked CRC of the payload."""
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked_crc32c(length)) + payload + struct.pack("<I", masked_crc32c(payload))


def fuzz_tfrecord(data: bytes) -> None:
    """``read_records`` (CRC checks on and off) and ``decode_example`` of each record.

    The first byte picks how the rest reaches the reader: as the raw file; framed as one valid record
    (so the Example decoder sees fuzzed protos); or after a forged length field with a valid CRC (the lie a
    random byte flip cannot make, because the CRC catches it).
    """
    mode, body = (data[0] % TFRECORD_MODES, data[1:]) if data else (0, b"")
    if mode == 1:
        path = SCRATCH.write("input.tfrecord", frame_record(body))
        if _read_tfrecord(path, verify=True) != [body]:
            raise ContractViolation("read_records did not give back the one record framed")
        _decode_records([body])
        return
    if mode == 2:
        length = struct.pack("<Q", int.from_bytes(body[:8].ljust(8, b"\0"), "little"))
        body = length + struct.pack("<I", masked_crc32c(length)) + body[8:]
    path = SCRATCH.write("input.tfrecord", body)
    records = _read_tfrecord(path, verify=True)
    if records is not None and b"".join(map(frame_record, records)) != body:
        raise ContractViolation("read_records accepted bytes that are not exactly its records' frames")
    unverified = _read_tfrecord(path, verify=False)
    if records is not None and unverified != records:
        raise ContractViolation("read_records(verify=False) read other records than with verify=True")
    _decode_records(records or [])


def _read_tfrecord(path: Path, *, verify: bool) -> list[bytes] | None:
    try:
        return list(read_records(path, verify=verify))
    except FormatError as exc:
        check_names(exc, path, offset=True)
        return None


def _decode_records(records: list[bytes]) -> None:
    """decode_example documents no named error: its ValueError (truncated varint, float_list) is the refusal."""
    for record in records:
        try:
            features = decode_example(record)
        except ValueError:
            continue
        for name, values in features.items():
            if not isinstance(name, str) or not all(isinstance(v, bytes | int) for v in values):
                raise ContractViolation(f"decode_example gave {name!r}: {values[:3]!r}")


# ---- images ------------------------------------------------------------------------------------------------
def fuzz_image(data: bytes) -> None:
    """``load_image`` (decode_images' loader) on the bytes; options vary with the input length."""
    channels = 1 if len(data) & 1 else 3
    fit = "crop" if len(data) & 2 else "pad"
    path = SCRATCH.write("input.img", data)
    try:
        pixels = load_image(path, channels=channels, size=IMAGE_SIZE, fit=fit)
    except FormatError as exc:
        check_names(exc, path)
        return
    if pixels.dtype != np.uint8 or pixels.shape != (IMAGE_SIZE, IMAGE_SIZE, channels):
        raise ContractViolation(f"load_image gave {pixels.dtype} {pixels.shape} for {channels} channels")


TARGETS: dict[str, Target] = {
    "gnt": fuzz_gnt,
    "safe_pickle": fuzz_safe_pickle,
    "idx": fuzz_idx,
    "archive": fuzz_archive,
    "tfrecord": fuzz_tfrecord,
    "image": fuzz_image,
}
