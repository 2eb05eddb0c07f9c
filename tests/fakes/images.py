"""Test support: class-per-folder image directories and awkward image files, in the real byte formats.

Writes real-format fake data for tests and bench (JPEG, PNG, GIF, WebP, BMP with Pillow; 16-bit PNGs with
OpenCV); not product code, which only reads them (:mod:`tasks.datasets.images.folder`).
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

EXTENSION_OF_FORMAT = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp", "TIFF": ".tif"}
# Fully saturated hues far apart, and a shape per class: colour alone or shape alone tells classes apart.
CLASS_HUES = (0, 120, 240, 60, 180, 300, 30, 150, 270, 90)
SHAPES = ("disc", "square", "triangle", "cross", "ring")
EXIF_ORIENTATION_TAG = 0x0112
UPRIGHT_TOP = (220, 30, 30)  # exif_rotated.jpg, upright: red top half...
UPRIGHT_BOTTOM = (30, 30, 220)  # ...blue bottom half...
UPRIGHT_MARK = (30, 220, 30)  # ...and a green square in the top-left corner
GIF_FRAME_COLOURS = ((255, 0, 0), (0, 0, 255), (0, 255, 0))  # first frame red


# ---- photo-like content ----------------------------------------------------------------------------------
def smooth_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A uint8 RGB image of two random colour gradients crossing, plus a soft blob: no flat areas."""
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    corner = rng.uniform(0, 255, (4, 3)).astype(np.float32)
    top = corner[0] * (1 - x) + corner[1] * x
    bottom = corner[2] * (1 - x) + corner[3] * x
    image = top * (1 - y) + bottom * y
    cx, cy, radius = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.2, 0.6)
    blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))
    image = image * (1 - 0.5 * blob) + rng.uniform(0, 255, 3).astype(np.float32) * 0.5 * blob
    return np.clip(image, 0, 255).astype(np.uint8)


