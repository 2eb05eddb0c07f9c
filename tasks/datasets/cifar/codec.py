"""CIFAR-10 / CIFAR-100 "python version" codec: schema-checked batch reader.

Each batch file is a pickle of a dict with bytes keys: ``b'data'`` holds N rows of 3072 uint8 values,
planar CHW (1024 red, 1024 green, 1024 blue, each row-major 32x32); ``b'labels'`` (CIFAR-10) or
``b'fine_labels'`` + ``b'coarse_labels'`` (CIFAR-100) hold N ints; ``b'filenames'`` and ``b'batch_label'``
are optional. Real files are Python 2 pickles, so everything is loaded with ``encoding='bytes'`` through
the restricted unpickler in :mod:`tasks.formats.safe_pickle`. Real-format fake writers for tests and bench
live in ``tests/fakes/cifar.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tasks.formats.errors import FormatError
from tasks.formats.safe_pickle import load_restricted

IMAGE_SIDE = 32
IMAGE_CHANNELS = 3
VALUES_PER_IMAGE = IMAGE_SIDE * IMAGE_SIDE * IMAGE_CHANNELS  # 3072

CIFAR10_LABEL_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR100_FINE_LABEL_NAMES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle",
    "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon",
    "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail",
    "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip
CIFAR100_COARSE_LABEL_NAMES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)  # fmt: skip


@dataclass(frozen=True)
class CifarSpec:
    """Where things are in one CIFAR variant's archive and what its batch dicts are keyed by."""

    name: str
    archive_name: str
    top_folder: str
    train_batches: tuple[str, ...]
    test_batches: tuple[str, ...]
    meta_file: str
    label_key: str
    label_names_key: str
    num_classes: int
    label_names: tuple[str, ...]
    coarse_label_key: str | None = None
    coarse_label_names_key: str | None = None
    num_coarse_classes: int | None = None
    coarse_label_names: tuple[str, ...] | None = None

    def batches(self, split: str) -> tuple[str, ...]:
        if split == "train":
            return self.train_batches
        if split == "test":
            return self.test_batches
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")


CIFAR10 = CifarSpec(
    name="cifar10",
    archive_name="cifar-10-python.tar.gz",
    top_folder="cifar-10-batches-py",
    train_batches=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_batches=("test_batch",),
    meta_file="batches.meta",
    label_key="labels",
    label_names_key="label_names",
    num_classes=10,
    label_names=CIFAR10_LABEL_NAMES,
)
CIFAR100 = CifarSpec(
    name="cifar100",
    archive_name="cifar-100-python.tar.gz",
    top_folder="cifar-100-python",
    train_batches=("train",),
    test_batches=("test",),
    meta_file="meta",
    label_key="fine_labels",
    label_names_key="fine_label_names",
    num_classes=100,
    label_names=CIFAR100_FINE_LABEL_NAMES,
    coarse_label_key="coarse_labels",
    coarse_label_names_key="coarse_label_names",
    num_coarse_classes=20,
    coarse_label_names=CIFAR100_COARSE_LABEL_NAMES,
)


@dataclass(frozen=True)
class CifarBatch:
    images: np.ndarray  # (N, 32, 32, 3) uint8, HWC
    labels: np.ndarray  # (N,) int64
    coarse_labels: np.ndarray | None  # (N,) int64, CIFAR-100 only
    filenames: list[str] | None


# ---------------------------------------------------------------------------------------------- reading


def _get(batch: dict[Any, Any], key: str) -> Any:
    """Value for ``key`` stored as bytes (real files) or str (some re-pickled copies); None if absent."""
    if key.encode("ascii") in batch:
        return batch[key.encode("ascii")]
    return batch.get(key)


def _load_dict(path: Path) -> dict[Any, Any]:
    loaded = load_restricted(path)
    if not isinstance(loaded, dict):
        raise FormatError(f"expected a pickled dict, found {type(loaded).__name__}", path=path)
    return loaded


def read_label_names(meta_path: str | Path, key: str = "label_names") -> list[str]:
    """Class names from a CIFAR ``batches.meta`` (key ``label_names``) or CIFAR-100 ``meta`` file."""
    meta_path = Path(meta_path)
    names = _get(_load_dict(meta_path), key)
    if not isinstance(names, list) or not names:
        raise FormatError(f"key {key!r} missing or not a non-empty list", path=meta_path, member=key)
    return [_decode_text(name, meta_path, key, i) for i, name in enumerate(names)]


def _decode_text(value: Any, path: Path, key: str, index: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"key {key!r}: not UTF-8 text ({exc})", path=path, member=key, index=index) from exc
    raise FormatError(
        f"key {key!r}: expected bytes or str, found {type(value).__name__}", path=path, member=key, index=index
    )


