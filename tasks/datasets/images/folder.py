"""Class-per-folder image directories (flower_photos style, ``ROOT/<class name>/<images>``). No Luigi, no TF.

Three parts:

* **Junk rules** (``junk_reason``): what a folder of photos collects besides photos (``.DS_Store``,
  ``Thumbs.db``, ``__MACOSX/``, AppleDouble ``._x.jpg``, hidden files, ``LICENSE.txt``...). Skipped files
  are reported with their reason, never dropped silently.
* **Scanning** (``scan_class_folders``): the class folders, the images of each (nested folders included)
  and the junk, all in code-point order so two machines list the same folder identically.
* **Decoding** (``load_image``, ``decode_images``): any JPEG, PNG, BMP, GIF, WebP or TIFF to a uint8
  ``(size, size, channels)`` array, whatever its mode (EXIF orientation, palette, alpha, CMYK, 16-bit),
  corrupt or truncated files raising ``FormatError``; ``decode_images`` decodes many on a thread pool and
  gives each image's original ``(height, width)`` too (read from the same decode, see ``original_size``).

Alpha is composited onto **white** (``ALPHA_BACKGROUND``): transparent images (product shots, icons, line
art) are drawn to be seen on a white page, and it makes the pixels hidden under alpha 0 irrelevant. The pad
colour of ``fit="pad"`` is a separate choice (``pad_value``, default black).

Speed: a JPEG is decoded by libjpeg-turbo straight at a reduced scale (``Image.draft``: 1/2, 1/4 or 1/8 in
the DCT domain) when that still leaves at least the pixels the fit needs, then resized with OpenCV (bilinear
below 2x, area averaging from 2x); Pillow's decoders and OpenCV release the GIL, so ``decode_images`` runs
them on threads.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from tasks.formats.errors import FormatError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Pillow plugins allowed to open a file, whatever its name says; no other is tried (EPS, for one, would run
# Ghostscript). The JPEG plugin also opens camera JPEGs holding a second picture (format "MPO").
PIL_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
JPEG_FORMATS = ("JPEG", "MPO")
JUNK_FILE_NAMES = {
    ".ds_store": "macOS folder metadata (.DS_Store)",
    "thumbs.db": "Windows thumbnail cache (Thumbs.db)",
    "desktop.ini": "Windows folder settings (desktop.ini)",
}
MACOS_ARCHIVE_FOLDER = "__MACOSX"
NOT_IN_CLASS_FOLDER = "not in a class folder"
SYMLINKED_FOLDER = "symbolic link to a folder (not followed)"
FITS = ("pad", "crop")
ON_ERROR_POLICIES = ("fail", "skip")
CHANNELS = (1, 3)
ALPHA_BACKGROUND = 255  # white: see the module docstring
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
GRAY_MODES = frozenset({"L", "LA", "La"})
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHUNK_HEAD = struct.Struct(">I4s")
PNG_CRC = struct.Struct(">I")
# EXIF orientations that turn the picture a quarter (transpose, rotate 90/270, transverse): width and height swap.
QUARTER_TURN_ORIENTATIONS = frozenset({5, 6, 7, 8})
IMAGES_PER_JOB = 16  # images one pool job decodes: amortises the job overhead, keeps order cheap
JOBS_PER_WORKER = 2  # jobs in flight per worker: at most workers * 2 * 16 decoded images wait for the caller


# ---- junk rules ------------------------------------------------------------------------------------------
def junk_reason(relpath: str) -> str | None:
    """Why the file at POSIX ``relpath`` (relative to the scanned folder) is not an image, or None if it is one.

    Only the path is judged (names and extension); whether the bytes decode is ``load_image``'s business.
    """
    parts = PurePosixPath(relpath).parts
    if not parts:
        return "empty path"
    name = parts[-1]
    if MACOS_ARCHIVE_FOLDER in parts:
        return f"macOS archive metadata ({MACOS_ARCHIVE_FOLDER}/)"
    if name.lower() in JUNK_FILE_NAMES:
        return JUNK_FILE_NAMES[name.lower()]
    if name.startswith("._"):
        return "macOS AppleDouble metadata (._ file)"
    if any(part.startswith(".") for part in parts[:-1]):
        return "in a hidden folder"
    if name.startswith("."):
        return "hidden file"
    if not is_utf8(name):
        return "file name is not valid UTF-8"
    suffix = PurePosixPath(name).suffix
    if not suffix:
        return "no file extension"
    if suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image extension {suffix!r}"
    return None


def folder_junk_reason(name: str) -> str | None:
    """Why a folder named ``name`` is not a class folder (hidden, macOS metadata), or None."""
    if name == MACOS_ARCHIVE_FOLDER:
        return f"macOS archive metadata ({MACOS_ARCHIVE_FOLDER}/)"
    if name.startswith("."):
        return "in a hidden folder"
    return None


def is_utf8(name: str) -> bool:
    """False for a name the OS gave with undecodable bytes (surrogate escapes): it can't go into labels.txt."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---- scanning --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageEntry:
    """One image file of a class folder; ``relpath`` is POSIX, relative to the class-folder root."""

    relpath: str
    class_name: str
    path: Path


