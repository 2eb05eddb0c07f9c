"""Test support: a learnable, HWDB1.1-shaped fake data set written in the real ``.gnt`` byte format.

Writes real-format fake data for tests and bench; not product code.

Each character class gets a fixed random set of thick strokes; every sample redraws them with jitter,
stroke-width noise and its own bitmap size (40-90 px per side), ink 0 on white 255 as in CASIA HWDB.
Files are laid out as the official archives unpack: ``HWDB1.1trn_gnt/1001-c.gnt ...`` and
``HWDB1.1tst_gnt/1241-c.gnt ...``, one file per "writer". Tests and benchmarks share this generator.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tests.fakes.gnt import write_gnt

# The first GB2312 level-1 characters, in code order (the start of the real HWDB1.1 character set).
DEFAULT_CHARS = "啊阿埃挨哎唉哀皑癌蔼矮艾碍爱隘鞍氨安俺按暗岸胺案肮昂盎凹敖熬"
TRAIN_DIR = "HWDB1.1trn_gnt"
TEST_DIR = "HWDB1.1tst_gnt"
FIRST_TRAIN_WRITER = 1001
FIRST_TEST_WRITER = 1241

Stroke = tuple[float, float, float, float]  # x0, y0, x1, y1 in [0, 1]


@dataclass(frozen=True)
class FakeHwdb:
    """What ``write_fake_hwdb`` wrote: the folders, files and per-split character counts."""

    root: Path
    train_files: list[Path]
    test_files: list[Path]
    train_chars: list[str]
    test_only_chars: list[str]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def train_dir(self) -> Path:
        return self.root / TRAIN_DIR

    @property
    def test_dir(self) -> Path:
        return self.root / TEST_DIR


def class_strokes(rng: np.random.Generator, strokes: int = 4) -> list[Stroke]:
    """A class's fixed drawing: ``strokes`` lines between random points of the unit square's inner part."""
    points = rng.uniform(0.12, 0.88, size=(strokes, 4))
    return [tuple(float(v) for v in row) for row in points]  # type: ignore[misc]


def draw_sample(
    strokes: Sequence[Stroke], rng: np.random.Generator, *, min_side: int = 40, max_side: int = 90,
    jitter: float = 0.05,
) -> np.ndarray:
    """One handwritten-looking bitmap of a class: (H, W) uint8, ink 0 on white 255, sides in [min, max]."""
    height, width = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
    canvas = np.full((height, width), 255, dtype=np.uint8)
    base_thickness = max(2, round(min(height, width) * rng.uniform(0.06, 0.11)))
    for x0, y0, x1, y1 in strokes:
        moved = np.array([x0, y0, x1, y1]) + rng.normal(0.0, jitter, size=4)
        moved = np.clip(moved, 0.03, 0.97)
        start = (round(moved[0] * (width - 1)), round(moved[1] * (height - 1)))
        end = (round(moved[2] * (width - 1)), round(moved[3] * (height - 1)))
        thickness = max(1, base_thickness + int(rng.integers(-1, 2)))
        ink = int(rng.integers(0, 40))
        cv2.line(canvas, start, end, color=ink, thickness=thickness, lineType=cv2.LINE_AA)
    return canvas


def _writer_samples(
    repeats: dict[str, int], strokes: dict[str, list[Stroke]], rng: np.random.Generator
) -> Iterator[tuple[str, np.ndarray]]:
    """One writer's file: each character ``repeats[char]`` times, in shuffled order."""
    order = [ch for ch, times in repeats.items() for _ in range(times)]
    for position in rng.permutation(len(order)):
        char = order[int(position)]
        yield char, draw_sample(strokes[char], rng)


def write_fake_hwdb(
    root: Path,
    *,
    chars: Sequence[str] = DEFAULT_CHARS,
    train_files: int = 3,
    test_files: int = 1,
    per_char_per_file: int = 4,
    test_only_chars: Sequence[str] = (),
    test_only_per_file: int = 3,
    seed: int = 0,
) -> FakeHwdb:
    """Write ``train_files`` + ``test_files`` ``.gnt`` files below ``root``; returns what was written.

    Every file holds each of ``chars`` ``per_char_per_file`` times, in shuffled order; test files also
    hold ``test_only_chars`` (characters the training set never shows) ``test_only_per_file`` times each.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    all_chars = list(dict.fromkeys([*chars, *test_only_chars]))
    strokes = {ch: class_strokes(rng) for ch in all_chars}
    written: dict[str, list[Path]] = {"train": [], "test": []}
    counts = {"train": 0, "test": 0}
    plan = [("train", TRAIN_DIR, FIRST_TRAIN_WRITER, train_files), ("test", TEST_DIR, FIRST_TEST_WRITER, test_files)]
    for split, folder, first_writer, files in plan:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for writer in range(first_writer, first_writer + files):
            path = root / folder / f"{writer}-c.gnt"
            repeats = dict.fromkeys(chars, per_char_per_file)
            if split == "test":
                repeats.update(dict.fromkeys(test_only_chars, test_only_per_file))
            counts[split] += write_gnt(path, _writer_samples(repeats, strokes, rng))
            written[split].append(path)
    return FakeHwdb(root, written["train"], written["test"], list(chars), list(test_only_chars), counts)
