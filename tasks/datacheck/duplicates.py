"""Exact duplicates, leaks and label conflicts, found by the examples' content keys; near duplicates by perceptual
hash. Plain numpy (no Luigi, no TensorFlow).

Every example carries the sha256 of its decoded pixels, so grouping equal pixels is a sort. Near duplicates are
pairs in different splits whose 64-bit pHashes differ in at most ``distance`` bits; they are found by
multi-index hashing (the hash cut into ``distance + 1`` pieces: two hashes that close agree exactly on one piece
at least), which compares only the pairs that share a piece: far less than every pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

HASH_BITS = 64
BLOCK_PAIRS = 4_000_000  # candidate pairs compared per numpy step (bounds memory)


@dataclass(frozen=True)
class Member:
    """One example, by split and position in that split (``index``), named by its key (file or member)."""

    split: str
    index: int
    key: str
    label: str

    def to_json(self) -> dict[str, Any]:
        return {"split": self.split, "index": self.index, "key": self.key, "label": self.label}


@dataclass(frozen=True)
class CopyGroup:
    """Examples with the same pixels."""

    digest: str
    members: tuple[Member, ...]

    @property
    def splits(self) -> list[str]:
        return sorted({m.split for m in self.members})

    @property
    def labels(self) -> list[str]:
        return sorted({m.label for m in self.members})

    def to_json(self) -> dict[str, object]:
        return {"sha256": self.digest, "members": [m.to_json() for m in self.members]}


@dataclass(frozen=True)
class Catalogue:
    """Every example of every split, in split order then position: what the finders index into."""

    splits: tuple[str, ...]
    split_of: np.ndarray  # (N,) index into ``splits``
    index: np.ndarray  # (N,) position in its split
    keys: np.ndarray  # (N,) bytes
    labels: np.ndarray  # (N,) label text ("cat", or "A|B|C|D" for several heads)
    digests: np.ndarray  # (N,) S32

    def member(self, at: int) -> Member:
        key = self.keys[at]
        return Member(self.splits[int(self.split_of[at])], int(self.index[at]),
                      key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key), str(self.labels[at]))


def label_texts(labels: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Each example's label as text: the class name, or the heads' names joined by ``|``."""
    names = np.asarray(list(class_names) + ["?"], dtype=object)
    codes = np.clip(np.asarray(labels, dtype=np.int64), 0, len(class_names))
    if codes.ndim == 1:
        return names[codes]
    return np.asarray(["|".join(row) for row in names[codes]], dtype=object)


def copy_groups(catalogue: Catalogue) -> list[CopyGroup]:
    """Groups of two or more examples with the same pixels, in order of their first member."""
    order = np.argsort(catalogue.digests, kind="stable")
    ordered = catalogue.digests[order]
    if len(ordered) < 2:
        return []
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, len(ordered)])
    groups = []
    for start, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
        members = np.sort(order[start:start + size])
        groups.append(CopyGroup(bytes(catalogue.digests[members[0]]).hex(),
                                tuple(catalogue.member(int(at)) for at in members)))
    groups.sort(key=lambda g: (g.members[0].split, g.members[0].index))
    return groups


def near_duplicate_pairs(hashes: np.ndarray, split_of: np.ndarray, distance: int,
                         ignore: np.ndarray | None = None, digests: np.ndarray | None = None) -> np.ndarray:
    """(P, 3) int64 rows ``(i, j, bits)`` with i < j in different splits whose hashes differ in at most
    ``distance`` bits. ``ignore``: examples left out (degenerate ones, whose hashes say nothing); ``digests``:
    pairs with the same pixels are left out (they are exact copies, reported as such)."""
    if distance < 0 or distance >= HASH_BITS:
        raise ValueError(f"near-duplicate distance must be in [0, {HASH_BITS - 1}] bits, got {distance}")
    candidates = np.flatnonzero(~ignore) if ignore is not None else np.arange(len(hashes))
    found: list[np.ndarray] = []
    for piece in _hash_pieces(distance):
        found.extend(_pairs_sharing_piece(hashes, split_of, candidates, piece, distance))
    if not found:
        return np.zeros((0, 3), dtype=np.int64)
    pairs = np.unique(np.concatenate(found), axis=0)
    if digests is not None and len(pairs):
        pairs = pairs[digests[pairs[:, 0]] != digests[pairs[:, 1]]]
    return pairs


def _hash_pieces(distance: int) -> list[tuple[int, int]]:
    """``distance + 1`` (shift, width) pieces covering the 64 bits."""
    count = distance + 1
    bounds = np.linspace(0, HASH_BITS, count + 1).astype(int)
    return [(int(bounds[i]), int(bounds[i + 1] - bounds[i])) for i in range(count)]


def _pairs_sharing_piece(hashes: np.ndarray, split_of: np.ndarray, candidates: np.ndarray, piece: tuple[int, int],
                         distance: int) -> list[np.ndarray]:
    shift, width = piece
    values = (hashes[candidates] >> np.uint64(shift)) & np.uint64((1 << width) - 1)
    order = np.argsort(values, kind="stable")
    ordered, members = values[order], candidates[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, len(ordered)])
    found = []
    # Pairs of positions k, k + gap inside one run of equal pieces, one gap at a time: vectorised over all runs.
    # ``active`` shrinks to the positions whose run is longer than the gap: the work is the number of pairs.
    run_end = np.repeat(starts + sizes, sizes)
    active = np.flatnonzero(sizes[np.repeat(np.arange(len(sizes)), sizes)] > 1)
    gap = 0
    while len(active):
        gap += 1
        active = active[active + gap < run_end[active]]
        first = active
        for block in range(0, len(first), BLOCK_PAIRS):
            left = members[first[block:block + BLOCK_PAIRS]]
            right = members[first[block:block + BLOCK_PAIRS] + gap]
            found.append(_close_pairs(hashes, split_of, left, right, distance))
    return found


def _close_pairs(hashes: np.ndarray, split_of: np.ndarray, left: np.ndarray, right: np.ndarray,
                 distance: int) -> np.ndarray:
    across = split_of[left] != split_of[right]
    left, right = left[across], right[across]
    bits = np.bitwise_count(hashes[left] ^ hashes[right]).astype(np.int64)
    close = bits <= distance
    low, high = np.minimum(left, right)[close], np.maximum(left, right)[close]
    return np.stack([low, high, bits[close]], axis=1).astype(np.int64)