@dataclass(frozen=True)
class FolderScan:
    """What ``scan_class_folders`` found.

    ``root`` is the folder holding the class folders (below the one given when wrapper folders were
    descended). Every ``relpath``, of images and junk alike, is POSIX and relative to ``root``, so
    ``root / relpath`` is the file; junk found in wrapper folders above ``root`` starts with ``../``.
    """

    root: Path
    classes: list[str]
    images: list[ImageEntry]
    junk: list[tuple[str, str]]
    counts: dict[str, int]


@dataclass(frozen=True)
class _Entry:
    name: str
    path: Path
    kind: str  # "dir", "file", "symlinked dir", "broken link", "special"


def _list_folder(folder: Path) -> list[_Entry]:
    """The entries of ``folder`` sorted by name (code points), each classified without following folder links."""
    entries = []
    with os.scandir(folder) as scan:
        for item in scan:
            entries.append(_Entry(item.name, Path(item.path), _kind_of(item)))
    return sorted(entries, key=lambda e: e.name)


def _kind_of(item: os.DirEntry[str]) -> str:
    if item.is_symlink():
        if item.is_dir():
            return "symlinked dir"
        return "file" if item.is_file() else "broken link"
    if item.is_dir(follow_symlinks=False):
        return "dir"
    return "file" if item.is_file(follow_symlinks=False) else "special"


def _is_class_folder(entry: _Entry) -> bool:
    return entry.kind == "dir" and folder_junk_reason(entry.name) is None


def _is_wrapper(folder: Path) -> bool:
    """``folder`` holds one or more folders and, besides them, only junk files (a dataset's top folder)."""
    entries = _list_folder(folder)
    has_folders = any(_is_class_folder(e) for e in entries)
    others = [e for e in entries if not _is_class_folder(e)]
    return has_folders and all(e.kind != "file" or junk_reason(e.name) is not None for e in others)


def find_class_root(root: Path) -> Path:
    """``root``, or the folder below it holding the class folders when ``root`` only wraps it.

    Descends while the folder holds exactly one non-junk folder and that folder holds only folders (plus
    junk files such as flower_photos' LICENSE.txt): ``flower_photos.tgz`` extracts to ``flower_photos/<class>/``
    and a zip may add ``__MACOSX/`` beside it.
    """
    current = root
    while True:
        folders = [e for e in _list_folder(current) if _is_class_folder(e)]
        if len(folders) != 1 or not _is_wrapper(folders[0].path):
            return current
        current = folders[0].path


def _walk_files(folder: Path, relpath: str) -> Iterator[tuple[str, Path, str | None]]:
    """``(relpath, path, reason it is junk or None)`` of every file below ``folder``, in code-point order.

    Folder links are not followed (they could leave the root or loop): each is one junk entry.
    """
    for entry in _list_folder(folder):
        child = f"{relpath}/{entry.name}" if relpath else entry.name
        if entry.kind == "dir":
            yield from _walk_files(entry.path, child)
        elif entry.kind == "file":
            yield child, entry.path, junk_reason(child)
        elif entry.kind == "symlinked dir":
            yield child, entry.path, SYMLINKED_FOLDER
        elif entry.kind == "broken link":
            yield child, entry.path, "broken symbolic link"
        else:
            yield child, entry.path, "not a regular file"