def read_cifar_batch(
    path: str | Path, *, num_classes: int, label_key: str = "labels", num_coarse_classes: int | None = None
) -> CifarBatch:
    """Read and schema-check one batch file; every violation raises FormatError naming file and key."""
    rows = read_cifar_rows(path, num_classes=num_classes, label_key=label_key, num_coarse_classes=num_coarse_classes)
    return replace(rows, images=chw_rows_to_hwc(rows.images))


def read_cifar_rows(
    path: str | Path, *, num_classes: int, label_key: str = "labels", num_coarse_classes: int | None = None
) -> CifarBatch:
    """``read_cifar_batch`` before the plane interleave: ``images`` holds the (N, 3072) planar rows."""
    path = Path(path)
    batch = _load_dict(path)
    data = _data_rows(batch, path)
    count = data.shape[0]
    labels = _labels(batch, label_key, count, num_classes, path)
    coarse = None
    if num_coarse_classes is not None:
        coarse = _labels(batch, "coarse_labels", count, num_coarse_classes, path)
    filenames = _filenames(batch, count, path)
    return CifarBatch(images=data, labels=labels, coarse_labels=coarse, filenames=filenames)


def _data_rows(batch: dict[Any, Any], path: Path) -> np.ndarray:
    """``b'data'`` as an (N, 3072) uint8 array; accepts an array or a list of (3072,) arrays."""
    data = _get(batch, "data")
    if data is None:
        raise FormatError("missing key 'data'", path=path, member="data")
    if isinstance(data, list):
        for i, row in enumerate(data):
            _check_uint8_array(row, (VALUES_PER_IMAGE,), path, index=i)
        return np.stack(data) if data else np.empty((0, VALUES_PER_IMAGE), np.uint8)
    _check_uint8_array(data, None, path, index=None)
    if data.ndim != 2 or data.shape[1] != VALUES_PER_IMAGE:
        raise FormatError(f"key 'data': shape {data.shape}, expected (N, {VALUES_PER_IMAGE})", path=path, member="data")
    return data


def _check_uint8_array(value: Any, shape: tuple[int, ...] | None, path: Path, index: int | None) -> None:
    if not isinstance(value, np.ndarray):
        raise FormatError(
            f"key 'data': expected a numpy array, found {type(value).__name__}", path=path, member="data", index=index
        )
    if value.dtype != np.uint8:
        raise FormatError(f"key 'data': dtype {value.dtype}, expected uint8", path=path, member="data", index=index)
    if shape is not None and value.shape != shape:
        raise FormatError(
            f"key 'data': shape {value.shape}, expected {shape} ({VALUES_PER_IMAGE} values per image)",
            path=path,
            member="data",
            index=index,
        )


def _labels(batch: dict[Any, Any], key: str, count: int, num_classes: int, path: Path) -> np.ndarray:
    raw = _get(batch, key)
    if raw is None:
        raise FormatError(f"missing key {key!r}", path=path, member=key)
    labels = _as_int_array(raw, key, path)
    if labels.shape != (count,):
        raise FormatError(f"key {key!r}: {labels.size} labels for {count} images", path=path, member=key)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        first = int(bad[0])
        raise FormatError(
            f"key {key!r}: label {int(labels[first])} outside [0, {num_classes})", path=path, member=key, index=first
        )
    return labels


def _as_int_array(raw: Any, key: str, path: Path) -> np.ndarray:
    if isinstance(raw, np.ndarray):
        if raw.dtype.kind not in "iu" or raw.ndim != 1:
            raise FormatError(
                f"key {key!r}: array of dtype {raw.dtype} shape {raw.shape}, expected 1-D ints", path=path, member=key
            )
        return raw.astype(np.int64)
    if not isinstance(raw, list):
        raise FormatError(f"key {key!r}: expected a list of ints, found {type(raw).__name__}", path=path, member=key)
    for i, value in ([] if set(map(type, raw)) <= {int} else enumerate(raw)):
        if type(value) is not int:
            raise FormatError(
                f"key {key!r}: expected int, found {type(value).__name__}", path=path, member=key, index=i
            )
    try:
        return np.asarray(raw, dtype=np.int64).reshape(len(raw))
    except OverflowError as exc:
        raise FormatError(f"key {key!r}: label does not fit in int64", path=path, member=key) from exc


