"""Bad inputs for the reliability suite: small valid sources of every pipeline, and ways to break them.

Each ``BadSource`` writes one broken ``--source`` (a folder or an archive, in the real byte formats, made
with ``tests/fakes``) and says how tfpipe must refuse it: the named error, the file the message must name
and a fragment of the message. ``test_bad_inputs.py`` runs each through the real CLI; the codec-level
cases there use the ``break_*`` functions directly.

Sources are deliberately tiny (a few images per split): a refusal must not depend on the data's size.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.datasets.cifar.codec import CIFAR10, CIFAR100, CifarSpec
from tests.fakes.cifar import fake_cifar_images, write_cifar_archive, write_cifar_batch, write_meta
from tests.fakes.gnt import encode_sample
from tests.fakes.hwdb import TEST_DIR, TRAIN_DIR, write_fake_hwdb
from tests.fakes.idx import write_fake_mnist
from tests.fakes.images import break_png_crc, write_class_folder

IMAGES_PER_BATCH = 4
GB2312_CHARS = "啊阿埃挨"  # four HWDB classes are enough to refuse a file
CAPTCHA_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CAPTCHA_SIZE = (24, 10)  # width, height: the decode stage takes the shape of the first image
TERABYTE = 1 << 40


# ---- valid sources ---------------------------------------------------------------------------------------
def cifar_folder(directory: Path, spec: CifarSpec = CIFAR10, *, seed: int = 0) -> Path:
    """``directory/<top folder>/`` holding every batch file and the meta file of ``spec``, Python 2 pickles."""
    rng = np.random.default_rng(seed)
    folder = directory / spec.top_folder
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        for name in spec.batches(split):
            labels = rng.integers(0, spec.num_classes, IMAGES_PER_BATCH)
            coarse = labels * (spec.num_coarse_classes or 1) // spec.num_classes if spec.num_coarse_classes else None
            write_cifar_batch(folder / name, fake_cifar_images(labels, spec.num_classes, rng), labels, spec=spec,
                              coarse_labels=coarse, python2=True)
    write_meta(folder / spec.meta_file, spec)
    return directory


def cifar_archive(directory: Path) -> Path:
    directory.mkdir(parents=True)
    path = directory / CIFAR10.archive_name
    write_cifar_archive(path, CIFAR10, n_train=20, n_test=5, seed=3)
    return path


def mnist_folder(directory: Path, *, fashion: bool = False) -> Path:
    write_fake_mnist(directory, n_train=20, n_test=8, gzip=True, seed=1, fashion=fashion)
    return directory


def hwdb_folder(directory: Path) -> Path:
    write_fake_hwdb(directory, chars=GB2312_CHARS, train_files=2, test_files=1, per_char_per_file=2, seed=2)
    return directory


def image_folder(directory: Path) -> Path:
    write_class_folder(directory, {"circles": 4, "squares": 4}, size=(40, 30), seed=4)
    return directory


def captcha_folder(directory: Path, count: int = 6) -> Path:
    """``labels.csv`` (``index,label``) and ``<index>.png`` grayscale images, the layout GenerateCaptchas writes."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(5)
    lines = ["index,label"]
    for index in range(count):
        label = "".join(rng.choice(list(CAPTCHA_ALPHABET), 4))
        lines.append(f"{index},{label}")
        pixels = rng.integers(0, 256, (CAPTCHA_SIZE[1], CAPTCHA_SIZE[0]), dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(directory / f"{index}.png")
    (directory / "labels.csv").write_text("\n".join(lines) + "\n")
    return directory


# ---- byte-level breakers ---------------------------------------------------------------------------------
def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def pickle_calling(function: Callable[..., object], *args: object) -> bytes:
    """A protocol-2 pickle that calls ``function(*args)`` when loaded: what a hostile 'CIFAR batch' holds."""

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[object, ...]]:
            return function, args

    return pickle.dumps(Payload(), protocol=2)


