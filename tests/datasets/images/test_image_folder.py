"""Class-per-folder image directories: junk rules, scanning, decoding every awkward format, threaded decode."""

from __future__ import annotations

import io
import os
import threading
import time
import unicodedata
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

import tasks.datasets.images.folder as image_folder
from tasks.datasets.images.folder import (
    ALPHA_BACKGROUND,
    decode_images,
    junk_reason,
    load_image,
    scan_class_folders,
)
from tasks.formats.errors import FormatError
from tests.fakes.images import (
    GIF_FRAME_COLOURS,
    UPRIGHT_BOTTOM,
    UPRIGHT_MARK,
    UPRIGHT_TOP,
    break_png_crc,
    photo_like,
    save_image,
    write_awkward_images,
    write_class_folder,
)

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
BEANS = FIXTURES / "imagefolder_hf_beans_dummy" / "train"
CATS_VS_DOGS = FIXTURES / "imagefolder_hf_cats_vs_dogs_dummy"
AWKWARD_IMAGES = ["exif_rotated", "cmyk", "gray_jpeg", "gray16", "rgb16", "gif_frames", "rgba", "la",
                  "palette_transparent", "webp", "bmp"]
CORRUPT_FILES = ["truncated_jpeg", "zero_bytes", "random_png", "random_jpg", "bad_crc_png"]


def needs_fixture(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"shared fixture {path} not present (only on the development machine)")


@pytest.fixture(scope="module")
def awkward(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_awkward_images(tmp_path_factory.mktemp("awkward"))


def write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")
    return path


def touch_jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(np.full((8, 8, 3), 128, np.uint8), path, "JPEG")
    return path


# ---- junk rules ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "relpath,reason",
    [
        (".DS_Store", "macOS folder metadata"),
        ("roses/.DS_Store", "macOS folder metadata"),
        ("roses/Thumbs.db", "Windows thumbnail cache"),
        ("roses/THUMBS.DB", "Windows thumbnail cache"),
        ("roses/desktop.ini", "Windows folder settings"),
        ("__MACOSX/roses/._1.jpg", "macOS archive metadata"),
        ("__MACOSX/roses/1.jpg", "macOS archive metadata"),
        ("roses/._1.jpg", "macOS AppleDouble"),
        ("roses/.hidden.jpg", "hidden file"),
        (".git/objects/1.jpg", "in a hidden folder"),
        ("roses/.thumbs/1.jpg", "in a hidden folder"),
        ("roses/notes.txt", "not an image extension '.txt'"),
        ("LICENSE.txt", "not an image extension '.txt'"),
        ("roses/1.jpg.part", "not an image extension '.part'"),
        ("roses/README", "no file extension"),
    ],
)
def test_junk_files_get_a_reason(relpath: str, reason: str) -> None:
    got = junk_reason(relpath)
    assert got is not None and got.startswith(reason), got


@pytest.mark.parametrize("name", ["1.jpg", "1.JPG", "a.jpeg", "a.jpe", "a.png", "a.PNG", "a.bmp", "a.gif",
                                  "a.webp", "a.tif", "a.TIFF", "sub/deeper/a.jpg", "a.b.jpg"])
def test_image_extensions_are_not_junk(name: str) -> None:
    assert junk_reason(f"roses/{name}") is None


# ---- scanning --------------------------------------------------------------------------------------------
def test_awkward_folder_scan_skips_junk_with_reasons(awkward: dict[str, Path]) -> None:
    root = awkward["ds_store"].parent
    scan = scan_class_folders(root)
    assert scan.root == root
    assert scan.classes == ["awkward", "corrupt"]
    assert scan.counts == {"awkward": len(AWKWARD_IMAGES), "corrupt": len(CORRUPT_FILES)}
    assert sorted(e.path for e in scan.images) == sorted(awkward[n] for n in AWKWARD_IMAGES + CORRUPT_FILES)
    reasons = dict(scan.junk)
    assert set(reasons) == {".DS_Store", "__MACOSX/roses/._1.jpg", "awkward/Thumbs.db", "awkward/desktop.ini",
                            "awkward/notes.txt", "awkward/.hidden.jpg", "awkward/._photo.bmp"}
    assert reasons["awkward/notes.txt"] == "not an image extension '.txt'"
    assert reasons["awkward/.hidden.jpg"] == "hidden file"
    assert reasons["__MACOSX/roses/._1.jpg"].startswith("macOS archive metadata")
    assert reasons["awkward/._photo.bmp"].startswith("macOS AppleDouble")
    assert all((scan.root / relpath).is_file() for relpath in reasons)