def _outer_junk(given: Path, class_root: Path) -> list[tuple[str, str]]:
    """Every file in the wrapper folders between ``given`` and ``class_root``, as ``../`` paths from the latter.

    Each wrapper level is listed once; the class-folder tree itself is not walked here.
    """
    levels = class_root.relative_to(given).parts
    junk: list[tuple[str, str]] = []
    folder = given
    for depth, name in enumerate(levels):
        up = "../" * (len(levels) - depth)
        for entry in _list_folder(folder):
            if entry.name == name and entry.kind == "dir":
                continue
            if entry.kind == "dir":
                junk.extend((up + child, reason or NOT_IN_CLASS_FOLDER)
                            for child, _path, reason in _walk_files(entry.path, entry.name))
            elif entry.kind == "symlinked dir":
                junk.append((up + entry.name, SYMLINKED_FOLDER))
            else:
                junk.append((up + entry.name, junk_reason(entry.name) or NOT_IN_CLASS_FOLDER))
        folder = folder / name
    return junk


def _describe_contents(root: Path) -> str:
    entries = _list_folder(root)
    if not entries:
        return "it is empty"
    shown = ", ".join(e.name + ("/" if e.kind == "dir" else "") for e in entries[:8])
    more = f" and {len(entries) - 8} more" if len(entries) > 8 else ""
    return f"it holds {shown}{more}"


def scan_class_folders(root: Path) -> FolderScan:
    """Classes, images and junk of a class-per-folder image directory (see ``FolderScan``).

    A class is a non-hidden folder directly below the class-folder root (its name kept exactly as on disk,
    Unicode normalisation included); every image below it, at any depth, belongs to it; an empty class
    folder is a class with 0 images. Files directly in the root are junk. ValueError if ``root`` is not a
    folder or holds no class folder.
    """
    given = Path(root)
    if not given.is_dir():
        raise ValueError(f"{given}: not a folder (expected ROOT/<class name>/<images>)")
    class_root = find_class_root(given)
    junk = _outer_junk(given, class_root)
    classes: list[str] = []
    images: list[ImageEntry] = []
    for entry in _list_folder(class_root):
        if _is_class_folder(entry):
            if not is_utf8(entry.name):
                raise ValueError(f"{entry.path}: class folder name is not valid UTF-8; rename it")
            classes.append(entry.name)
            for relpath, path, reason in _walk_files(entry.path, entry.name):
                if reason is None:
                    images.append(ImageEntry(relpath, entry.name, path))
                else:
                    junk.append((relpath, reason))
        elif entry.kind == "dir":
            junk.extend((relpath, reason or folder_junk_reason(entry.name) or NOT_IN_CLASS_FOLDER)
                        for relpath, _path, reason in _walk_files(entry.path, entry.name))
        elif entry.kind == "symlinked dir":
            junk.append((entry.name, SYMLINKED_FOLDER))
        else:
            junk.append((entry.name, junk_reason(entry.name) or NOT_IN_CLASS_FOLDER))
    if not classes:
        raise ValueError(
            f"{class_root}: no class folders (expected ROOT/<class name>/<images>, e.g. flower_photos/roses/1.jpg); "
            f"{_describe_contents(class_root)}"
        )
    images.sort(key=lambda e: e.relpath)
    counts = dict.fromkeys(classes, 0)
    for image in images:
        counts[image.class_name] += 1
    return FolderScan(root=class_root, classes=classes, images=images, junk=junk, counts=counts)


# ---- decoding one image ----------------------------------------------------------------------------------
def check_decode_options(*, channels: int, size: int, fit: str, pad_value: int) -> None:
    if channels not in CHANNELS:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
    if not 0 <= pad_value <= 255:
        raise ValueError(f"pad_value must be in [0, 255], got {pad_value}")


