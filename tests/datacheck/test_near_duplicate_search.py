"""The near-duplicate search against comparing every pair, whichever number of agreeing pieces it uses."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.datacheck import duplicates
from tasks.datacheck.duplicates import agreeing_pieces, near_duplicate_pairs, radix_order


def every_close_pair(hashes: np.ndarray, split_of: np.ndarray, distance: int) -> np.ndarray:
    bits = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    i, j = np.nonzero((bits <= distance) & (split_of[:, None] != split_of[None, :]))
    keep = i < j
    return np.stack([i[keep], j[keep], bits[i[keep], j[keep]]], axis=1).astype(np.int64)


@pytest.mark.parametrize("agreeing", [1, 2, 3])
@pytest.mark.parametrize("distance", [0, 2, 4, 7])
def test_the_search_finds_exactly_the_pairs_within_the_distance(monkeypatch: pytest.MonkeyPatch, agreeing: int,
                                                               distance: int) -> None:
    rng = np.random.default_rng(distance * 10 + agreeing)
    hashes = rng.integers(0, 2**63, 600, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 600, dtype=np.uint64)
    for i in range(0, 300, 3):  # copies of earlier hashes with 0..distance+1 bits flipped at random places
        flips = rng.choice(64, rng.integers(0, distance + 2), replace=False)
        hashes[300 + i] = hashes[i] ^ np.uint64(sum(1 << int(b) for b in flips))
    split_of = rng.integers(0, 3, 600)
    monkeypatch.setattr(duplicates, "agreeing_pieces", lambda d, n: agreeing)
    found = near_duplicate_pairs(hashes, split_of, distance)
    expected = every_close_pair(hashes, split_of, distance)
    assert len(expected) > 20
    assert np.array_equal(found, expected[np.lexsort((expected[:, 2], expected[:, 1], expected[:, 0]))])


def test_more_examples_agree_on_more_pieces() -> None:
    assert agreeing_pieces(4, 1_000) == 1
    assert agreeing_pieces(4, 60_000) == 2
    assert agreeing_pieces(4, 10**8) == 3
    assert agreeing_pieces(63, 10**6) == 1  # pieces of one bit: there is no other choice


@pytest.mark.parametrize("bits", [1, 13, 16, 17, 22, 40, 64])
def test_radix_order_is_a_stable_sort_of_keys_of_any_width(bits: int) -> None:
    rng = np.random.default_rng(bits)
    keys = rng.integers(0, 2**bits - 1, 5000, dtype=np.uint64, endpoint=True)
    keys[::7] = keys[0]  # runs of equal keys, whose order must stay
    assert np.array_equal(radix_order(keys, bits), np.argsort(keys, kind="stable"))