def _filenames(batch: dict[Any, Any], count: int, path: Path) -> list[str] | None:
    raw = _get(batch, "filenames")
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != count:
        size = len(raw) if isinstance(raw, list) else type(raw).__name__
        raise FormatError(
            f"key 'filenames': expected a list of {count} names, found {size}", path=path, member="filenames"
        )
    if set(map(type, raw)) == {bytes}:  # the real files' case: decode all at once, find the culprit on failure
        try:
            return [name.decode("utf-8") for name in raw]
        except UnicodeDecodeError:
            pass
    return [_decode_text(name, path, "filenames", i) for i, name in enumerate(raw)]


def chw_rows_to_hwc(rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(N, 3072) planar rows (R plane, G plane, B plane) -> contiguous (N, 32, 32, 3), into ``out`` if given."""
    # cv2.merge interleaves the three strided planes in one pass; numpy's per-channel strided copies and a
    # 4-D transpose copy were both slower here.
    count = rows.shape[0]
    shape = (count, IMAGE_SIDE, IMAGE_SIDE, IMAGE_CHANNELS)
    if out is None:
        out = np.empty(shape, dtype=np.uint8)
    elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}, got {out.dtype} {out.shape}")
    if count:
        planes = rows.reshape(count, IMAGE_CHANNELS, IMAGE_SIDE * IMAGE_SIDE)
        merged = cv2.merge([planes[:, channel] for channel in range(IMAGE_CHANNELS)],
                           out.reshape(count, IMAGE_SIDE * IMAGE_SIDE, IMAGE_CHANNELS))
        if not np.shares_memory(merged, out):  # cv2 reallocates silently when dst does not fit
            out[...] = merged.reshape(shape)
    return out


def resolve_root(root: str | Path, spec: CifarSpec) -> Path:
    """The folder holding the batch files: ``root/<top_folder>`` if it exists, else ``root`` itself."""
    root = Path(root)
    nested = root / spec.top_folder
    return nested if nested.is_dir() else root


def split_batch_paths(root: str | Path, spec: CifarSpec, split: str) -> list[Path]:
    """The batch files of ``split`` in order; a missing one raises FormatError."""
    folder = resolve_root(root, spec)
    paths = []
    for name in spec.batches(split):
        path = folder / name
        if not path.is_file():
            raise FormatError(f"{spec.name} {split} batch {name!r} not found", path=folder, member=name)
        paths.append(path)
    return paths


def expected_files(spec: CifarSpec) -> tuple[str, ...]:
    """Every file a ``spec`` archive holds that decoding reads: the meta file, then the batches in order."""
    return (spec.meta_file, *spec.train_batches, *spec.test_batches)


def spec_title(spec: CifarSpec) -> str:
    """``CIFAR-10`` or ``CIFAR-100``, as the dataset's authors write it."""
    return spec.name.upper().replace("CIFAR", "CIFAR-")


def contents_listing(spec: CifarSpec) -> str:
    """The files of ``expected_files`` in short: runs of three or more numbered ones collapsed
    (``data_batch_1..5``)."""
    runs: list[list[str]] = []
    for name in expected_files(spec):
        if runs and _follows(runs[-1][-1], name):
            runs[-1].append(name)
        else:
            runs.append([name])
    return ", ".join(f"{run[0]}..{_numbered(run[-1])[1]}" if len(run) > 2 else ", ".join(run) for run in runs)


def _follows(previous: str, name: str) -> bool:
    """Whether ``name`` is ``previous`` numbered one higher (``data_batch_2`` after ``data_batch_1``)."""
    stem, number = _numbered(name)
    return number is not None and _numbered(previous) == (stem, number - 1)


def _numbered(name: str) -> tuple[str, int | None]:
    """(``data_batch_``, 3) for ``data_batch_3``; (name, None) for a name without a trailing number."""
    stem = name.rstrip("0123456789")
    return (stem, int(name[len(stem):])) if stem != name else (name, None)


def read_spec_rows(path: Path, spec: CifarSpec) -> CifarBatch:
    """``read_cifar_rows`` with the label keys and class counts of ``spec``."""
    return read_cifar_rows(path, num_classes=spec.num_classes, label_key=spec.label_key,
                           num_coarse_classes=spec.num_coarse_classes)


def read_spec_batch(path: Path, spec: CifarSpec) -> CifarBatch:
    rows = read_spec_rows(path, spec)
    return replace(rows, images=chw_rows_to_hwc(rows.images))


def iter_split(root: str | Path, spec: CifarSpec, split: str) -> Iterator[tuple[str, CifarBatch]]:
    """Yield ``(batch_name, batch)`` for each batch file of ``split``, one file in memory at a time."""
    for path in split_batch_paths(root, spec, split):
        yield path.name, read_spec_batch(path, spec)
