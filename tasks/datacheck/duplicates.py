"""Exact duplicates, leaks and label conflicts, found by the examples' content keys; near duplicates by perceptual
hash. Plain numpy (no Luigi, no TensorFlow).

Every example carries the sha256 of its decoded pixels, so grouping equal pixels is a sort. Near duplicates are
pairs in different splits whose 64-bit pHashes differ in at most ``distance`` bits; they are found by
multi-index hashing: the hash is cut into ``distance + k`` pieces, so two hashes that close agree exactly on ``k``
pieces at least, and only the pairs that agree on some ``k`` pieces are compared: far less than every pair. ``k``
grows with the number of examples (``agreeing_pieces``), so the pairs that agree by chance stay few instead of
growing with the square of the examples.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

HASH_BITS = 64
BLOCK_PAIRS = 4_000_000  # candidate pairs compared per numpy step (bounds memory)
MAX_AGREEING_PIECES = 3  # beyond this, the choices to sort by (C(distance + k, k)) cost more than they save
SEARCH_THREADS = 2  # choices of pieces searched at once
COMPARE_COST = 8.0  # one compared pair against one step of a sort per example (measured: ~90 ns and ~8 ns)
Pieces = tuple[tuple[int, int], ...]  # (shift, width) pieces of a hash


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
    choices = piece_choices(distance, agreeing_pieces(distance, len(candidates)))

    def pairs_agreeing_on(pieces: Pieces) -> list[np.ndarray]:
        return _pairs_agreeing_on(hashes, split_of, candidates, pieces, distance)

    found: list[np.ndarray] = []
    # The choices are independent sorts (numpy sorts without the GIL): SEARCH_THREADS at once.
    with ThreadPoolExecutor(max_workers=SEARCH_THREADS, thread_name_prefix="near-duplicates") as pool:
        for agreeing in pool.map(pairs_agreeing_on, choices):
            found.extend(agreeing)
    if not found:
        return np.zeros((0, 3), dtype=np.int64)
    pairs = np.unique(np.concatenate(found), axis=0)
    if digests is not None and len(pairs):
        pairs = pairs[digests[pairs[:, 0]] != digests[pairs[:, 1]]]
    return pairs


def hash_pieces(count: int) -> list[tuple[int, int]]:
    """``count`` (shift, width) pieces covering the 64 bits, their widths differing by one at most."""
    bounds = np.linspace(0, HASH_BITS, count + 1).astype(int)
    return [(int(bounds[i]), int(bounds[i + 1] - bounds[i])) for i in range(count)]


def agreeing_pieces(distance: int, examples: int) -> int:
    """How many pieces two hashes must agree on (``k``), the cheapest by an estimate of the work: every choice of
    ``k`` pieces is a sort of the examples (about log2(examples) steps each), and the pairs agreeing on them by
    chance (uniform hashes: examples / 2**bits per example) are compared, each costing ``COMPARE_COST`` steps. With
    the default 4 bits: ``k`` = 1 (5 choices of 12-13 bits) up to ~14,000 examples, 2 (15 choices of 21-22 bits) up
    to ~4 million, then 3."""
    steps = math.log2(max(examples, 2))

    def work(k: int) -> float:
        narrowest = sum(sorted(width for _, width in hash_pieces(distance + k))[:k])
        return math.comb(distance + k, k) * (steps + COMPARE_COST * examples / 2.0**narrowest)

    return min(range(1, min(MAX_AGREEING_PIECES, HASH_BITS - distance) + 1), key=work)


def piece_choices(distance: int, agreeing: int) -> list[Pieces]:
    """Every choice of ``agreeing`` pieces out of ``distance + agreeing``: of those pieces, two hashes within
    ``distance`` bits differ in ``distance`` at most, so they agree exactly on the pieces of one choice at least."""
    return list(itertools.combinations(hash_pieces(distance + agreeing), agreeing))


def agreement_keys(hashes: np.ndarray, pieces: Pieces) -> tuple[np.ndarray, int]:
    """The bits of ``pieces`` of each hash, side by side in the low bits of a uint64; and how many bits they are."""
    keys = np.zeros(len(hashes), dtype=np.uint64)
    for shift, width in pieces:
        keys = (keys << np.uint64(width)) | ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1))
    return keys, sum(width for _, width in pieces)


def radix_order(keys: np.ndarray, bits: int) -> np.ndarray:
    """The order that sorts ``keys`` (each below 2**bits): stable sorts by 16-bit digits, the lowest first. numpy
    sorts uint16 by counting, several times faster than a comparison sort of 64-bit values."""
    order = np.argsort((keys & np.uint64(0xFFFF)).astype(np.uint16), kind="stable")
    for shift in range(16, bits, 16):
        digits = ((keys[order] >> np.uint64(shift)) & np.uint64(0xFFFF)).astype(np.uint16)
        order = order[np.argsort(digits, kind="stable")]
    return order


def _pairs_agreeing_on(hashes: np.ndarray, split_of: np.ndarray, candidates: np.ndarray, pieces: Pieces,
                       distance: int) -> list[np.ndarray]:
    keys, bits = agreement_keys(hashes[candidates], pieces)
    order = radix_order(keys, bits)
    ordered = keys[order]
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return []
    # Only the runs of two or more equal keys make pairs (with wide keys, few examples are in one).
    in_run = np.r_[same, False] | np.r_[False, same]
    ordered, members = ordered[in_run], candidates[order[in_run]]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, len(ordered)])
    found = []
    # Pairs of positions k, k + gap inside one run of equal keys, one gap at a time: vectorised over all runs.
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