def load_image(path: Path, *, channels: int, size: int, fit: str = "pad", pad_value: int = 0) -> np.ndarray:
    """The image at ``path`` as a uint8 ``(size, size, channels)`` array, upright (EXIF orientation applied).

    ``fit="pad"``: the whole image, aspect kept, centred on a ``pad_value`` square. ``fit="crop"``: aspect
    kept, scaled so the short side is ``size``, centre crop. GIFs and other animations give their first
    frame; alpha is composited onto white; 16-bit samples keep their high byte (``>> 8``). FormatError naming
    the file for anything that is not a complete image in a supported format. Files that can't be read
    (missing, permissions) raise their OSError.
    """
    check_decode_options(channels=channels, size=size, fit=fit, pad_value=pad_value)
    pixels, _original_size = _load_checked(Path(path), channels, size, fit, pad_value)
    return pixels


def _load_checked(path: Path, channels: int, size: int, fit: str, pad_value: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The fitted ``(size, size, channels)`` pixels of ``path`` and the image's original ``(height, width)``."""
    data = path.read_bytes()
    if not data:
        raise FormatError("empty file (0 bytes)", path=path)
    if data.startswith(PNG_SIGNATURE):
        check_png_chunks(data, path)
    with _pil_errors_as_format_errors(path):
        pixels, original_size = _decode_pixels(data, channels, size, fit)
    return _fit_square(pixels, size, fit, pad_value), original_size


@contextmanager
def _pil_errors_as_format_errors(path: Path) -> Iterator[None]:
    """Pillow's ways of saying "bad bytes" (it has no single exception for them) as one FormatError."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by other code): truncated images "
                           "would decode as grey; set it back to False")
    try:
        yield
    except Image.DecompressionBombError as exc:
        raise FormatError(f"image too large to decode safely: {exc}", path=path) from exc
    except UnidentifiedImageError as exc:
        raise FormatError(f"not an image in a supported format ({', '.join(PIL_FORMATS)})", path=path) from exc
    except (OSError, SyntaxError, EOFError, struct.error, zlib.error, ValueError) as exc:
        raise FormatError(f"corrupt or truncated image: {exc}", path=path) from exc


def check_png_chunks(data: bytes, path: Path) -> None:
    """Every chunk of PNG ``data`` is complete with a matching CRC, up to IEND.

    Pillow skips the CRCs of image-data chunks and accepts a file cut after its last IDAT; this catches both.
    """
    view = memoryview(data)
    offset = len(PNG_SIGNATURE)
    while True:
        if offset + PNG_CHUNK_HEAD.size > len(data):
            raise FormatError("PNG ends before its IEND chunk (truncated)", path=path, offset=offset)
        length, chunk_type = PNG_CHUNK_HEAD.unpack_from(data, offset)
        end = offset + PNG_CHUNK_HEAD.size + length + PNG_CRC.size
        name = chunk_type.decode("latin-1")
        if end > len(data):
            raise FormatError(f"PNG chunk {name!r} runs past the end of the file (truncated)", path=path,
                              offset=offset)
        (stored,) = PNG_CRC.unpack_from(data, end - PNG_CRC.size)
        if zlib.crc32(view[offset + 4 : end - PNG_CRC.size]) != stored:
            raise FormatError(f"PNG chunk {name!r} has a bad CRC", path=path, offset=offset)
        if chunk_type == b"IEND":
            return
        offset = end


def _decode_pixels(data: bytes, channels: int, size: int, fit: str) -> tuple[np.ndarray, tuple[int, int]]:
    """Upright uint8 ``(H, W, channels)`` pixels of the encoded ``data``, JPEGs already reduced towards ``size``,
    and the image's ``original_size``."""
    with Image.open(io.BytesIO(data), formats=PIL_FORMATS) as image:
        stored_width, stored_height = image.size  # the file's own size: draft may shrink what load decodes
        _draft_towards(image, channels, size, fit)
        image.load()
        size_upright = original_size(stored_height, stored_width, _exif_orientation(image))
        ImageOps.exif_transpose(image, in_place=True)
        return _to_channels(_to_uint8(image), channels), size_upright


def original_size(stored_height: int, stored_width: int, orientation: int) -> tuple[int, int]:
    """``(height, width)`` of an image stored ``stored_width`` x ``stored_height``, as seen upright: the full
    resolution of its file, before any reduced decode, resize, pad or crop, with its EXIF ``orientation``
    applied (a quarter turn swaps the sides), as the pixels fed to the model are."""
    if orientation in QUARTER_TURN_ORIENTATIONS:
        return stored_width, stored_height
    return stored_height, stored_width


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) orientation of a loaded image, 1 when it has none; Pillow caches the parsed EXIF, so
    ``exif_transpose`` right after reads it for free."""
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    return orientation if isinstance(orientation, int) else 1


def _draft_towards(image: Image.Image, channels: int, size: int, fit: str) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale, but never below the pixels the fit will resize from.

    The fitted image has its long side (pad) or short side (crop) equal to ``size``; draft keeps both sides
    at least that large. A colour JPEG wanted as gray is decoded straight to luma. No-op for other formats.
    """
    if image.format not in JPEG_FORMATS:
        return
    width, height = image.size
    scale = size / (max(width, height) if fit == "pad" else min(width, height))
    mode = "L" if channels == 1 else "RGB"
    if scale >= 1:
        image.draft(mode, None)
        return
    image.draft(mode, (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))))