def test_unicode_class_names_are_kept_and_sorted_by_code_point(tmp_path: Path) -> None:
    decomposed = unicodedata.normalize("NFD", "café")  # as macOS writes it: "e" + combining acute
    write_class_folder(tmp_path, {"花": 2, "café": 1, decomposed: 1, "Zebra": 1, "apple": 3}, size=(16, 12))
    scan = scan_class_folders(tmp_path)
    assert scan.classes == sorted(["花", "café", decomposed, "Zebra", "apple"])
    assert scan.classes[:2] == ["Zebra", "apple"]  # code points: upper case first
    assert "café" in scan.classes and decomposed in scan.classes  # two folders on disk, two classes, unnormalised
    assert scan.counts == {"Zebra": 1, "apple": 3, "café": 1, decomposed: 1, "花": 2}
    assert [e.relpath for e in scan.images if e.class_name == "花"] == ["花/0000.jpg", "花/0001.jpg"]


def test_nested_images_belong_to_their_class_folder_and_images_are_sorted(tmp_path: Path) -> None:
    for relpath in ["roses/b.jpg", "roses/sub/deeper/x.jpg", "roses/a.jpg", "tulips/2019/t.jpg", "daisy/d.jpg"]:
        touch_jpeg(tmp_path / relpath)
    scan = scan_class_folders(tmp_path)
    assert scan.classes == ["daisy", "roses", "tulips"]
    assert [(e.relpath, e.class_name) for e in scan.images] == [
        ("daisy/d.jpg", "daisy"),
        ("roses/a.jpg", "roses"),
        ("roses/b.jpg", "roses"),
        ("roses/sub/deeper/x.jpg", "roses"),
        ("tulips/2019/t.jpg", "tulips"),
    ]
    assert all(e.path == tmp_path / e.relpath for e in scan.images)
    assert scan.counts == {"daisy": 1, "roses": 3, "tulips": 1}


def test_files_directly_in_the_root_are_junk_and_empty_class_folders_count_zero(tmp_path: Path) -> None:
    touch_jpeg(tmp_path / "stray.jpg")
    touch_jpeg(tmp_path / "roses" / "1.jpg")
    (tmp_path / "tulips").mkdir()
    (tmp_path / "LICENSE.txt").write_text("CC-BY")
    scan = scan_class_folders(tmp_path)
    assert scan.classes == ["roses", "tulips"]
    assert scan.counts == {"roses": 1, "tulips": 0}
    assert scan.junk == [("LICENSE.txt", "not an image extension '.txt'"), ("stray.jpg", "not in a class folder")]


def test_a_flower_photos_wrapper_folder_is_descended(tmp_path: Path) -> None:
    wrapper = tmp_path / "flower_photos"
    write_class_folder(wrapper, {"daisy": 2, "roses": 1}, size=(16, 12))
    (wrapper / "LICENSE.txt").write_text("All images in this archive are licensed under the Creative Commons")
    (tmp_path / "__MACOSX" / "flower_photos").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "flower_photos" / "._LICENSE.txt").write_bytes(b"\x00\x05\x16\x07")
    (tmp_path / ".DS_Store").write_bytes(b"Bud1")
    scan = scan_class_folders(tmp_path)
    assert scan.root == wrapper
    assert scan.classes == ["daisy", "roses"]
    assert [e.relpath for e in scan.images] == ["daisy/0000.jpg", "daisy/0001.jpg", "roses/0000.jpg"]
    assert dict(scan.junk) == {
        "LICENSE.txt": "not an image extension '.txt'",
        "../__MACOSX/flower_photos/._LICENSE.txt": "macOS archive metadata (__MACOSX/)",
        "../.DS_Store": "macOS folder metadata (.DS_Store)",
    }
    assert all((scan.root / relpath).resolve().is_file() for relpath, _ in scan.junk)


