"""The decoded-examples layout every decode stage writes, and stable per-example hashing. No Luigi.

A decoded artifact holds ``labels.txt``, ``dataset_info.json`` and one array directory per source split
(``image`` uint8 HxWxC, ``label`` int32 of shape () or (num_heads,), ``key`` bytes naming the example in its
source, ``sha256`` the digest of the decoded pixels: the content key caches that outlive one artifact use).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tasks.formats.arrays import ArrayWriter, open_arrays
from tasks.formats.files import LABELS_FILE
from tasks.formats.tfrecord import read_labels_txt, write_labels_txt

KEY_BYTES = 96
DIGEST_BYTES = 32
# retrain.py's convention: files that differ only after ``_nohash_`` (``photo_nohash_2.jpg``) are one group
# and always land in the same split.
NOHASH_MARKER = re.compile(r"_nohash_.*$")


def example_columns(image_shape: Sequence[int], num_heads: int,
                    key_bytes: int = KEY_BYTES) -> dict[str, tuple[str, tuple[int, ...]]]:
    label_shape: tuple[int, ...] = () if num_heads == 1 else (num_heads,)
    return {
        "image": ("uint8", tuple(image_shape)),
        "label": ("int32", label_shape),
        "key": (f"S{key_bytes}", ()),
        "sha256": (f"S{DIGEST_BYTES}", ()),
    }


def pixel_digests(images: np.ndarray) -> np.ndarray:
    """sha256 of each image's decoded uint8 pixels (row-major HWC bytes), as (N,) ``S32``."""
    rows = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    # hashlib reads each row as a buffer (numpy's stub declares ndarray one for Python 3.12+ only).
    digests = [hashlib.sha256(row).digest() for row in rows]  # type: ignore[arg-type]
    return np.asarray(digests, dtype=f"S{DIGEST_BYTES}")


class ExampleWriter:
    """Appends examples of one split; every example gets its content key (``sha256``) here, by construction.

    The columns of an ``ArrayWriter`` (``example_columns``) that takes no ``sha256`` from its caller.
    """

    def __init__(self, directory: Path, image_shape: Sequence[int], num_heads: int, key_bytes: int = KEY_BYTES) -> None:
        self.arrays = ArrayWriter(directory, example_columns(image_shape, num_heads, key_bytes))
        self.key_bytes = key_bytes

    @property
    def rows(self) -> int:
        return self.arrays.rows

    def append(self, *, image: np.ndarray, label: np.ndarray | Sequence, key: np.ndarray | Sequence) -> None:
        images = np.ascontiguousarray(image, dtype=np.uint8)
        self.arrays.append(image=images, label=label, key=key, sha256=pixel_digests(images))

    def close(self) -> None:
        self.arrays.close()

    def abort(self) -> None:
        self.arrays.abort()

    def __enter__(self) -> ExampleWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.arrays.__exit__(exc_type, *rest)


def open_split_writer(decoded_dir: Path, split: str, image_shape: Sequence[int], num_heads: int,
                      key_bytes: int = KEY_BYTES) -> ExampleWriter:
    return ExampleWriter(Path(decoded_dir) / split, image_shape, num_heads, key_bytes)


def encode_keys(keys: Sequence[str], width: int = KEY_BYTES) -> np.ndarray:
    encoded = [k.encode() for k in keys]
    too_long = [k for k in encoded if len(k) > width]
    if too_long:
        raise ValueError(f"example key longer than {width} bytes: {too_long[0]!r}")
    return np.asarray(encoded, dtype=f"S{width}")


def load_split(decoded_dir: Path, split: str) -> dict[str, np.ndarray]:
    return open_arrays(Path(decoded_dir) / split)


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