def _to_uint8(image: Image.Image) -> np.ndarray:
    """uint8 ``(H, W, 1)`` or ``(H, W, 3)`` pixels of a loaded image of any mode; alpha composited onto white."""
    if image.mode == "1":
        image = image.convert("L")
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        return _high_byte(np.asarray(image))[:, :, None]
    if mode in ALPHA_MODES or "transparency" in image.info:
        with_alpha = np.asarray(image.convert("LA" if mode in GRAY_MODES else "RGBA"))
        return _composite_on_background(with_alpha)
    if mode == "L":
        return np.asarray(image)[:, :, None]
    if mode == "F":  # 32-bit float TIFF: taken as 0..255, clipped
        return np.clip(np.asarray(image), 0, 255).astype(np.uint8)[:, :, None]
    return np.asarray(image if mode == "RGB" else image.convert("RGB"))  # P, CMYK (Adobe too), YCbCr, LAB, HSV


def _high_byte(samples: np.ndarray) -> np.ndarray:
    """16-bit samples scaled to 8 bits by ``>> 8`` (0x8000 -> 128), not clipped at 255; mode I clipped to 16 bits."""
    return (np.clip(samples, 0, 0xFFFF) >> 8).astype(np.uint8)


def _composite_on_background(with_alpha: np.ndarray) -> np.ndarray:
    """``colour * a + ALPHA_BACKGROUND * (1 - a)`` in integers, rounded; the alpha channel is last."""
    colour = with_alpha[:, :, :-1].astype(np.uint16)
    alpha = with_alpha[:, :, -1:].astype(np.uint16)
    mixed = colour * alpha + ALPHA_BACKGROUND * (255 - alpha) + 127
    return (mixed // 255).astype(np.uint8)


def _to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """``(H, W, 1)`` or ``(H, W, 3)`` uint8 pixels with ``channels`` channels (gray by ITU-R 601 luma, as PIL's L)."""
    have = pixels.shape[2]
    if have == channels:
        return pixels
    if channels == 1:
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY)[:, :, None]
    return np.repeat(pixels, 3, axis=2)


def _fit_square(pixels: np.ndarray, size: int, fit: str, pad_value: int) -> np.ndarray:
    """``pixels`` scaled (aspect kept) and padded (``pad``) or centre-cropped (``crop``) to ``(size, size, C)``."""
    if fit == "crop":
        return _resize(centre_square(pixels), size, size)
    height, width = pixels.shape[:2]
    scale = size / max(height, width)
    resized = _resize(pixels, min(size, max(1, round(width * scale))), min(size, max(1, round(height * scale))))
    return _pad_centred(resized, size, pad_value)