def test_a_single_class_folder_holding_images_is_not_descended(tmp_path: Path) -> None:
    touch_jpeg(tmp_path / "roses" / "1.jpg")
    touch_jpeg(tmp_path / "roses" / "sub" / "2.jpg")
    scan = scan_class_folders(tmp_path)
    assert scan.root == tmp_path
    assert scan.classes == ["roses"] and scan.counts == {"roses": 2}


def test_no_class_folders_is_an_error_naming_the_root_and_its_contents(tmp_path: Path) -> None:
    touch_jpeg(tmp_path / "a.jpg")
    (tmp_path / ".hidden").mkdir()
    with pytest.raises(ValueError, match="no class folders") as error:
        scan_class_folders(tmp_path)
    assert str(tmp_path) in str(error.value) and "a.jpg" in str(error.value) and ".hidden/" in str(error.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="it is empty"):
        scan_class_folders(empty)
    with pytest.raises(ValueError, match="not a folder"):
        scan_class_folders(tmp_path / "a.jpg")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links on this platform")
def test_symlinked_folders_are_junk_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    touch_jpeg(outside / "secret.jpg")
    root = tmp_path / "data"
    touch_jpeg(root / "roses" / "1.jpg")
    touch_jpeg(root / "tulips" / "1.jpg")
    (root / "linked_class").symlink_to(outside, target_is_directory=True)
    (root / "roses" / "more").symlink_to(outside, target_is_directory=True)
    (root / "roses" / "loop").symlink_to(root, target_is_directory=True)
    (root / "roses" / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (root / "tulips" / "alias.jpg").symlink_to(root / "tulips" / "1.jpg")  # a link to a file is read
    scan = scan_class_folders(root)
    assert scan.classes == ["roses", "tulips"]
    assert [e.relpath for e in scan.images] == ["roses/1.jpg", "tulips/1.jpg", "tulips/alias.jpg"]
    assert dict(scan.junk) == {
        "linked_class": "symbolic link to a folder (not followed)",
        "roses/more": "symbolic link to a folder (not followed)",
        "roses/loop": "symbolic link to a folder (not followed)",
        "roses/gone.jpg": "broken symbolic link",
    }


@pytest.mark.skipif(os.name != "posix" or os.uname().sysname == "Darwin", reason="needs byte file names")
def test_names_that_are_not_utf8_are_junk_or_refused(tmp_path: Path) -> None:
    touch_jpeg(tmp_path / "roses" / "1.jpg")
    touch_jpeg(Path(os.fsdecode(os.fsencode(tmp_path / "roses") + b"/caf\xe9.jpg")))  # Latin-1 bytes
    scan = scan_class_folders(tmp_path)
    assert [e.relpath for e in scan.images] == ["roses/1.jpg"]
    assert [reason for _, reason in scan.junk] == ["file name is not valid UTF-8"]
    Path(os.fsdecode(os.fsencode(tmp_path) + b"/\xe9t\xe9")).mkdir()
    with pytest.raises(ValueError, match="not valid UTF-8"):
        scan_class_folders(tmp_path)


# ---- decoding awkward images -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", AWKWARD_IMAGES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("fit", ["pad", "crop"])
def test_every_awkward_image_loads_to_the_asked_shape(awkward: dict[str, Path], name: str, channels: int,
                                                      fit: str) -> None:
    image = load_image(awkward[name], channels=channels, size=24, fit=fit)
    assert image.shape == (24, 24, channels) and image.dtype == np.uint8


def close(pixel: np.ndarray, expected: tuple[int, ...], tolerance: int = 12) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(expected)) <= tolerance))


