"""Test support: learnable fake MNIST / Fashion-MNIST written in the real IDX byte format.

Writes real-format fake data for tests and bench; not product code.

Digits: class ``k`` is the digit ``k`` drawn with ``cv2.putText`` at twice the size, with random shift,
scale, stroke thickness and a small rotation, shrunk to 28x28 and given Gaussian noise; white ink (255) on
black (0) as in MNIST. ``fashion=True`` draws ten distinct simple shapes instead (square, frame, disc, ring,
triangles, bars, crosses), with the same kinds of jitter. A small MLP or LeNet learns either well above
chance in two epochs on a few hundred images.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import cv2
import numpy as np

from tasks.datasets.mnist.idx import write_idx

SIDE = 28
NUM_CLASSES = 10
_CANVAS = 2 * SIDE  # drawn at 2x and shrunk with INTER_AREA for anti-aliased strokes
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

Drawer = Callable[[np.random.Generator, int], np.ndarray]


class FakeMnist(TypedDict):
    """What ``write_fake_mnist`` wrote: the arrays, pixel-exact, and the file of each (same keys)."""

    train_images: np.ndarray  # (n_train, 28, 28) uint8
    train_labels: np.ndarray  # (n_train,) uint8
    test_images: np.ndarray  # (n_test, 28, 28) uint8
    test_labels: np.ndarray  # (n_test,) uint8
    paths: dict[str, Path]


def mnist_file_names(gzip: bool = True) -> dict[str, str]:
    """The official file names, keyed like FakeMnist: ``train-images-idx3-ubyte.gz`` etc."""
    return {key: name + (".gz" if gzip else "") for key, name in MNIST_FILES.items()}


def _finish(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate a little, shrink to 28x28, dim the ink at random and add noise."""
    angle = float(rng.uniform(-12, 12))
    rotation = cv2.getRotationMatrix2D((_CANVAS / 2, _CANVAS / 2), angle, 1.0)
    canvas = cv2.warpAffine(canvas, rotation, (_CANVAS, _CANVAS), flags=cv2.INTER_LINEAR)
    image = cv2.resize(canvas, (SIDE, SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    image *= rng.uniform(0.75, 1.0)
    image += rng.normal(0.0, 10.0, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def draw_digit(rng: np.random.Generator, label: int) -> np.ndarray:
    """The digit ``label`` as a 28x28 uint8 image."""
    canvas = np.zeros((_CANVAS, _CANVAS), np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = float(rng.uniform(1.7, 2.1))
    thickness = int(rng.integers(4, 8))
    (width, height), _baseline = cv2.getTextSize(str(label), font, scale, thickness)
    x = (_CANVAS - width) // 2 + int(rng.integers(-4, 5))
    y = (_CANVAS + height) // 2 + int(rng.integers(-4, 5))
    cv2.putText(canvas, str(label), (x, y), font, scale, 255, thickness, cv2.LINE_AA)
    return _finish(canvas, rng)


def draw_shape(rng: np.random.Generator, label: int) -> np.ndarray:
    """Shape number ``label`` (0-9) as a 28x28 uint8 image."""
    canvas = np.zeros((_CANVAS, _CANVAS), np.uint8)
    cx, cy = (int(v) for v in _CANVAS // 2 + rng.integers(-4, 5, 2))
    r = int(rng.integers(14, 20))  # half-size
    t = int(rng.integers(3, 6))  # stroke thickness
    aa = cv2.LINE_AA
    if label == 0:  # filled square
        cv2.rectangle(canvas, (cx - r, cy - r), (cx + r, cy + r), 255, -1)
    elif label == 1:  # square frame
        cv2.rectangle(canvas, (cx - r, cy - r), (cx + r, cy + r), 255, t)
    elif label == 2:  # disc
        cv2.circle(canvas, (cx, cy), r, 255, -1, aa)
    elif label == 3:  # ring
        cv2.circle(canvas, (cx, cy), r, 255, t, aa)
    elif label == 4:  # filled triangle, point up
        points = np.array([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], np.int32)
        cv2.fillPoly(canvas, [points], 255, aa)
    elif label == 5:  # one wide horizontal bar
        cv2.rectangle(canvas, (cx - r, cy - r // 3), (cx + r, cy + r // 3), 255, -1)
    elif label == 6:  # two vertical bars ("trousers")
        for dx in (-r + t, r - t):
            cv2.rectangle(canvas, (cx + dx - t, cy - r), (cx + dx + t, cy + r), 255, -1)
    elif label == 7:  # plus
        cv2.line(canvas, (cx - r, cy), (cx + r, cy), 255, t, aa)
        cv2.line(canvas, (cx, cy - r), (cx, cy + r), 255, t, aa)
    elif label == 8:  # X
        cv2.line(canvas, (cx - r, cy - r), (cx + r, cy + r), 255, t, aa)
        cv2.line(canvas, (cx - r, cy + r), (cx + r, cy - r), 255, t, aa)
    elif label == 9:  # triangle outline, point down
        points = np.array([(cx - r, cy - r), (cx + r, cy - r), (cx, cy + r)], np.int32)
        cv2.polylines(canvas, [points], True, 255, t, aa)
    else:
        raise ValueError(f"label must be 0-9, got {label}")
    return _finish(canvas, rng)


def make_split(rng: np.random.Generator, count: int, draw: Drawer) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images and balanced, shuffled labels (every class once per 10 samples)."""
    labels = rng.permutation(np.arange(count) % NUM_CLASSES).astype(np.uint8)
    images = np.zeros((count, SIDE, SIDE), np.uint8)
    for i, label in enumerate(labels):
        images[i] = draw(rng, int(label))
    return images, labels


def write_fake_mnist(
    directory: str | Path, n_train: int, n_test: int, *, gzip: bool = True, seed: int = 0, fashion: bool = False
) -> FakeMnist:
    """Write the four official MNIST files (``.gz`` when ``gzip``) into ``directory``; same seed, same bytes."""
    if n_train < 0 or n_test < 0:
        raise ValueError(f"counts must be non-negative, got n_train={n_train}, n_test={n_test}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    draw = draw_shape if fashion else draw_digit
    train_images, train_labels = make_split(rng, n_train, draw)
    test_images, test_labels = make_split(rng, n_test, draw)
    arrays = {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }
    paths = {}
    for key, name in mnist_file_names(gzip).items():
        paths[key] = directory / name
        write_idx(paths[key], arrays[key], gzip=gzip)
    return FakeMnist(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        paths=paths,
    )