def _resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize keeping the channel axis: area averaging when shrinking 2x or more, else bilinear.

    Below 2x bilinear already reads every source pixel, at a sixth of INTER_AREA's cost for such ratios;
    JPEGs arrive here within 2x of the target thanks to ``_draft_towards``.
    """
    src_height, src_width = pixels.shape[:2]
    if (src_height, src_width) == (height, width):
        return pixels
    shrink = min(src_width / width, src_height / height)
    interpolation = cv2.INTER_AREA if shrink >= 2 else cv2.INTER_LINEAR
    resized = cv2.resize(pixels, (width, height), interpolation=interpolation)
    return resized[:, :, None] if resized.ndim == 2 else resized  # cv2 drops a single channel


def _pad_centred(pixels: np.ndarray, size: int, pad_value: int) -> np.ndarray:
    height, width, channels = pixels.shape
    if (height, width) == (size, size):
        return pixels
    canvas = np.full((size, size, channels), pad_value, dtype=np.uint8)
    top = (size - height) // 2
    left = (size - width) // 2
    canvas[top : top + height, left : left + width] = pixels
    return canvas


def centre_square(pixels: np.ndarray) -> np.ndarray:
    """The largest centred square of ``pixels`` (a view); an odd leftover pixel goes to the bottom/right."""
    height, width = pixels.shape[:2]
    side = min(height, width)
    top = (height - side) // 2
    left = (width - side) // 2
    return pixels[top : top + side, left : left + side]


# ---- decoding many ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecodedImage:
    """Result ``index`` (position in the input) of ``decode_images``: the image and its ``original_size``
    (``(height, width)`` upright, before any resize: see ``original_size``), or None for both and the error."""

    index: int
    image: np.ndarray | None
    error: str | None
    original_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class _Outcome:
    index: int
    image: np.ndarray | None
    error: FormatError | None
    original_size: tuple[int, int] | None = None


def _decode_job(paths: Sequence[Path], start: int, stop: int, channels: int, size: int, fit: str,
                pad_value: int) -> list[_Outcome]:
    outcomes = []
    for index in range(start, stop):
        try:
            pixels, size_upright = _load_checked(Path(paths[index]), channels, size, fit, pad_value)
        except FormatError as exc:
            outcomes.append(_Outcome(index, None, exc))
        else:
            outcomes.append(_Outcome(index, pixels, None, size_upright))
    return outcomes


def decode_images(paths: Sequence[Path], *, channels: int, size: int, fit: str = "pad", workers: int = 2,
                  on_error: str = "fail", pad_value: int = 0) -> Iterator[DecodedImage]:
    """``load_image`` of every path, by ``workers`` threads, yielded in input order as ``DecodedImage``.

    ``on_error="fail"``: the first file that is not a valid image raises its FormatError once every image
    before it has been yielded; the work queued behind it is cancelled. ``on_error="skip"``: such a file
    comes back with ``image=None`` and ``error`` its message. Other errors (a file that can't be read)
    always raise. Memory stays bounded: about ``(workers * JOBS_PER_WORKER + 1) * IMAGES_PER_JOB`` decoded
    images wait for the caller, however many paths there are. Bad options raise ValueError at once.
    """
    check_decode_options(channels=channels, size=size, fit=fit, pad_value=pad_value)
    if on_error not in ON_ERROR_POLICIES:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR_POLICIES)}, got {on_error!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    Image.init()  # register every Pillow plugin now, not from several threads at their first WebP or TIFF
    return _decode_in_order(paths, (channels, size, fit, pad_value), workers, on_error)


def _decode_in_order(paths: Sequence[Path], options: tuple[int, int, str, int], workers: int,
                     on_error: str) -> Iterator[DecodedImage]:
    jobs = ((start, min(start + IMAGES_PER_JOB, len(paths))) for start in range(0, len(paths), IMAGES_PER_JOB))
    if workers == 1:
        for start, stop in jobs:
            yield from _results(_decode_job(paths, start, stop, *options), on_error)
        return
    pending: deque[Future[list[_Outcome]]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-decode") as pool:
        try:
            for start, stop in jobs:
                pending.append(pool.submit(_decode_job, paths, start, stop, *options))
                if len(pending) == workers * JOBS_PER_WORKER:
                    break
            while pending:
                outcomes = pending.popleft().result()
                following = next(jobs, None)
                if following is not None:
                    start, stop = following
                    pending.append(pool.submit(_decode_job, paths, start, stop, *options))
                yield from _results(outcomes, on_error)
        finally:
            for future in pending:
                future.cancel()


def _results(outcomes: list[_Outcome], on_error: str) -> Iterator[DecodedImage]:
    for outcome in outcomes:
        if outcome.error is not None:
            if on_error == "fail":
                raise outcome.error
            yield DecodedImage(outcome.index, None, str(outcome.error))
        else:
            yield DecodedImage(outcome.index, outcome.image, None, outcome.original_size)