def test_exif_orientation_is_applied(awkward: dict[str, Path]) -> None:
    with Image.open(awkward["exif_rotated"]) as stored:
        assert stored.size == (40, 60)  # stored turned: 40 wide, 60 tall
    image = load_image(awkward["exif_rotated"], channels=3, size=60, fit="pad")  # upright 60x40: rows 10..49
    assert close(image[12, 40], UPRIGHT_TOP)
    assert close(image[45, 30], UPRIGHT_BOTTOM)
    assert close(image[13, 5], UPRIGHT_MARK)  # the mark is top-left once upright
    assert (image[:9] == 0).all() and (image[51:] == 0).all()  # padding above and below: it is wide again


def test_cmyk_jpeg_converts_to_rgb(awkward: dict[str, Path]) -> None:
    image = load_image(awkward["cmyk"], channels=3, size=16, fit="crop")
    assert close(image.reshape(-1, 3).mean(axis=0), (0, 255, 255), 3)  # cyan, not inverted


def test_sixteen_bit_gray_png_keeps_the_high_byte(awkward: dict[str, Path]) -> None:
    with Image.open(awkward["gray16"]) as raw:
        assert raw.mode == "I;16"
    image = load_image(awkward["gray16"], channels=1, size=30, fit="pad")[:, 5:25, 0]  # 20 wide, padded
    assert (image[:10] == 128).all()  # 0x8000
    assert (image[10:20] == 18).all()  # 0x1234: clipping would give 255
    assert (image[20:] == 255).all()  # 0xFFFF


def test_sixteen_bit_rgb_png_keeps_the_high_byte(awkward: dict[str, Path]) -> None:
    image = load_image(awkward["rgb16"], channels=3, size=20, fit="crop")
    assert (image.reshape(-1, 3) == (128, 64, 255)).all()


def test_gif_gives_its_first_frame(awkward: dict[str, Path]) -> None:
    with Image.open(awkward["gif_frames"]) as gif:
        assert gif.n_frames == len(GIF_FRAME_COLOURS)
    image = load_image(awkward["gif_frames"], channels=3, size=16, fit="crop")
    assert (image.reshape(-1, 3) == GIF_FRAME_COLOURS[0]).all()


def test_alpha_is_composited_onto_white(awkward: dict[str, Path]) -> None:
    assert ALPHA_BACKGROUND == 255
    rgba = load_image(awkward["rgba"], channels=3, size=40, fit="crop")
    assert (rgba[:30, :20] == (255, 0, 0)).all()
    assert (rgba[:30, 20:] == (255, 255, 255)).all()  # green under alpha 0 is not seen
    assert (rgba[30:] == (127, 127, 255)).all()  # blue at alpha 128
    la = load_image(awkward["la"], channels=1, size=30, fit="crop")
    assert (la[:, :15] == 100).all() and (la[:, 15:] == 255).all()
    palette = load_image(awkward["palette_transparent"], channels=3, size=20, fit="crop")
    assert (palette[:, :10] == 255).all() and (palette[:, 10:] == (0, 0, 255)).all()


def test_gray_and_colour_convert_both_ways(awkward: dict[str, Path]) -> None:
    gray_as_rgb = load_image(awkward["gray_jpeg"], channels=3, size=16, fit="crop")
    assert (gray_as_rgb[..., 0] == gray_as_rgb[..., 2]).all() and close(gray_as_rgb[8, 8], (77, 77, 77), 2)
    bmp_gray = load_image(awkward["bmp"], channels=1, size=32, fit="crop")
    with Image.open(awkward["bmp"]) as bmp:
        luma = np.asarray(bmp.convert("L"))[:, 8:40]  # PIL's own luma of the same centre square
    assert np.abs(bmp_gray[:, :, 0].astype(int) - luma).max() <= 1


def test_webp_and_bmp_decode_to_their_pixels(awkward: dict[str, Path]) -> None:
    webp = load_image(awkward["webp"], channels=3, size=48, fit="pad")
    bmp = load_image(awkward["bmp"], channels=3, size=48, fit="pad")
    np.testing.assert_array_equal(webp, bmp)  # the same photo, lossless WebP
    with Image.open(awkward["bmp"]) as original:
        np.testing.assert_array_equal(bmp[8:40], np.asarray(original))  # 48x32 padded to 48x48, no resize


