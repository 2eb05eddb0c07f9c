"""MNIST / Fashion-MNIST decode stage: four IDX files -> decoded example arrays.

Sources, either the four official files (roles ``train_images``, ``train_labels``, ``test_images``,
``test_labels``), or ``--source DIR`` (role ``data``) holding them under their usual names, gzip-compressed
or plain (``train-images-idx3-ubyte.gz``, ``train-images-idx3-ubyte`` or ``train-images.idx3-ubyte``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import luigi

from tasks.datasets.mnist.idx import read_idx_pair
from tasks.formats.dataset_info import DatasetInfo, SplitInfo
from tasks.formats.examples import encode_keys, open_split_writer, save_class_names
from tasks.sources.task import RAW_DATA, downloaded_path
from tasks.store.task import ArtifactTask

CLASS_NAMES = {
    "mnist": tuple(str(digit) for digit in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
}
# Role -> the official file's stem; split -> (images role, labels role).
FILE_STEMS = {"train_images": "train-images", "train_labels": "train-labels",
              "test_images": "t10k-images", "test_labels": "t10k-labels"}
SPLIT_ROLES = {"train": ("train_images", "train_labels"), "test": ("test_images", "test_labels")}
CHUNK_ROWS = 10_000


def idx_file_names(role: str) -> list[str]:
    """The names a copy of the file for ``role`` goes by, most usual first."""
    stem = FILE_STEMS[role]
    kind = "idx3-ubyte" if role.endswith("images") else "idx1-ubyte"
    names = [f"{stem}-{kind}", f"{stem}.{kind}"]
    return [f"{name}.gz" for name in names] + names


def find_idx_files(folder: Path) -> dict[str, Path]:
    """The four IDX files in ``folder`` by role; an error lists what is missing and what the folder holds."""
    found: dict[str, Path] = {}
    for role in FILE_STEMS:
        candidates = [folder / name for name in idx_file_names(role) if (folder / name).is_file()]
        if candidates:
            found[role] = candidates[0]
    missing = [role for role in FILE_STEMS if role not in found]
    if missing:
        held = ", ".join(sorted(p.name for p in folder.iterdir())[:12]) or "nothing"
        wanted = "; ".join(f"{role}: {idx_file_names(role)[0]} (or without .gz)" for role in missing)
        raise ValueError(f"{folder}: missing IDX files ({wanted}); the folder holds {held}")
    return found


class DecodeMnist(ArtifactTask):
    stage = "decode"
    version = 1
    provides = "decoded"

    variant = luigi.ChoiceParameter(choices=sorted(CLASS_NAMES), description="mnist or fashion_mnist")

    def idx_files(self) -> dict[str, Path]:
        sources = self.requires()
        if RAW_DATA in sources:
            data = downloaded_path(self.upstream_task(RAW_DATA))
            if not data.is_dir():
                raise ValueError(f"{data}: an MNIST source must be a folder holding the four IDX files")
            return find_idx_files(data)
        missing = [role for role in FILE_STEMS if role not in sources]
        if missing:
            raise ValueError(f"DecodeMnist reads a 'data' folder or the four IDX files; missing {missing}")
        return {role: downloaded_path(self.upstream_task(role)) for role in FILE_STEMS}

    def build(self, out_dir: Path) -> dict[str, Any]:
        class_names = CLASS_NAMES[self.variant]
        files = self.idx_files()
        counts: dict[str, int] = {}
        shape: tuple[int, int, int] = (0, 0, 1)
        for done, (split, (images_role, labels_role)) in enumerate(SPLIT_ROLES.items()):
            self.report_progress(done, len(SPLIT_ROLES), f"reading {split}")
            images, labels = read_idx_pair(files[images_role], files[labels_role], num_classes=len(class_names))
            shape = (int(images.shape[1]), int(images.shape[2]), 1)
            with open_split_writer(out_dir, split, shape, num_heads=1) as writer:
                for start in range(0, len(images), CHUNK_ROWS):
                    stop = min(start + CHUNK_ROWS, len(images))
                    writer.append(image=images[start:stop, :, :, None], label=labels[start:stop],
                                  key=encode_keys([f"{split}/{i:05d}" for i in range(start, stop)]))
            counts[split] = writer.rows
        save_class_names(out_dir, class_names)
        DatasetInfo(self.variant, shape, len(class_names), 1,
                    {split: SplitInfo(count) for split, count in counts.items()}).save(out_dir)
        return {"records": counts, "idx_files": {role: path.name for role, path in files.items()}}