def pickle_declaring_bytes(size: int) -> bytes:
    """14 bytes: PROTO 4, then BINBYTES8 declaring a ``size``-byte object that is not there."""
    return b"\x80\x04\x8e" + struct.pack("<Q", size) + b"abc"


def cifar_batch_bytes(spec: CifarSpec, labels: list[int], *, images: np.ndarray | None = None,
                      drop: str | None = None) -> bytes:
    """A batch pickle with the given labels (any values), optionally without key ``drop`` or other pixels."""
    count = len(labels)
    rows = np.zeros((count, 3072), np.uint8) if images is None else images
    batch: dict[bytes, object] = {b"batch_label": b"bad batch", spec.label_key.encode(): labels, b"data": rows,
                                  b"filenames": [f"{i}.png".encode() for i in range(count)]}
    if spec.coarse_label_key:
        batch[spec.coarse_label_key.encode()] = [0] * count
    if drop is not None:
        del batch[drop.encode()]
    return pickle.dumps(batch, protocol=2)


def gnt_header(size: int, tag: bytes, width: int, height: int) -> bytes:
    return struct.pack("<I2sHH", size, tag, width, height)


def append_bytes(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int) -> bytes:
    """A well-formed, CRC-correct PNG whose header declares ``width`` x ``height`` RGB pixels (a few bytes of
    data): a decompression-bomb header that must be refused before anything that size is allocated."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def tar_with(path: Path, members: list[tarfile.TarInfo], payloads: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            data = payloads.get(info.name)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


def folder_as_tar(folder: Path, path: Path, extra: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    """``folder`` as a .tar.gz, with ``extra`` members (hostile ones) appended after the good files."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
        for info, data in extra:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def folder_as_zip(folder: Path, path: Path, extra: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, f"{folder.name}/{file.relative_to(folder).as_posix()}")
        for name, data in extra.items():
            archive.writestr(name, data)
    return path


# ---- the catalogue ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BadSource:
    """One broken ``--source`` for ``tfpipe run PIPELINE``, and how tfpipe must refuse it."""

    pipeline: str
    case: str
    make: Callable[[Path], Path]  # writes the source below the given folder, returns the --source path
    error: str  # class name of the error the failed task must name
    names: str  # what the one-line message must name (a file or member name)
    message: str  # a fragment of that message
    extra_args: tuple[str, ...] = field(default=())  # more `tfpipe run` arguments (--set, --checksum)
    fast: bool = False  # in the default suite (one or two per pipeline); the others are @slow
    stage: str = "decode"  # the stage that must fail, leaving no file in its folder
    known_bug: str = ""  # a product bug this case shows (the test is a strict xfail until it is fixed)

    @property
    def id(self) -> str:
        return f"{self.pipeline}-{self.case}"


def _cifar(change: Callable[[Path], None], spec: CifarSpec = CIFAR10) -> Callable[[Path], Path]:
    def make(directory: Path) -> Path:
        root = cifar_folder(directory / "src", spec)
        change(root / spec.top_folder)
        return root

    return make


def _cifar_archive(change: Callable[[Path], Path]) -> Callable[[Path], Path]:
    def make(directory: Path) -> Path:
        return change(cifar_archive(directory / "src"))

    return make


def _mnist(change: Callable[[Path], None], *, fashion: bool = False) -> Callable[[Path], Path]:
    def make(directory: Path) -> Path:
        root = mnist_folder(directory / "src", fashion=fashion)
        change(root)
        return root

    return make


def _hwdb(change: Callable[[Path], None]) -> Callable[[Path], Path]:
    def make(directory: Path) -> Path:
        root = hwdb_folder(directory / "src")
        change(root)
        return root

    return make


def _images(change: Callable[[Path], Path | None]) -> Callable[[Path], Path]:
    def make(directory: Path) -> Path:
        root = image_folder(directory / "photos")
        return change(root) or root

    return make