def add_noise(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    noisy = image.astype(np.int16) + rng.normal(0, sigma, image.shape).astype(np.int16)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def draw_shape(image: np.ndarray, shape: str, centre: tuple[int, int], radius: int,
               colour: tuple[int, int, int]) -> None:
    """Draw ``shape`` (one of SHAPES) filled in ``colour`` onto the RGB ``image`` in place."""
    x, y = centre
    if shape == "disc":
        cv2.circle(image, centre, radius, colour, -1, cv2.LINE_AA)
    elif shape == "square":
        cv2.rectangle(image, (x - radius, y - radius), (x + radius, y + radius), colour, -1)
    elif shape == "triangle":
        points = np.array([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)], np.int32)
        cv2.fillPoly(image, [points], colour, cv2.LINE_AA)
    elif shape == "cross":
        bar = max(1, radius // 3)
        cv2.rectangle(image, (x - radius, y - bar), (x + radius, y + bar), colour, -1)
        cv2.rectangle(image, (x - bar, y - radius), (x + bar, y + radius), colour, -1)
    elif shape == "ring":
        cv2.circle(image, centre, radius, colour, max(2, radius // 3), cv2.LINE_AA)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def hue_colour(hue: float, value: int = 230) -> tuple[int, int, int]:
    """A saturated RGB colour of ``hue`` degrees."""
    hsv = np.array([[[hue / 2, 255, value]]], np.uint8)  # OpenCV hue runs 0..180
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def photo_like(rng: np.random.Generator, width: int, height: int, *, shapes: int = 4) -> np.ndarray:
    """Photo-like RGB content for benchmarks: smooth gradients, random shapes in random colours, sensor noise."""
    image = smooth_background(rng, width, height)
    for _ in range(shapes):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = int(rng.integers(max(2, min(width, height) // 20), max(3, min(width, height) // 4)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw_shape(image, SHAPES[int(rng.integers(len(SHAPES)))], centre, radius, colour)
    return add_noise(image, rng, 6.0)


def class_image(rng: np.random.Generator, class_index: int, width: int, height: int) -> np.ndarray:
    """An RGB image of class ``class_index``: its own colour and shape on a dim random background, jittered."""
    image = (smooth_background(rng, width, height) // 3).astype(np.uint8)
    hue = CLASS_HUES[class_index % len(CLASS_HUES)] + 13 * (class_index // len(CLASS_HUES))
    colour = hue_colour(hue % 360, int(rng.integers(190, 256)))
    side = min(width, height)
    radius = int(side * rng.uniform(0.22, 0.35))
    centre = (int(width / 2 + rng.uniform(-0.15, 0.15) * side), int(height / 2 + rng.uniform(-0.15, 0.15) * side))
    draw_shape(image, SHAPES[class_index % len(SHAPES)], centre, radius, colour)
    return add_noise(image, rng, 8.0)


def save_image(pixels: np.ndarray, path: Path, fmt: str, **options: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "JPEG":
        options.setdefault("quality", 90)
    Image.fromarray(pixels).save(path, format=fmt, **options)


def write_class_folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (64, 48), seed: int = 0,
                       fmt: str = "JPEG") -> dict[str, list[Path]]:
    """``root/<class>/<i>.<ext>`` for ``classes`` (name -> image count) in the order given; returns the files.

    Class i is drawn as its own saturated colour and shape (disc, square, triangle, cross, ring...), size
    ``size`` = (width, height), so a small CNN can tell the classes apart. A count of 0 makes an empty folder.
    """
    if fmt not in EXTENSION_OF_FORMAT:
        raise ValueError(f"fmt must be one of {', '.join(EXTENSION_OF_FORMAT)}, got {fmt!r}")
    rng = np.random.default_rng(seed)
    width, height = size
    written: dict[str, list[Path]] = {}
    for class_index, (name, count) in enumerate(classes.items()):
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        written[name] = []
        for i in range(count):
            path = folder / f"{i:04d}{EXTENSION_OF_FORMAT[fmt]}"
            save_image(class_image(rng, class_index, width, height), path, fmt)
            written[name].append(path)
    return written


# ---- awkward files ---------------------------------------------------------------------------------------
def upright_marked(width: int = 60, height: int = 40) -> np.ndarray:
    """Red top half, blue bottom half, a green square top-left: any rotation or flip shows."""
    image = np.empty((height, width, 3), np.uint8)
    image[: height // 2] = UPRIGHT_TOP
    image[height // 2 :] = UPRIGHT_BOTTOM
    image[: height // 4, : width // 4] = UPRIGHT_MARK
    return image


def write_exif_rotated_jpeg(path: Path) -> None:
    """``upright_marked()`` stored turned 90 degrees anticlockwise, with EXIF Orientation 6 (rotate 90 cw to view)."""
    stored = np.ascontiguousarray(np.rot90(upright_marked(), k=1))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6
    save_image(stored, path, "JPEG", exif=exif.tobytes(), quality=95)


def write_gif_frames(path: Path) -> None:
    """A palette GIF with one flat frame per GIF_FRAME_COLOURS (the first one red)."""
    frames = [Image.new("RGB", (32, 24), colour).convert("P", palette=Image.Palette.ADAPTIVE)
              for colour in GIF_FRAME_COLOURS]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def rgba_halves() -> np.ndarray:
    """Left half opaque red; right half green under alpha 0; a band of blue at alpha 128 along the bottom."""
    image = np.zeros((40, 40, 4), np.uint8)
    image[:, :20] = (255, 0, 0, 255)
    image[:, 20:] = (0, 255, 0, 0)
    image[30:] = (0, 0, 255, 128)
    return image


def la_halves() -> np.ndarray:
    """Gray 100 opaque on the left, black under alpha 0 on the right."""
    image = np.zeros((30, 30, 2), np.uint8)
    image[:, :15] = (100, 255)
    image[:, 15:] = (0, 0)
    return image


def gray16_rows() -> np.ndarray:
    """16-bit gray: rows of 0x8000, 0x1234 and 0xFFFF (>> 8: 128, 18, 255; clipping would give 255s)."""
    image = np.empty((30, 20), np.uint16)
    image[:10], image[10:20], image[20:] = 0x8000, 0x1234, 0xFFFF
    return image


RGB16_VALUE = (0x8000, 0x4000, 0xFFFF)  # R, G, B of rgb16.png; >> 8: (128, 64, 255)


def write_rgb16_png(path: Path) -> None:
    """A 16-bit-per-channel RGB PNG (OpenCV writes uint16 arrays as such; it wants BGR order)."""
    red, green, blue = RGB16_VALUE
    bgr = np.empty((20, 30, 3), np.uint16)
    bgr[:] = (blue, green, red)
    if not cv2.imwrite(str(path), bgr):
        raise OSError(f"{path}: OpenCV could not write the 16-bit PNG")


def write_palette_transparent_png(path: Path) -> None:
    """A palette PNG: index 0 (red) fully transparent, index 1 opaque blue on the right half."""
    indices = np.zeros((20, 20), np.uint8)
    indices[:, 10:] = 1
    image = Image.fromarray(indices, mode="L").convert("P")
    image.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    image.save(path, format="PNG", transparency=0)


def break_png_crc(data: bytes, chunk: bytes = b"IDAT") -> bytes:
    """``data`` with the CRC of its first ``chunk`` chunk flipped: every byte of pixel data still intact."""
    at = data.index(chunk) - 4
    (length,) = struct.unpack_from(">I", data, at)
    crc_at = at + 8 + length
    return data[:crc_at] + bytes(b ^ 0xFF for b in data[crc_at : crc_at + 4]) + data[crc_at + 4 :]


AWKWARD_FOLDER = "awkward"
CORRUPT_FOLDER = "corrupt"


def write_awkward_images(directory: Path) -> dict[str, Path]:
    """Awkward, corrupt and junk files in a class-folder layout below ``directory``; returns name -> path.

    ``awkward/`` holds images every loader must read (EXIF-rotated, CMYK, 16-bit gray and RGB, a
    multi-frame GIF, RGBA, LA, palette with transparency, gray JPEG, WebP, BMP), ``corrupt/`` files that must
    fail (truncated JPEG, zero bytes, random bytes as .png and .jpg, a PNG with a bad IDAT CRC), and the
    junk names (``ds_store``, ``macosx``, ``thumbs_db``, ``desktop_ini``, ``notes_txt``, ``hidden_jpg``,
    ``appledouble``) are spread over the root, the class folders and ``__MACOSX/``.
    """
    directory = Path(directory)
    awkward = directory / AWKWARD_FOLDER
    corrupt = directory / CORRUPT_FOLDER
    for folder in (awkward, corrupt, directory / "__MACOSX" / "roses"):
        folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = {
        "exif_rotated": awkward / "exif_rotated.jpg",
        "cmyk": awkward / "cmyk.jpg",
        "gray_jpeg": awkward / "gray.jpg",
        "gray16": awkward / "gray16.png",
        "rgb16": awkward / "rgb16.png",
        "gif_frames": awkward / "frames.gif",
        "rgba": awkward / "rgba.png",
        "la": awkward / "la.png",
        "palette_transparent": awkward / "palette_transparent.png",
        "webp": awkward / "photo.webp",
        "bmp": awkward / "photo.bmp",
        "truncated_jpeg": corrupt / "truncated.jpg",
        "zero_bytes": corrupt / "zero.jpg",
        "random_png": corrupt / "random.png",
        "random_jpg": corrupt / "random.jpg",
        "bad_crc_png": corrupt / "bad_crc.png",
        "ds_store": directory / ".DS_Store",
        "macosx": directory / "__MACOSX" / "roses" / "._1.jpg",
        "thumbs_db": awkward / "Thumbs.db",
        "desktop_ini": awkward / "desktop.ini",
        "notes_txt": awkward / "notes.txt",
        "hidden_jpg": awkward / ".hidden.jpg",
        "appledouble": awkward / "._photo.bmp",
    }
    write_exif_rotated_jpeg(paths["exif_rotated"])
    Image.new("CMYK", (24, 16), (255, 0, 0, 0)).save(paths["cmyk"], format="JPEG", quality=95)  # pure cyan
    save_image(np.full((16, 24), 77, np.uint8), paths["gray_jpeg"], "JPEG", quality=95)
    Image.fromarray(gray16_rows()).save(paths["gray16"], format="PNG")  # mode I;16
    write_rgb16_png(paths["rgb16"])
    write_gif_frames(paths["gif_frames"])
    Image.fromarray(rgba_halves(), mode="RGBA").save(paths["rgba"], format="PNG")
    Image.fromarray(la_halves(), mode="LA").save(paths["la"], format="PNG")
    write_palette_transparent_png(paths["palette_transparent"])
    photo = photo_like(rng, 48, 32)
    save_image(photo, paths["webp"], "WEBP", lossless=True)
    save_image(photo, paths["bmp"], "BMP")

    full_jpeg = _encoded(photo_like(rng, 200, 150), "JPEG", quality=90)
    paths["truncated_jpeg"].write_bytes(full_jpeg[: len(full_jpeg) // 2])
    paths["zero_bytes"].write_bytes(b"")
    paths["random_png"].write_bytes(rng.bytes(2048))
    paths["random_jpg"].write_bytes(rng.bytes(2048))
    paths["bad_crc_png"].write_bytes(break_png_crc(_encoded(photo_like(rng, 40, 30), "PNG")))

    paths["ds_store"].write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    paths["macosx"].write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    paths["thumbs_db"].write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(56))
    paths["desktop_ini"].write_text("[.ShellClassInfo]\nIconResource=C:\\Windows\\system32\\imageres.dll,-3\n")
    paths["notes_txt"].write_text("photos from the trip\n")
    paths["hidden_jpg"].write_bytes(full_jpeg)  # a real JPEG, but hidden: still junk
    paths["appledouble"].write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    return paths


def _encoded(pixels: np.ndarray, fmt: str, **options: object) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()
