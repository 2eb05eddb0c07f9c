"""The decoded-examples layout every decode stage writes, and stable per-example hashing. No Luigi.

A decoded artifact holds ``labels.txt``, ``dataset_info.json`` and one array directory per source split
(``image`` uint8 HxWxC, ``label`` int32 of shape () or (num_heads,), ``key`` bytes naming the example in its
source, ``sha256`` the digest of the decoded pixels: the content key caches that outlive one artifact use).

Decoders whose sources vary in size (image folders, HWDB) also write ``original_size`` (``ORIGINAL_SIZE_COLUMN``):
int32 ``(height, width)`` of each image at its source's own resolution, upright, before any resize, pad or crop.
The others leave it out, so their arrays stay byte for byte what they were; ``load_original_sizes`` reads it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tasks.formats.arrays import ArrayWriter, column_file, open_arrays
from tasks.formats.errors import FormatError
from tasks.formats.files import LABELS_FILE
from tasks.formats.tfrecord import read_labels_txt, write_labels_txt

KEY_BYTES = 96
DIGEST_BYTES = 32
ORIGINAL_SIZE_COLUMN = "original_size"  # optional: int32 (height, width) of each image before it was resized
# retrain.py's convention: files that differ only after ``_nohash_`` (``photo_nohash_2.jpg``) are one group
# and always land in the same split.
NOHASH_MARKER = re.compile(r"_nohash_.*$")


def example_columns(image_shape: Sequence[int], num_heads: int, key_bytes: int = KEY_BYTES,
                    record_original_size: bool = False) -> dict[str, tuple[str, tuple[int, ...]]]:
    label_shape: tuple[int, ...] = () if num_heads == 1 else (num_heads,)
    columns: dict[str, tuple[str, tuple[int, ...]]] = {
        "image": ("uint8", tuple(image_shape)),
        "label": ("int32", label_shape),
        "key": (f"S{key_bytes}", ()),
        "sha256": (f"S{DIGEST_BYTES}", ()),
    }
    if record_original_size:
        columns[ORIGINAL_SIZE_COLUMN] = ("int32", (2,))
    return columns


def pixel_digests(images: np.ndarray) -> np.ndarray:
    """sha256 of each image's decoded uint8 pixels (row-major HWC bytes), as (N,) ``S32``."""
    rows = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    # hashlib reads each row as a buffer (numpy's stub declares ndarray one for Python 3.12+ only).
    digests = [hashlib.sha256(row).digest() for row in rows]  # type: ignore[arg-type]
    return np.asarray(digests, dtype=f"S{DIGEST_BYTES}")


class ExampleWriter:
    """Appends examples of one split; every example gets its content key (``sha256``) here, by construction.

    The columns of an ``ArrayWriter`` (``example_columns``) that takes no ``sha256`` from its caller. With
    ``record_original_size`` every ``append`` also takes ``original_size``: (N, 2) ``(height, width)``, each >= 1.
    """

    def __init__(self, directory: Path, image_shape: Sequence[int], num_heads: int, key_bytes: int = KEY_BYTES,
                 record_original_size: bool = False) -> None:
        self.arrays = ArrayWriter(directory, example_columns(image_shape, num_heads, key_bytes, record_original_size))
        self.key_bytes = key_bytes
        self.record_original_size = record_original_size

    @property
    def rows(self) -> int:
        return self.arrays.rows

    def append(self, *, image: np.ndarray, label: np.ndarray | Sequence, key: np.ndarray | Sequence,
               original_size: np.ndarray | Sequence | None = None) -> None:
        images = np.ascontiguousarray(image, dtype=np.uint8)
        columns: dict[str, np.ndarray | Sequence] = {"image": images, "label": label, "key": key,
                                                     "sha256": pixel_digests(images)}
        if self.record_original_size:
            columns[ORIGINAL_SIZE_COLUMN] = checked_original_sizes(original_size)
        elif original_size is not None:
            raise ValueError("original_size given to a writer opened without record_original_size")
        self.arrays.append(**columns)

    def close(self) -> None:
        self.arrays.close()

    def abort(self) -> None:
        self.arrays.abort()

    def __enter__(self) -> ExampleWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.arrays.__exit__(exc_type, *rest)


def checked_original_sizes(original_size: np.ndarray | Sequence | None) -> np.ndarray:
    """``original_size`` as (N, 2) int32 ``(height, width)`` rows; ValueError if missing, misshapen or not >= 1."""
    if original_size is None:
        raise ValueError("this writer records original_size: append(..., original_size=...) needs it")
    sizes = np.asarray(original_size, dtype=np.int64)
    if sizes.size == 0:  # an empty batch: no rows, whatever shape the empty sequence had
        sizes = sizes.reshape(0, 2)
    if sizes.ndim != 2 or sizes.shape[1] != 2:
        raise ValueError(f"original_size must be (N, 2) rows of (height, width), got shape {sizes.shape}")
    if sizes.size and not (1 <= sizes.min() and sizes.max() <= np.iinfo(np.int32).max):
        raise ValueError(f"original_size holds a side outside [1, 2**31 - 1]: {sizes.min()}..{sizes.max()}")
    return sizes.astype(np.int32)


