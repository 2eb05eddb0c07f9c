"""Deterministic byte mutations (a small libFuzzer-like mutator) for running the targets without atheris."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

# Values that sit on the edges of size fields: zero, one, sign bits, all ones.
INTERESTING_INTS = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF)


def _flip_bit(data: bytearray, rng: random.Random) -> None:
    if data:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def _set_byte(data: bytearray, rng: random.Random) -> None:
    if data:
        data[rng.randrange(len(data))] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))


def _truncate(data: bytearray, rng: random.Random) -> None:
    del data[rng.randrange(len(data) + 1):]


def _insert(data: bytearray, rng: random.Random) -> None:
    at = rng.randrange(len(data) + 1)
    data[at:at] = rng.randbytes(rng.randrange(1, 9))


def _erase(data: bytearray, rng: random.Random) -> None:
    if data:
        at = rng.randrange(len(data))
        del data[at : at + rng.randrange(1, 17)]


def _int_field(data: bytearray, rng: random.Random) -> None:
    """Overwrite 2, 4 or 8 bytes with an edge value, either byte order: where size fields lie."""
    width = rng.choice((2, 4, 8))
    if len(data) >= width:
        at = rng.randrange(len(data) - width + 1)
        value = rng.choice(INTERESTING_INTS) % (1 << (8 * width))
        data[at : at + width] = value.to_bytes(width, rng.choice(("little", "big")))


def _duplicate(data: bytearray, rng: random.Random) -> None:
    if data:
        start = rng.randrange(len(data))
        chunk = data[start : start + rng.randrange(1, 65)]
        at = rng.randrange(len(data) + 1)
        data[at:at] = chunk


MUTATORS: tuple[Callable[[bytearray, random.Random], None], ...] = (
    _flip_bit, _set_byte, _truncate, _insert, _erase, _int_field, _duplicate,
)


def mutate(data: bytes, rng: random.Random, max_steps: int = 3) -> bytes:
    """``data`` after 1..max_steps random mutations drawn from ``rng``."""
    out = bytearray(data)
    for _ in range(rng.randrange(1, max_steps + 1)):
        rng.choice(MUTATORS)(out, rng)
    return bytes(out)


def mutations(seeds: list[bytes], count: int, seed: int) -> Iterator[bytes]:
    """``count`` mutants of the seeds, round robin, the same ones for the same ``seed``."""
    rng = random.Random(seed)
    for i in range(count):
        yield mutate(seeds[i % len(seeds)], rng)