def _captcha(change: Callable[[Path], None]) -> Callable[[Path], Path]:
    def make(directory: Path) -> Path:
        root = captcha_folder(directory / "captchas")
        change(root)
        return root

    return make


def _first_train_gnt(root: Path) -> Path:
    return sorted((root / TRAIN_DIR).glob("*.gnt"))[0]


def _replace_first_gnt_sample(root: Path, header: bytes, bitmap: bytes) -> None:
    """The first train file with a hostile sample in front of its good ones."""
    path = _first_train_gnt(root)
    path.write_bytes(header + bitmap + path.read_bytes())


def _gunzip_idx(path: Path) -> np.ndarray:
    from tasks.datasets.mnist.idx import read_idx

    return read_idx(path)


def _rewrite_idx(path: Path, array: np.ndarray) -> None:
    from tasks.datasets.mnist.idx import write_idx

    write_idx(path, array, gzip=True)


def _swap(first: Path, second: Path) -> None:
    """Exchange two files' contents (a user who mixed up the names)."""
    spare = first.with_name(first.name + ".swap")
    os.replace(first, spare)
    os.replace(second, first)
    os.replace(spare, second)


def _gunzip_with_a_newline(path: Path) -> None:
    """``x.gz`` -> plain ``x`` with one stray byte after its data (a text editor's final newline)."""
    path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()) + b"\n")
    path.unlink()


def _cut_gzipped(path: Path, count: int) -> None:
    """A valid gzip stream of the file's content minus its last ``count`` bytes (cut before compression)."""
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-count]))


def _cut_end(path: Path, count: int) -> None:
    path.write_bytes(path.read_bytes()[:-count])


def _corrupt_gzip_crc(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC-32 of the uncompressed data, in the gzip trailer
    path.write_bytes(bytes(data))


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        (folder / name).write_bytes(data)

    return change


def _tar_escape(archive: Path) -> Path:
    bad = archive.with_name("escape.tar.gz")
    tar_with(bad, [tar_member("cifar-10-batches-py/../../evil.txt")], {"cifar-10-batches-py/../../evil.txt": b"x"})
    return bad


def _tar_symlink(archive: Path) -> Path:
    bad = archive.with_name("symlink.tar.gz")
    tar_with(bad, [tar_member("cifar-10-batches-py/passwd", tarfile.SYMTYPE, "/etc/passwd")], {})
    return bad


def _html_as_archive(archive: Path) -> Path:
    archive.write_bytes(b"<html><body>503 Service Unavailable</body></html>\n")
    return archive


def _truncated_archive(archive: Path) -> Path:
    truncate(archive, 0.6)
    return archive


def _image_file(root: Path, data: bytes, name: str) -> None:
    (root / "circles" / name).write_bytes(data)


def _truncated_jpeg(root: Path) -> None:
    truncate(root / "circles" / "0001.jpg", 0.5)


def _png_with_bad_crc(root: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), (10, 200, 30)).save(buffer, "PNG")
    _image_file(root, break_png_crc(buffer.getvalue()), "0009.png")


def _zip_with_escape(root: Path) -> Path:
    return folder_as_zip(root, root.with_name("photos.zip"), {"photos/../../evil.jpg": b"x"})


def _tar_with_device(root: Path) -> Path:
    return folder_as_tar(root, root.with_name("photos.tgz"), [(tar_member("photos/circles/dev", tarfile.CHRTYPE),
                                                               None)])


def _one_class_only(root: Path) -> None:
    for path in (root / "squares").iterdir():
        path.unlink()
    (root / "squares").rmdir()


def _captcha_labels(text: bytes) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        (root / "labels.csv").write_bytes(text)

    return change


def _captcha_wrong_shape(root: Path) -> None:
    Image.new("L", (CAPTCHA_SIZE[0] + 3, CAPTCHA_SIZE[1])).save(root / "3.png")


