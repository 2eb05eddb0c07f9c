"""Image folders record each image's original (height, width): from the one decode already done, before the
reduced JPEG decode, upright; carried through the thread pool in input order and written by DecodeImages."""

from __future__ import annotations

from pathlib import Path

import luigi
import numpy as np
import pytest
from PIL import Image, ImageOps

from pipelines.registry import get_dataset
from pipelines.stages import decode_task
from tasks.datasets.images.folder import decode_images, original_size
from tasks.formats.examples import load_original_sizes, load_split
from tests.fakes.images import photo_like, save_image, write_awkward_images, write_exif_rotated_jpeg

# relpath -> (height, width) as the file stores it; tall, wide, square, tiny and a JPEG large enough that the
# decode reads it at 1/8 scale (Image.draft) for the small sizes asked below.
SIZED_FILES = {
    "bikes/wide.png": (30, 40),
    "bikes/square.jpg": (64, 64),
    "bikes/tall.png": (90, 17),
    "bikes/tiny.jpg": (3, 2),
    "cars/large.jpg": (300, 400),
    "cars/tall.jpg": (200, 56),
    "cars/wide.bmp": (17, 90),
}
FORMAT_OF_SUFFIX = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP"}
EXIF_ROTATED = "cars/rotated.jpg"  # stored 40 wide and 60 tall, Orientation 6: upright 40 tall and 60 wide
UPRIGHT_SIZE_OF_ROTATED = (40, 60)
# write_awkward_images' readable files: JPEG (EXIF-rotated, CMYK, gray), 16-bit PNGs, GIF, alpha, palette, WebP, BMP
AWKWARD_IMAGES = ["exif_rotated", "cmyk", "gray_jpeg", "gray16", "rgb16", "gif_frames", "rgba", "la",
                  "palette_transparent", "webp", "bmp"]


@pytest.fixture(scope="module")
def sized_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sized")
    rng = np.random.default_rng(4)
    for relpath, (height, width) in SIZED_FILES.items():
        save_image(photo_like(rng, width, height, shapes=1), root / relpath, FORMAT_OF_SUFFIX[Path(relpath).suffix])
    write_exif_rotated_jpeg(root / EXIF_ROTATED)
    return root


def expected_sizes() -> dict[str, tuple[int, int]]:
    return {**SIZED_FILES, EXIF_ROTATED: UPRIGHT_SIZE_OF_ROTATED}


def upright_size_by_full_decode(path: Path) -> tuple[int, int]:
    """(height, width) of ``path`` decoded whole by Pillow and turned upright: the reference."""
    with Image.open(path) as image:
        upright = ImageOps.exif_transpose(image)
        assert upright is not None
        return upright.height, upright.width


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("fit", ["pad", "crop"])
def test_decode_images_gives_each_original_size_in_input_order(sized_folder: Path, workers: int, fit: str) -> None:
    relpaths = sorted(expected_sizes())
    paths = [sized_folder / relpath for relpath in relpaths] * 3  # 24 images: two pool jobs of 16
    results = list(decode_images(paths, channels=3, size=16, fit=fit, workers=workers))
    assert [r.index for r in results] == list(range(len(paths)))
    assert [r.original_size for r in results] == [expected_sizes()[relpath] for relpath in relpaths] * 3
    assert all(r.image is not None and r.image.shape == (16, 16, 3) for r in results)


def test_the_large_jpeg_is_read_reduced_yet_keeps_its_full_size(sized_folder: Path) -> None:
    with Image.open(sized_folder / "cars/large.jpg") as image:
        image.draft("RGB", (16, 12))
        assert image.size == (50, 38)  # what a size taken after the reduced decode would say
    [result] = decode_images([sized_folder / "cars/large.jpg"], channels=1, size=16)
    assert result.original_size == (300, 400)


def test_every_awkward_format_records_what_a_full_decode_sees(tmp_path: Path) -> None:
    written = write_awkward_images(tmp_path)
    readable = {name: written[name] for name in AWKWARD_IMAGES}
    results = list(decode_images(list(readable.values()), channels=3, size=8))
    for (name, path), result in zip(readable.items(), results, strict=True):
        assert result.original_size == upright_size_by_full_decode(path), name


def test_a_skipped_image_has_no_size(sized_folder: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    results = list(decode_images([sized_folder / "bikes/wide.png", broken], channels=3, size=8, on_error="skip"))
    assert [r.original_size for r in results] == [(30, 40), None]
    assert results[1].error is not None


@pytest.mark.parametrize("orientation,expected", [(1, (3, 5)), (2, (3, 5)), (3, (3, 5)), (4, (3, 5)),
                                                  (5, (5, 3)), (6, (5, 3)), (7, (5, 3)), (8, (5, 3)), (0, (3, 5))])
def test_quarter_turn_orientations_swap_height_and_width(orientation: int, expected: tuple[int, int]) -> None:
    assert original_size(3, 5, orientation) == expected


def test_decode_images_task_writes_the_sizes_beside_their_images(sized_folder: Path, tmp_path: Path,
                                                                 luigi_config: object) -> None:
    task = decode_task(get_dataset("images"), source=str(sized_folder), image_size=16, test_fraction=0.4,
                       min_images_per_class=1)
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    decoded = task.artifact_dir
    recorded: dict[str, tuple[int, int]] = {}
    for split in ("train", "test"):
        sizes = load_original_sizes(decoded, split)
        keys = load_split(decoded, split)["key"]
        assert sizes is not None and sizes.dtype == np.int32 and sizes.shape == (len(keys), 2)
        recorded.update({key.decode(): (int(h), int(w)) for key, (h, w) in zip(keys, sizes, strict=True)})
    assert recorded == expected_sizes()
