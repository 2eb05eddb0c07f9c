"""Captcha stages: generate N seeded captchas (or take a user's folder) and decode them to arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import luigi
import numpy as np

from tasks.datasets.captcha.files import IMAGES_DIR, LABELS_CSV_FILE
from tasks.datasets.captcha.generate import ALPHABET, generate_captchas
from tasks.datasets.captcha.labels_csv import read_labels_csv, write_labels_csv
from tasks.formats.dataset_info import DatasetInfo, SplitInfo
from tasks.formats.errors import FormatError
from tasks.formats.examples import encode_keys, open_split_writer, save_class_names, stable_unit
from tasks.sources.task import RAW_DATA, Download, downloaded_path
from tasks.store.task import ArtifactTask


class GenerateCaptchas(ArtifactTask):
    """``count`` captchas of ``length`` letters A-Z: ``images/<index>.png`` and ``labels.csv``."""

    stage = "generate"
    version = 1
    provides = RAW_DATA

    count = luigi.IntParameter(default=30000)
    width = luigi.IntParameter(default=160)
    height = luigi.IntParameter(default=60)
    length = luigi.IntParameter(default=4)
    seed = luigi.IntParameter(default=0)
    workers = luigi.IntParameter(default=2, significant=False)

    def build(self, out_dir: Path) -> dict[str, Any]:
        import captcha

        rows = generate_captchas(
            out_dir / IMAGES_DIR, self.count, seed=self.seed, width=self.width, height=self.height,
            length=self.length, workers=self.workers,
            progress=lambda done, total: self.report_progress(done, total, f"captcha {done}/{total}"),
        )
        write_labels_csv(out_dir / LABELS_CSV_FILE, rows)
        return {"records": {"all": len(rows)}, "captcha_version": getattr(captcha, "__version__", "unknown")}


def load_image(path: Path, grayscale: bool) -> np.ndarray:
    """Decode one image file to uint8 HxWxC; anything unreadable raises FormatError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        # Captchas are PNG files (GenerateCaptchas writes PNG; a user's folder holds ``<index>.png``): no other
        # decoder is offered the bytes, so a file that is not a PNG is refused as such.
        with Image.open(path, formats=("PNG",)) as image:
            image.load()
            converted = image.convert("L" if grayscale else "RGB")
    except Image.DecompressionBombError as error:  # not an OSError: a header declaring billions of pixels
        raise FormatError(f"image too large to decode safely ({error})", path=path) from error
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise FormatError(f"cannot decode image ({error})", path=path) from error
    array = np.asarray(converted, dtype=np.uint8)
    return array[..., None] if grayscale else array


class DecodeCaptcha(ArtifactTask):
    """Captcha folder (``labels.csv`` + ``<index>.png``) -> arrays; train and test split by ``test_fraction``.

    Reads one source (``data``): the folder ``GenerateCaptchas`` made, or the user's folder.
    """

    stage = "decode"
    version = 2
    reads = (RAW_DATA,)
    provides = "decoded"

    grayscale = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    length = luigi.IntParameter(default=4)
    test_fraction = luigi.FloatParameter(default=0.1)

    def source_folder(self) -> tuple[Path, Path]:
        required = self.requires()[RAW_DATA]
        if isinstance(required, GenerateCaptchas):
            if required.length != self.length:
                raise ValueError(f"DecodeCaptcha.length={self.length} but the generated captchas have "
                                 f"{required.length} letters; set GenerateCaptchas.length too")
            folder = required.local_artifact()
            return folder / LABELS_CSV_FILE, folder / IMAGES_DIR
        if not isinstance(required, Download):
            raise ValueError(f"DecodeCaptcha reads a captcha folder, not the output of {required.task_family}")
        root = downloaded_path(required)
        if not root.is_dir():
            raise ValueError(f"{root}: a captcha source must be a folder with labels.csv and <index>.png files")
        images = root / IMAGES_DIR if (root / IMAGES_DIR).is_dir() else root
        return root / LABELS_CSV_FILE, images

    def build(self, out_dir: Path) -> dict[str, Any]:
        labels_csv, image_dir = self.source_folder()
        rows = read_labels_csv(labels_csv, alphabet=ALPHABET, length=self.length)
        if not rows:
            raise FormatError("no captchas listed", path=labels_csv)
        first = load_image(image_dir / f"{rows[0][0]}.png", self.grayscale)
        shape = first.shape
        split_of = {index: "test" if stable_unit(str(index), "captcha-test") < self.test_fraction else "train"
                    for index, _ in rows}
        counts = {}
        for split in ("train", "test"):
            chosen = [(i, text) for i, text in rows if split_of[i] == split]
            with open_split_writer(out_dir, split, shape, num_heads=self.length) as writer:
                for start in range(0, len(chosen), 512):
                    part = chosen[start:start + 512]
                    images = np.stack([self._checked_image(image_dir / f"{i}.png", shape) for i, _ in part])
                    labels = np.array([[ALPHABET.index(ch) for ch in text] for _, text in part], dtype=np.int32)
                    writer.append(image=images, label=labels, key=encode_keys([f"captcha/{i}" for i, _ in part]))
                    self.report_progress(start + len(part), len(chosen), f"{split} {start + len(part)}")
            counts[split] = writer.rows
        save_class_names(out_dir, list(ALPHABET))
        DatasetInfo("captcha", tuple(shape), len(ALPHABET), self.length,
                    {split: SplitInfo(count) for split, count in counts.items()}).save(out_dir)
        return {"records": counts}

    def _checked_image(self, path: Path, shape: tuple[int, ...]) -> np.ndarray:
        image = load_image(path, self.grayscale)
        if image.shape != shape:
            raise FormatError(f"image of shape {image.shape}, the set's first image is {shape}", path=path)
        return image
