"""Test support: CIFAR-10 / CIFAR-100 "python version" fakes written in the real byte formats.

Writes real-format fake data for tests and bench (not product code; the reader is
:mod:`tasks.datasets.cifar.codec`): batch files and ``batches.meta``/``meta`` with the official keys and (N, 3072)
planar uint8 rows, optionally in the official files' Python 2 pickle layout (:mod:`tests.fakes.py2_pickle`),
learnable fake images, and byte-reproducible ``cifar-*-python.tar.gz`` archives.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.datasets.cifar.codec import IMAGE_SIDE, VALUES_PER_IMAGE, CifarSpec
from tests.fakes.py2_pickle import dumps_python2

ARCHIVE_MTIME = 1_262_304_000  # fixed tar/gzip timestamps so generated archives are byte-reproducible


def hwc_to_chw_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> (N, 3072) planar rows, the on-disk layout."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(images.shape[0], VALUES_PER_IMAGE)



def _batch_dict(
    images: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    spec: CifarSpec,
    coarse_labels: Sequence[int] | np.ndarray | None,
    batch_label: str,
    filenames: Sequence[str] | None,
) -> dict[bytes, Any]:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE, 3):
        raise ValueError(f"images must be (N, 32, 32, 3) uint8, got {images.shape} {images.dtype}")
    count = images.shape[0]
    if len(labels) != count:
        raise ValueError(f"{len(labels)} labels for {count} images")
    if filenames is None:
        filenames = [f"{spec.label_names[int(lab)]}_s_{i:06d}.png" for i, lab in enumerate(labels)]
    out: dict[bytes, Any] = {b"batch_label": batch_label.encode("ascii")}
    out[spec.label_key.encode("ascii")] = [int(v) for v in labels]
    if spec.coarse_label_key is not None:
        if coarse_labels is None or len(coarse_labels) != count:
            raise ValueError(f"{spec.name} batches need {count} coarse labels")
        out[spec.coarse_label_key.encode("ascii")] = [int(v) for v in coarse_labels]
    out[b"data"] = hwc_to_chw_rows(images)
    out[b"filenames"] = [name.encode("utf-8") for name in filenames]
    return out


def write_cifar_batch(
    path: str | Path,
    images_hwc_uint8: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    spec: CifarSpec,
    protocol: int = 2,
    coarse_labels: Sequence[int] | np.ndarray | None = None,
    batch_label: str = "training batch 1 of 1",
    filenames: Sequence[str] | None = None,
    python2: bool = False,
) -> None:
    """Write one batch in the real on-disk layout (bytes keys, (N, 3072) planar uint8 ``b'data'``).

    ``python2``: byte for byte the official files' pickle layout (protocol 2 with BINSTRINGs, see
    ``py2_pickle``) instead of Python 3's pickle at ``protocol``.
    """
    batch = _batch_dict(images_hwc_uint8, labels, spec, coarse_labels, batch_label, filenames)
    Path(path).write_bytes(dumps_python2(batch) if python2 else pickle.dumps(batch, protocol=protocol))


def _meta_dict(
    spec: CifarSpec, label_names: Sequence[str] | None, coarse_label_names: Sequence[str] | None
) -> dict[bytes, Any]:
    names = list(label_names if label_names is not None else spec.label_names)
    meta: dict[bytes, Any] = {}
    if spec.coarse_label_names_key is None:
        meta[b"num_cases_per_batch"] = 10000
    meta[spec.label_names_key.encode("ascii")] = [n.encode("utf-8") for n in names]
    if spec.coarse_label_names_key is not None:
        coarse = list(coarse_label_names if coarse_label_names is not None else spec.coarse_label_names or ())
        meta[spec.coarse_label_names_key.encode("ascii")] = [n.encode("utf-8") for n in coarse]
    else:
        meta[b"num_vis"] = VALUES_PER_IMAGE
    return meta


def write_meta(
    path: str | Path,
    spec: CifarSpec,
    label_names: Sequence[str] | None = None,
    coarse_label_names: Sequence[str] | None = None,
    *,
    protocol: int = 2,
) -> None:
    """Write ``batches.meta`` (CIFAR-10) or ``meta`` (CIFAR-100) with the same keys as the real files."""
    with open(path, "wb") as f:
        pickle.dump(_meta_dict(spec, label_names, coarse_label_names), f, protocol=protocol)


def fake_cifar_images(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Learnable fake images: a class-coloured Gaussian blob at a class-specific spot, plus noise."""
    count = labels.shape[0]
    hues = np.arange(num_classes) / num_classes
    palette = np.stack([_hue_to_rgb(h) for h in hues]) * 255.0  # (C, 3)
    angle = 2 * np.pi * labels / num_classes
    centre_y = 16 + 8 * np.sin(angle) + rng.normal(0, 1.5, count)
    centre_x = 16 + 8 * np.cos(angle) + rng.normal(0, 1.5, count)
    grid = np.arange(IMAGE_SIDE, dtype=np.float32)
    dist2 = (grid[None, :, None] - centre_y[:, None, None]) ** 2 + (grid[None, None, :] - centre_x[:, None, None]) ** 2
    blob = np.exp(-dist2 / (2 * 6.0**2))[..., None]  # (N, 32, 32, 1)
    background = rng.uniform(40, 120, (count, 1, 1, 3))
    image = background * (1 - blob) + palette[labels][:, None, None, :] * blob
    image += rng.normal(0, 12, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _hue_to_rgb(hue: float) -> np.ndarray:
    """Fully saturated colour for a hue in [0, 1)."""
    return np.clip(np.abs(((hue * 6 + np.array([0.0, 4.0, 2.0])) % 6) - 3) - 1, 0, 1)


def write_cifar_archive(
    tar_gz_path: str | Path, spec: CifarSpec, n_train: int, n_test: int, seed: int, *,
    leave_out: Sequence[str] = (),
) -> dict[str, Any]:
    """Write a byte-reproducible ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` of fake data.
    ``leave_out``: member names (below the top folder, e.g. ``batches.meta``) the archive goes without.

    Returns the source arrays: ``train_images``, ``train_labels``, ``test_images``, ``test_labels``
    (plus ``*_coarse_labels`` for CIFAR-100), ``label_names`` and ``coarse_label_names``.
    """
    rng = np.random.default_rng(seed)
    members: list[tuple[str, bytes]] = []
    source: dict[str, Any] = {
        "label_names": list(spec.label_names),
        "coarse_label_names": list(spec.coarse_label_names or ()) or None,
    }
    for split, total in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, spec.num_classes, total, dtype=np.int64)
        images = fake_cifar_images(labels, spec.num_classes, rng)
        coarse = labels * (spec.num_coarse_classes or 1) // spec.num_classes if spec.num_coarse_classes else None
        source[f"{split}_images"], source[f"{split}_labels"] = images, labels
        source[f"{split}_coarse_labels"] = coarse
        members.extend(_split_members(spec, split, images, labels, coarse))
    members.append((spec.meta_file, dumps_python2(_meta_dict(spec, None, None))))
    if spec.coarse_label_key is None:
        members.append(
            (
                "readme.html",
                b'<meta HTTP-EQUIV="REFRESH" content="0; url=http://www.cs.toronto.edu/~kriz/cifar.html">\n',
            )
        )
    _write_tar_gz(Path(tar_gz_path), spec.top_folder, [(name, data) for name, data in members if name not in leave_out])
    return source


def _split_members(
    spec: CifarSpec, split: str, images: np.ndarray, labels: np.ndarray, coarse: np.ndarray | None
) -> Iterator[tuple[str, bytes]]:
    names = spec.batches(split)
    bounds = np.linspace(0, len(labels), len(names) + 1).astype(int)
    for i, name in enumerate(names):
        part = slice(bounds[i], bounds[i + 1])
        what = "training" if split == "train" else "testing"
        batch = _batch_dict(
            images[part],
            labels[part],
            spec,
            None if coarse is None else coarse[part],
            f"{what} batch {i + 1} of {len(names)}",
            None,
        )
        yield name, dumps_python2(batch)  # the official archives hold Python 2 pickles


def _write_tar_gz(path: Path, top_folder: str, members: list[tuple[str, bytes]]) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=ARCHIVE_MTIME) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            folder = tarfile.TarInfo(top_folder)
            folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, ARCHIVE_MTIME
            tar.addfile(folder)
            for name, payload in members:
                info = tarfile.TarInfo(f"{top_folder}/{name}")
                info.size, info.mode, info.mtime = len(payload), 0o644, ARCHIVE_MTIME
                tar.addfile(info, io.BytesIO(payload))
