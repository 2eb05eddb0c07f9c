"""Generate captcha images with the ``captcha`` package, reproducibly. No Luigi.

captcha >= 0.5 draws every random choice from the ``secrets`` module, which cannot be seeded. For a
reproducible dataset we hand ``captcha.image`` a seeded ``random.Random`` under the name ``secrets``
for the duration of one image (it only calls ``randbelow``, ``randbits`` and ``choice``).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import captcha.image
from captcha.image import ImageCaptcha

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class SeededSecrets:
    """The three ``secrets`` functions captcha uses, backed by a seeded generator."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def randbelow(self, n: int) -> int:
        return self._random.randrange(n)

    def randbits(self, k: int) -> int:
        return self._random.getrandbits(k)

    def choice(self, seq):  # noqa: ANN001, ANN201 - mirrors secrets.choice
        return self._random.choice(seq)


@contextlib.contextmanager
def seeded_captcha(seed: int) -> Iterator[None]:
    original = captcha.image.secrets
    captcha.image.secrets = SeededSecrets(seed)  # type: ignore[assignment]  # stands in for the module
    try:
        yield
    finally:
        captcha.image.secrets = original


def item_seed(seed: int, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:8], "big")


def captcha_text(seed: int, index: int, length: int, alphabet: str = ALPHABET) -> str:
    rng = random.Random(item_seed(seed, index) ^ 0x5A5A)
    return "".join(rng.choice(alphabet) for _ in range(length))


def _generate_range(args: tuple[str, int, int, int, int, int, int, str]) -> list[tuple[int, str]]:
    out_dir, start, stop, seed, width, height, length, alphabet = args
    generator = ImageCaptcha(width=width, height=height)
    rows = []
    for index in range(start, stop):
        text = captcha_text(seed, index, length, alphabet)
        with seeded_captcha(item_seed(seed, index)):
            image = generator.generate_image(text)
        image.save(Path(out_dir) / f"{index}.png", format="PNG")
        rows.append((index, text))
    return rows


def generate_captchas(
    out_dir: Path, count: int, *, seed: int = 0, width: int = 160, height: int = 60, length: int = 4,
    alphabet: str = ALPHABET, workers: int = 2, chunk: int = 500, progress=None,  # noqa: ANN001
) -> list[tuple[int, str]]:
    """Write ``<index>.png`` for index in [0, count) and return ``(index, text)`` rows in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(str(out_dir), s, min(s + chunk, count), seed, width, height, length, alphabet)
            for s in range(0, count, chunk)]
    rows: list[tuple[int, str]] = []
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for part in pool.map(_generate_range, jobs):
                rows.extend(part)
                if progress:
                    progress(len(rows), count)
    else:
        for job in jobs:
            rows.extend(_generate_range(job))
            if progress:
                progress(len(rows), count)
    return rows