def _jpeg_as(name: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        Image.new("L", CAPTCHA_SIZE).save(root / name, "JPEG")

    return change


def _captcha_not_png(root: Path) -> None:
    (root / "2.png").write_bytes(b"GIF89a garbage that is not an image")


BAD_SOURCES: list[BadSource] = [
    # CIFAR: pickles (restricted unpickler, schema), the archive (safe extraction)
    BadSource("cifar10", "pickle-runs-code", _cifar(_write("data_batch_2", pickle_calling(os.system, "true"))),
              "UnsafePickleError", "data_batch_2", "posix.system, which is not on the allow-list", fast=True),
    BadSource("cifar10", "pickle-truncated", _cifar(lambda f: truncate(f / "data_batch_3")),
              "FormatError", "data_batch_3", "truncated or malformed pickle"),
    BadSource("cifar10", "pickle-declares-a-terabyte", _cifar(_write("test_batch", pickle_declaring_bytes(TERABYTE))),
              "FormatError", "test_batch", "BINBYTES8: it declares 1099511627776 bytes, 3 remain"),
    BadSource("cifar10", "label-out-of-range", _cifar(_write("data_batch_1", cifar_batch_bytes(CIFAR10, [0, 3, 10]))),
              "FormatError", "data_batch_1", r"label 10 outside \[0, 10\)"),
    BadSource("cifar10", "labels-missing",
              _cifar(_write("data_batch_4", cifar_batch_bytes(CIFAR10, [0, 1], drop="labels"))),
              "FormatError", "data_batch_4", "missing key 'labels'"),
    BadSource("cifar10", "pixels-wrong-shape",
              _cifar(_write("data_batch_5", cifar_batch_bytes(CIFAR10, [0, 1], images=np.zeros((2, 1024), np.uint8)))),
              "FormatError", "data_batch_5", r"shape \(2, 1024\), expected \(N, 3072\)"),
    BadSource("cifar10", "batch-missing", _cifar(lambda f: (f / "data_batch_5").unlink()),
              "FormatError", "data_batch_5", "not found"),
    BadSource("cifar10", "meta-is-a-list", _cifar(_write("batches.meta", pickle.dumps([b"cat"], protocol=2))),
              "FormatError", "batches.meta", "expected a pickled dict, found list"),
    BadSource("cifar10", "archive-truncated", _cifar_archive(_truncated_archive),
              "ArchiveError", CIFAR10.archive_name, "corrupt or truncated tar", fast=True),
    BadSource("cifar10", "archive-is-an-html-page", _cifar_archive(_html_as_archive),
              "ArchiveError", CIFAR10.archive_name, "not a tar or zip archive"),
    BadSource("cifar10", "archive-member-escapes", _cifar_archive(_tar_escape),
              "ArchiveError", "evil.txt", r"escapes the extraction directory"),
    BadSource("cifar10", "archive-symlink-member", _cifar_archive(_tar_symlink),
              "ArchiveError", "passwd", "symbolic link"),
    BadSource("cifar100", "coarse-label-out-of-range",
              _cifar(_write("train", pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [1, 2],
                                                   b"coarse_labels": [0, 20]}, protocol=2)), CIFAR100),
              "FormatError", "train", r"'coarse_labels': label 20 outside \[0, 20\)"),
    # MNIST / Fashion-MNIST: IDX headers, sizes, gzip streams, label ranges
    BadSource("mnist", "images-truncated", _mnist(lambda f: _cut_gzipped(f / "train-images-idx3-ubyte.gz", 100)),
              "IdxFormatError", "train-images-idx3-ubyte.gz", "truncated data", fast=True),
    BadSource("mnist", "gzip-crc-broken", _mnist(lambda f: _corrupt_gzip_crc(f / "t10k-images-idx3-ubyte.gz")),
              "IdxFormatError", "t10k-images-idx3-ubyte.gz", "corrupt or truncated gzip stream"),
    BadSource("mnist", "label-not-a-digit",
              _mnist(lambda f: _rewrite_idx(f / "train-labels-idx1-ubyte.gz",
                                            np.where(np.arange(20) == 7, 10, _gunzip_idx(
                                                f / "train-labels-idx1-ubyte.gz")).astype(np.uint8))),
              "IdxFormatError", "train-labels-idx1-ubyte.gz", "label 10 of sample 7 is not below num_classes=10"),
    BadSource("mnist", "counts-disagree",
              _mnist(lambda f: _rewrite_idx(f / "t10k-labels-idx1-ubyte.gz",
                                            _gunzip_idx(f / "t10k-labels-idx1-ubyte.gz")[:-1])),
              "IdxFormatError", "t10k-images-idx3-ubyte.gz", "8 images .* holds 7 labels"),
    BadSource("mnist", "labels-and-images-swapped",
              _mnist(lambda f: _swap(f / "train-labels-idx1-ubyte.gz", f / "train-images-idx3-ubyte.gz")),
              "IdxFormatError", "train-labels-idx1-ubyte.gz", "is not the idx1-ubyte label magic"),
    BadSource("mnist", "trailing-bytes", _mnist(lambda f: _gunzip_with_a_newline(f / "t10k-labels-idx1-ubyte.gz")),
              "IdxFormatError", "t10k-labels-idx1-ubyte", "1 trailing bytes after the 8-byte data"),
    BadSource("mnist", "header-declares-4-gib",
              _mnist(lambda f: (f / "train-images-idx3-ubyte.gz").write_bytes(
                  gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">3I", 65536, 256, 256)))),
              "IdxFormatError", "train-images-idx3-ubyte.gz", "need 4294967296 bytes from offset 16, got 0"),
    BadSource("fashion_mnist", "bad-magic",
              _mnist(lambda f: (f / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"PK\x03\x04junk")),
                     fashion=True),
              "IdxFormatError", "t10k-images-idx3-ubyte.gz", "bad magic 0x504b0304", fast=True),
    # CASIA HWDB: .gnt sample headers and lengths
    BadSource("hwdb", "bitmap-truncated", _hwdb(lambda f: _cut_end(_first_train_gnt(f), 5)),
              "GntFormatError", "-c.gnt", "truncated bitmap", fast=True),
    BadSource("hwdb", "tag-not-gb2312",
              _hwdb(lambda f: _replace_first_gnt_sample(f, gnt_header(14, b"\xff\xff", 2, 2), b"\0" * 4)),
              "GntFormatError", "-c.gnt", "tag bytes ff ff are not one GB2312 character"),
    BadSource("hwdb", "size-field-lies",
              _hwdb(lambda f: _replace_first_gnt_sample(f, gnt_header(99, "啊".encode("gb2312"), 2, 2), b"\0" * 4)),
              "GntFormatError", "-c.gnt", r"size field 99 != 10 \+ 2\*2 = 14"),
    BadSource("hwdb", "zero-sized-bitmap",
              _hwdb(lambda f: _replace_first_gnt_sample(f, gnt_header(10, "啊".encode("gb2312"), 0, 7), b"")),
              "GntFormatError", "-c.gnt", "zero-sized bitmap 0x7"),
    BadSource("hwdb", "bitmap-over-max-dim",
              _hwdb(lambda f: _replace_first_gnt_sample(f, gnt_header(10 + 5000 * 2, "啊".encode("gb2312"), 5000, 2),
                                                        b"\0" * 10000)),
              "GntFormatError", "-c.gnt", "bitmap 5000x2 exceeds max_dim=1024"),
    BadSource("hwdb", "test-file-cut-mid-header",
              _hwdb(lambda f: append_bytes(sorted((f / TEST_DIR).glob("*.gnt"))[0],
                                           encode_sample("啊", np.zeros((3, 3), np.uint8))[:6])),
              "GntFormatError", "-c.gnt", "truncated header, 6 of 10 bytes"),
    # Image folders: corrupt images (on_error=fail), hostile archives, too few classes
    BadSource("images", "jpeg-truncated", _images(_truncated_jpeg),
              "FormatError", "0001.jpg", "corrupt or truncated image", fast=True),
    BadSource("images", "png-bad-crc", _images(_png_with_bad_crc), "FormatError", "0009.png", "bad CRC"),
    BadSource("images", "html-named-jpg",
              _images(lambda f: _image_file(f, b"<html>404 Not Found</html>", "0007.jpg")),
              "FormatError", "0007.jpg", "not an image in a supported format"),
    BadSource("images", "empty-file", _images(lambda f: _image_file(f, b"", "0008.png")),
              "FormatError", "0008.png", r"empty file \(0 bytes\)"),
    BadSource("images", "decompression-bomb-header",
              _images(lambda f: _image_file(f, png_declaring(60_000, 60_000), "0006.png")),
              "FormatError", "0006.png", "image too large to decode safely"),
    BadSource("images", "zip-member-escapes", _images(_zip_with_escape),
              "ArchiveError", "evil.jpg", "escapes the extraction directory"),
    BadSource("images", "tar-device-member", _images(_tar_with_device),
              "ArchiveError", "photos/circles/dev", "device file"),
    BadSource("images", "one-class-only", _images(_one_class_only),
              "ValueError", "photos", "1 class folder"),
    # Captcha folders: labels.csv and the images it lists
    BadSource("captcha", "label-outside-alphabet", _captcha(_captcha_labels(b"index,label\n0,AB1D\n")),
              "FormatError", "labels.csv", "line 2: label 'AB1D' is not 4 characters", fast=True),
    BadSource("captcha", "labels-not-utf8", _captcha(_captcha_labels(b"index,label\n0,ABCD\n1,AB\xc9D\n")),
              "FormatError", "labels.csv", r"byte offset 23: not UTF-8 text"),
    BadSource("captcha", "index-not-ascii", _captcha(_captcha_labels("index,label\n²,ABCD\n".encode())),
              "FormatError", "labels.csv", "line 2: expected '<index>,<label>'"),
    BadSource("captcha", "field-over-csv-limit",
              _captcha(_captcha_labels(b"index,label\n0,\"" + b"A" * 200_000 + b"\"\n")),
              "FormatError", "labels.csv", "not a valid CSV row"),
    BadSource("captcha", "index-twice", _captcha(_captcha_labels(b"index,label\n0,ABCD\n0,EFGH\n")),
              "FormatError", "labels.csv", "index 0 appears twice"),
    BadSource("captcha", "image-other-shape", _captcha(_captcha_wrong_shape),
              "FormatError", "3.png", "the set's first image is"),
    BadSource("captcha", "image-not-an-image", _captcha(_captcha_not_png),
              "FormatError", "2.png", "cannot decode image"),
]

# A pinned checksum that the bytes do not match fails the download stage, before any decoding.
BAD_SOURCES.append(BadSource("cifar10", "checksum-mismatch", lambda d: cifar_archive(d / "src"), "ChecksumError",
                             CIFAR10.archive_name, "sha256", extra_args=("--checksum", "sha256:" + "0" * 64),
                             stage="download"))

# A captcha PNG whose header declares 60000x60000 pixels: refused before anything that size is allocated
# (tasks/datasets/captcha/task.py load_image turns Pillow's DecompressionBombError into FormatError).
BAD_SOURCES.append(BadSource("captcha", "decompression-bomb-header",
                             _captcha(_write("2.png", png_declaring(60_000, 60_000))), "FormatError", "2.png",
                             "image too large to decode safely", fast=True))
# Captchas are PNG: a JPEG named 2.png is refused by name (load_image opens PNG only).
BAD_SOURCES.append(BadSource("captcha", "jpeg-named-png", _captcha(_jpeg_as("2.png")), "FormatError", "2.png",
                             "cannot decode image"))