def open_split_writer(decoded_dir: Path, split: str, image_shape: Sequence[int], num_heads: int,
                      key_bytes: int = KEY_BYTES, record_original_size: bool = False) -> ExampleWriter:
    return ExampleWriter(Path(decoded_dir) / split, image_shape, num_heads, key_bytes, record_original_size)


def encode_keys(keys: Sequence[str], width: int = KEY_BYTES) -> np.ndarray:
    encoded = [k.encode() for k in keys]
    too_long = [k for k in encoded if len(k) > width]
    if too_long:
        raise ValueError(f"example key longer than {width} bytes: {too_long[0]!r}")
    return np.asarray(encoded, dtype=f"S{width}")


def load_split(decoded_dir: Path, split: str) -> dict[str, np.ndarray]:
    """Every column of one split, memory-mapped; ``original_size`` only where the decoder recorded it."""
    return open_arrays(Path(decoded_dir) / split)


def load_original_sizes(decoded_dir: Path, split: str) -> np.ndarray | None:
    """(N, 2) int32 ``(height, width)`` of each example of ``split`` before it was resized, row for row with its
    images; None for a decoder that does not record them (its sources are all one size: CIFAR, MNIST, captcha)."""
    directory = Path(decoded_dir) / split
    sizes = open_arrays(directory).get(ORIGINAL_SIZE_COLUMN)
    if sizes is not None and (sizes.dtype != np.dtype("<i4") or sizes.shape[1:] != (2,)):
        raise FormatError(f"column {ORIGINAL_SIZE_COLUMN!r} is {sizes.dtype} of rows {sizes.shape[1:]}, "
                          "expected int32 rows of (height, width)", path=column_file(directory, ORIGINAL_SIZE_COLUMN))
    return sizes


def save_class_names(directory: Path, names: Sequence[str]) -> None:
    write_labels_txt(Path(directory) / LABELS_FILE, names)


def load_class_names(directory: Path) -> list[str]:
    return read_labels_txt(Path(directory) / LABELS_FILE)


def stable_unit(key: bytes | str, salt: str) -> float:
    """A number in [0, 1) fixed by the example key's group alone: adding data never moves existing examples,
    and keys that differ only after ``_nohash_`` get the same number."""
    digest = hashlib.sha256(salt.encode() + b"\0" + split_group(_as_bytes(key))).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_group(key: bytes) -> bytes:
    """The part of a key that decides its split: everything before a ``_nohash_`` marker in its file name."""
    text = key.decode("utf-8", "surrogateescape")
    head, slash, name = text.rpartition("/")
    return f"{head}{slash}{NOHASH_MARKER.sub('', name)}".encode("utf-8", "surrogateescape")


def stable_order(keys: Sequence[bytes | str] | np.ndarray, salt: str) -> np.ndarray:
    """A deterministic shuffle: indices sorted by ``key_hashes`` (a salted 64-bit hash of each key alone), so
    an example's place depends on its key and the salt, not on the input order or the other examples."""
    return np.argsort(key_hashes(keys, salt), kind="stable")


_FMIX_MULTIPLIERS = (np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))
_SHIFT_33 = np.uint64(33)


def _fmix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (every input bit reaches every output bit), in place on uint64."""
    for multiplier in _FMIX_MULTIPLIERS:
        values ^= values >> _SHIFT_33
        values *= multiplier
    values ^= values >> _SHIFT_33
    return values


def key_hashes(keys: Sequence[bytes | str] | np.ndarray, salt: str) -> np.ndarray:
    """A salted 64-bit hash of every key, vectorised over the keys (~10x faster than sha256 per key).

    Each key is read as little-endian 8-byte words, zero-padded, up to its last non-zero word:
    h = seed(salt); h = fmix64(h ^ word) for each of those words; then h = fmix64(h ^ word count).
    Trailing NUL bytes are padding, as in numpy's ``S`` arrays, so a key hashes the same in an array of any
    width and whatever the other keys are.
    """
    words = _key_words(_fixed_width(keys))
    word_counts = np.zeros(len(words), dtype=np.uint64)
    for index in range(words.shape[1]):
        word_counts[words[:, index] != 0] = index + 1
    hashes = np.full(len(words), int.from_bytes(hashlib.sha256(salt.encode()).digest()[:8], "little"), np.uint64)
    for index in range(int(word_counts.max(initial=0))):
        hashes = np.where(word_counts > index, _fmix64(hashes ^ words[:, index]), hashes)
    return _fmix64(hashes ^ word_counts)


def _key_words(fixed: np.ndarray) -> np.ndarray:
    """(N, ceil(width / 8)) little-endian uint64 words of a fixed-width ``S`` array, zero-padded."""
    count, width = len(fixed), fixed.dtype.itemsize
    if width % 8 == 0:
        return fixed.view("<u8").reshape(count, width // 8)
    raw = np.zeros((count, -(-width // 8) * 8), dtype=np.uint8)
    raw[:, :width] = fixed.view(np.uint8).reshape(count, width)
    return raw.view("<u8")


def _fixed_width(keys: Sequence[bytes | str] | np.ndarray) -> np.ndarray:
    if isinstance(keys, np.ndarray) and keys.dtype.kind == "S":
        return np.ascontiguousarray(keys).reshape(-1)
    encoded = [_as_bytes(key) for key in keys]
    return np.asarray(encoded, dtype=f"S{max(map(len, encoded), default=1) or 1}")


def _as_bytes(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else bytes(key)