def test_a_tiff_loads(tmp_path: Path) -> None:
    pixels = photo_like(np.random.default_rng(3), 30, 20)
    save_image(pixels, tmp_path / "a.tif", "TIFF")
    np.testing.assert_array_equal(load_image(tmp_path / "a.tif", channels=3, size=30)[5:25], pixels)


def test_load_truncated_images_is_left_false() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_load_truncated_images_set_by_other_code_is_refused(awkward: dict[str, Path],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        load_image(awkward["truncated_jpeg"], channels=3, size=16)


# ---- geometry --------------------------------------------------------------------------------------------
def halves(width: int, height: int) -> np.ndarray:
    """Red left half, blue right half (or top/bottom when tall)."""
    image = np.zeros((height, width, 3), np.uint8)
    if width >= height:
        image[:, : width // 2], image[:, width // 2 :] = (255, 0, 0), (0, 0, 255)
    else:
        image[: height // 2], image[height // 2 :] = (255, 0, 0), (0, 0, 255)
    return image


def test_pad_keeps_the_whole_image_centred(tmp_path: Path) -> None:
    path = write_png(tmp_path / "wide.png", halves(100, 50))
    image = load_image(path, channels=3, size=50, fit="pad", pad_value=7)
    assert (image[:12] == 7).all() and (image[38:] == 7).all()  # 50x25 content in rows 12..36
    assert (image[12:37, :25] == (255, 0, 0)).all() and (image[12:37, 25:] == (0, 0, 255)).all()
    tall = load_image(write_png(tmp_path / "tall.png", halves(40, 80)), channels=3, size=40, fit="pad")
    assert (tall[:, :10] == 0).all() and (tall[:, 30:] == 0).all()
    assert (tall[:20, 10:30] == (255, 0, 0)).all() and (tall[20:, 10:30] == (0, 0, 255)).all()


def test_crop_fills_the_square_from_the_centre(tmp_path: Path) -> None:
    image = np.zeros((50, 100, 3), np.uint8)
    image[:, 25:75] = (0, 255, 0)  # the centre square is green, the sides black
    out = load_image(write_png(tmp_path / "wide.png", image), channels=3, size=25, fit="crop")
    assert (out == (0, 255, 0)).all()
    tall = np.zeros((90, 30, 3), np.uint8)
    tall[30:60] = (0, 0, 255)
    out = load_image(write_png(tmp_path / "tall.png", tall), channels=3, size=60, fit="crop")  # upscaled 2x
    assert (out[5:55] == (0, 0, 255)).all()


def test_small_images_are_upscaled(tmp_path: Path) -> None:
    out = load_image(write_png(tmp_path / "s.png", halves(8, 8)), channels=3, size=64, fit="pad")
    assert out.shape == (64, 64, 3)
    assert (out[:, :28] == (255, 0, 0)).all() and (out[:, 36:] == (0, 0, 255)).all()


@pytest.mark.parametrize("fit", ["pad", "crop"])
@pytest.mark.parametrize("width,height", [(500, 375), (800, 600), (447, 447), (1200, 300)])
def test_reduced_jpeg_decode_matches_a_full_decode(tmp_path: Path, fit: str, width: int, height: int) -> None:
    """The DCT-domain reduction never goes below the fitted size, so the result stays close to a full decode."""
    path = tmp_path / "photo.jpg"
    save_image(photo_like(np.random.default_rng(width), width, height), path, "JPEG", quality=90)
    got = load_image(path, channels=3, size=224, fit=fit).astype(float)
    with Image.open(path) as full:
        pixels = np.asarray(full.convert("RGB"))
    if fit == "crop":
        side = min(width, height)
        top, left = (height - side) // 2, (width - side) // 2
        reference = cv2.resize(pixels[top : top + side, left : left + side], (224, 224), interpolation=cv2.INTER_AREA)
        assert np.abs(got - reference).mean() < 4
    else:
        scale = 224 / max(width, height)
        w, h = round(width * scale), round(height * scale)
        reference = cv2.resize(pixels, (w, h), interpolation=cv2.INTER_AREA)
        top, left = (224 - h) // 2, (224 - w) // 2
        assert np.abs(got[top : top + h, left : left + w] - reference).mean() < 4


def test_a_gray_decode_of_a_colour_jpeg_is_its_luma(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    save_image(photo_like(np.random.default_rng(5), 500, 375), path, "JPEG", quality=90)
    gray = load_image(path, channels=1, size=224, fit="pad")[:, :, 0].astype(float)
    rgb = load_image(path, channels=3, size=224, fit="pad")
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(float)
    assert np.abs(gray - luma)[28:196].mean() < 2


@pytest.mark.parametrize(
    "options,match",
    [
        ({"channels": 2, "size": 8}, "channels"),
        ({"channels": 3, "size": 0}, "size"),
        ({"channels": 3, "size": 8, "fit": "stretch"}, "fit"),
        ({"channels": 3, "size": 8, "pad_value": 256}, "pad_value"),
    ],
)
def test_bad_options_are_refused(awkward: dict[str, Path], options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_image(awkward["bmp"], **options)


# ---- corrupt files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,reason",
    [
        ("truncated_jpeg", "truncated"),
        ("zero_bytes", "empty file"),
        ("random_png", "not an image"),
        ("random_jpg", "not an image"),
        ("bad_crc_png", "bad CRC"),
    ],
)
def test_corrupt_files_raise_format_error_naming_the_file(awkward: dict[str, Path], name: str, reason: str) -> None:
    with pytest.raises(FormatError, match=reason) as error:
        load_image(awkward[name], channels=3, size=16)
    assert error.value.path == str(awkward[name])
    assert str(awkward[name]) in str(error.value)


def test_pillow_alone_would_accept_the_bad_crc_png(awkward: dict[str, Path]) -> None:
    """Why load_image checks PNG CRCs itself: Pillow skips the CRC of image data."""
    with Image.open(awkward["bad_crc_png"]) as image:
        image.load()


@pytest.mark.parametrize("cut", [12, 200, -12, -1])
def test_cut_pngs_raise_format_error(tmp_path: Path, cut: int) -> None:
    buffer = io.BytesIO()
    Image.fromarray(photo_like(np.random.default_rng(1), 60, 40)).save(buffer, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[:cut])
    with pytest.raises(FormatError, match="truncated") as error:
        load_image(path, channels=3, size=16)
    assert error.value.path == str(path)


def test_a_bad_header_crc_is_caught(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, format="PNG")
    path = tmp_path / "ihdr.png"
    path.write_bytes(break_png_crc(buffer.getvalue(), b"IHDR"))
    with pytest.raises(FormatError, match="'IHDR' has a bad CRC"):
        load_image(path, channels=3, size=4)


def test_a_jpeg_missing_only_its_end_marker_is_truncated(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(photo_like(np.random.default_rng(2), 120, 90)).save(buffer, format="JPEG", quality=90)
    path = tmp_path / "no_eoi.jpg"
    path.write_bytes(buffer.getvalue()[:-2])
    with pytest.raises(FormatError, match="truncated"):
        load_image(path, channels=3, size=32)


def test_a_decompression_bomb_is_a_format_error(awkward: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # bmp is 48x32 = 1536 pixels > 2 * 100
    with pytest.raises(FormatError, match="too large to decode safely") as error:
        load_image(awkward["bmp"], channels=3, size=16)
    assert error.value.path == str(awkward["bmp"])


def test_a_file_in_an_unsupported_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "picture.jpg"
    Image.new("RGB", (8, 8)).save(path, format="PPM")  # Pillow reads PPM, but it is not an allowed format
    with pytest.raises(FormatError, match="supported format"):
        load_image(path, channels=3, size=8)


def test_a_missing_file_is_not_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.jpg", channels=3, size=8)


# ---- decode_images ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def many_images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("many")
    written = write_class_folder(root, {"a": 45, "b": 45, "c": 40}, size=(40, 30), seed=3)
    return [path for paths in written.values() for path in paths]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_decode_images_yields_every_image_in_input_order(many_images: list[Path], workers: int) -> None:
    results = list(decode_images(many_images, channels=3, size=32, fit="crop", workers=workers))
    assert [r.index for r in results] == list(range(len(many_images)))
    assert all(r.error is None for r in results)
    for result, path in zip(results, many_images, strict=True):
        np.testing.assert_array_equal(result.image, load_image(path, channels=3, size=32, fit="crop"))


def test_decode_images_of_nothing_is_nothing() -> None:
    assert list(decode_images([], channels=3, size=8)) == []


def with_bad_files(many_images: list[Path], awkward: dict[str, Path]) -> tuple[list[Path], dict[int, Path]]:
    paths = list(many_images[:80])
    bad = {5: awkward["truncated_jpeg"], 40: awkward["zero_bytes"], 41: awkward["bad_crc_png"],
           79: awkward["random_png"]}
    for index, path in bad.items():
        paths[index] = path
    return paths, bad


@pytest.mark.parametrize("workers", [1, 2])
def test_skip_policy_returns_bad_files_with_their_error(many_images: list[Path], awkward: dict[str, Path],
                                                        workers: int) -> None:
    paths, bad = with_bad_files(many_images, awkward)
    results = list(decode_images(paths, channels=1, size=16, fit="pad", workers=workers, on_error="skip"))
    assert [r.index for r in results] == list(range(len(paths)))
    for result in results:
        if result.index in bad:
            assert result.image is None and str(bad[result.index]) in result.error
        else:
            assert result.error is None and result.image.shape == (16, 16, 1)


@pytest.mark.parametrize("workers", [1, 2])
def test_fail_policy_raises_the_first_bad_file_after_the_good_ones_before_it(
        many_images: list[Path], awkward: dict[str, Path], workers: int) -> None:
    paths, bad = with_bad_files(many_images, awkward)
    paths[5] = many_images[5]  # first bad file now at index 40, in the third job
    seen = []
    with pytest.raises(FormatError, match="empty file") as error:
        for result in decode_images(paths, channels=3, size=16, workers=workers):
            seen.append(result.index)
    assert seen == list(range(40))
    assert error.value.path == str(bad[40])


def test_decode_images_keeps_few_jobs_in_flight(many_images: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    started = []
    lock = threading.Lock()
    real_job = image_folder._decode_job

    def counting_job(paths, start, stop, *options):  # noqa: ANN001, ANN202
        with lock:
            started.append(start)
        return real_job(paths, start, stop, *options)

    monkeypatch.setattr(image_folder, "_decode_job", counting_job)
    paths = many_images * 4  # 520 images, 33 jobs
    results = decode_images(paths, channels=3, size=8, workers=2)
    next(results)
    time.sleep(0.3)  # time enough to run ahead, if it would
    limit = 2 * image_folder.JOBS_PER_WORKER + 1
    assert len(started) <= limit
    results.close()  # abandoning the iterator cancels what is queued
    assert len(started) <= limit + 2


@pytest.mark.parametrize(
    "options,match",
    [({"on_error": "ignore"}, "on_error"), ({"workers": 0}, "workers"), ({"fit": "fill"}, "fit")],
)
def test_decode_images_refuses_bad_options(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decode_images([], channels=3, size=8, **options)  # at the call, not at the first next()


# ---- fakes -----------------------------------------------------------------------------------------------
def test_fake_classes_are_told_apart_by_a_nearest_centroid(tmp_path: Path) -> None:
    """A much weaker learner than a small CNN already separates write_class_folder's classes."""
    written = write_class_folder(tmp_path, {f"class{i}": 12 for i in range(6)}, size=(48, 36), seed=1)
    features = {name: np.stack([load_image(p, channels=3, size=12, fit="crop").ravel() / 255 for p in paths])
                for name, paths in written.items()}
    centroids = np.stack([f[:6].mean(axis=0) for f in features.values()])
    right = 0
    for label, f in enumerate(features.values()):
        distances = ((f[6:, None, :] - centroids[None]) ** 2).sum(axis=2)
        right += int((distances.argmin(axis=1) == label).sum())
    assert right / (6 * 6) >= 0.9


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "GIF", "WEBP"])
def test_fake_class_folders_in_other_formats_scan_and_load(tmp_path: Path, fmt: str) -> None:
    write_class_folder(tmp_path, {"x": 2, "y": 1}, size=(20, 10), fmt=fmt)
    scan = scan_class_folders(tmp_path)
    assert scan.counts == {"x": 2, "y": 1}
    for result in decode_images([e.path for e in scan.images], channels=3, size=10):
        assert result.image.shape == (10, 10, 3)


# ---- real-format fixtures --------------------------------------------------------------------------------
def test_hf_beans_dummy_scans_and_decodes() -> None:
    needs_fixture(BEANS)
    scan = scan_class_folders(BEANS)
    assert scan.classes == ["angular_leaf_spot", "bean_rust", "healthy"]
    assert scan.counts == {"angular_leaf_spot": 2, "bean_rust": 2, "healthy": 2}
    assert scan.junk == [(".DS_Store", "macOS folder metadata (.DS_Store)")]
    assert scan_class_folders(BEANS.parent).root == BEANS  # beans/ only wraps train/
    for fit in ("pad", "crop"):
        results = list(decode_images([e.path for e in scan.images], channels=3, size=224, fit=fit))
        assert all(r.image.shape == (224, 224, 3) and r.image.std() > 10 for r in results)


def test_hf_cats_vs_dogs_dummy_descends_past_dummy_data_and_macosx() -> None:
    needs_fixture(CATS_VS_DOGS)
    scan = scan_class_folders(CATS_VS_DOGS / "extracted")
    assert scan.root == CATS_VS_DOGS / "extracted" / "dummy_data" / "PetImages"
    assert scan.classes == ["Cat", "Dog"]
    assert scan.counts == {"Cat": 5, "Dog": 5}
    assert [e.relpath for e in scan.images][:2] == ["Cat/1.jpg", "Cat/2.jpg"]
    assert dict(scan.junk) == {
        "../../__MACOSX/._dummy_data": "macOS archive metadata (__MACOSX/)",
        "../../__MACOSX/dummy_data/._.DS_Store": "macOS archive metadata (__MACOSX/)",
        "../.DS_Store": "macOS folder metadata (.DS_Store)",
    }
    for channels in (1, 3):
        results = list(decode_images([e.path for e in scan.images], channels=channels, size=96, fit="pad"))
        assert all(r.image.shape == (96, 96, channels) and r.image.std() > 10 for r in results)


def test_hf_cats_vs_dogs_exif_only_and_app13_jpegs_match_pillow() -> None:
    needs_fixture(CATS_VS_DOGS)
    dogs = CATS_VS_DOGS / "extracted" / "dummy_data" / "PetImages" / "Dog"
    for name in ("2.jpg", "4.jpg"):  # 2.jpg: EXIF, no JFIF; 4.jpg: APP13, Adobe, ICC
        with Image.open(dogs / name) as original:
            width, height = original.size
            pixels = np.asarray(original.convert("RGB"))
        side = min(width, height)
        top, left = (height - side) // 2, (width - side) // 2
        reference = cv2.resize(pixels[top : top + side, left : left + side], (96, 96), interpolation=cv2.INTER_AREA)
        got = load_image(dogs / name, channels=3, size=96, fit="crop")  # reduced decode, within 1/2 px of it
        assert np.abs(got.astype(float) - reference).mean() < 5


def test_hf_cats_vs_dogs_zip_extracted_here_scans_the_same(tmp_path: Path) -> None:
    needs_fixture(CATS_VS_DOGS)
    with zipfile.ZipFile(CATS_VS_DOGS / "dummy_data.zip") as archive:
        archive.extractall(tmp_path)
    ours, shipped = scan_class_folders(tmp_path), scan_class_folders(CATS_VS_DOGS / "extracted")
    assert ours.classes == shipped.classes
    assert [e.relpath for e in ours.images] == [e.relpath for e in shipped.images]
    assert ours.junk == shipped.junk
