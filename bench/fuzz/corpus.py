"""Seed corpus per fuzz target, from the test fakes (real byte formats) and ../shared/fixtures (if present).

``seeds(target)`` returns ``{name: bytes}``, the same bytes on every call; ``write_corpus(directory)`` writes
``<directory>/<target>/<name>`` for every target. Seeds stay under ``MAX_SEED_BYTES`` (the fuzzer's -max_len)
so none is cut. Besides valid files each target gets a few hostile ones the reader must refuse (path
escapes, links, pickles naming the traps in ``bench.fuzz.sentinel``), so the fuzzer starts next to them.

    .venv/bin/python bench/fuzz/corpus.py OUT_DIR
"""

from __future__ import annotations

import bz2
import gzip
import io
import pickle
import struct
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tasks.datasets.cifar.codec import CIFAR10, CIFAR100  # noqa: E402
from tasks.datasets.mnist.idx import encode_idx  # noqa: E402
from tasks.formats.tfrecord import encode_example  # noqa: E402
from tests.fakes.cifar import _batch_dict, _meta_dict, fake_cifar_images  # noqa: E402
from tests.fakes.gnt import encode_sample  # noqa: E402
from tests.fakes.images import _encoded, break_png_crc, photo_like, rgba_halves, write_awkward_images  # noqa: E402
from tests.fakes.py2_pickle import dumps_python2  # noqa: E402

FIXTURES = REPO.parent / "shared" / "fixtures"
MAX_SEED_BYTES = 1 << 16
Seeds = dict[str, bytes]


def _rng(seed: int = 13) -> np.random.Generator:
    return np.random.default_rng(seed)


def _fixture_files(pattern: str) -> list[Path]:
    """Fixture files matching ``pattern`` below ../shared/fixtures, small enough to be seeds; [] if absent."""
    if not FIXTURES.is_dir():
        return []
    return sorted(p for p in FIXTURES.glob(pattern) if p.is_file() and p.stat().st_size <= MAX_SEED_BYTES)


def _fixture_seeds(pattern: str, prefix: bytes = b"") -> Seeds:
    return {f"fixture-{p.relative_to(FIXTURES).as_posix().replace('/', '_')}": prefix + p.read_bytes()
            for p in _fixture_files(pattern)}


# ---- gnt --------------------------------------------------------------------------------------------------
def gnt_seeds() -> Seeds:
    rng = _rng()
    tags = "啊中国字的一是"

    def bitmap(height: int, width: int) -> np.ndarray:
        return rng.integers(0, 256, (height, width), dtype=np.uint8)

    one = encode_sample("中", bitmap(12, 9))
    several = b"".join(encode_sample(tag, bitmap(3 + i, 20 - 2 * i)) for i, tag in enumerate(tags))
    big = encode_sample("字", bitmap(60, 70))  # larger than the target's 256-byte block
    return {
        "one": one,
        "several": several,
        "big_then_small": big + encode_sample("一", bitmap(2, 2)),
        "truncated_bitmap": several[:-7],
        "truncated_header": several + one[:6],
        "bad_tag": one[:4] + b"\xff\xfe" + one[6:],
        "size_lies": struct.pack("<I", 11) + one[4:],
        "empty": b"",
    }


# ---- pickles ----------------------------------------------------------------------------------------------
def _trap_pickle(module: str, name: str) -> bytes:
    """PROTO 2, GLOBAL module.name, EMPTY_TUPLE, REDUCE, STOP: calls the global if find_class lets it through."""
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."


def pickle_seeds() -> Seeds:
    rng = _rng()
    labels = np.array([3, 1])
    images = fake_cifar_images(labels, 10, rng)
    batch = _batch_dict(images, labels, CIFAR10, None, "training batch 1 of 1", None)
    coarse = labels // 5
    batch100 = _batch_dict(images, labels, CIFAR100, coarse, "train", None)
    seeds: Seeds = {f"cifar10_batch_p{p}": pickle.dumps(batch, protocol=p) for p in (2, 3, 4, 5)}
    seeds["cifar10_batch_python2"] = dumps_python2(batch)
    seeds["cifar100_batch_p2"] = pickle.dumps(batch100, protocol=2)
    seeds["cifar10_meta_python2"] = dumps_python2(_meta_dict(CIFAR10, None, None))
    seeds["cifar100_meta_p4"] = pickle.dumps(_meta_dict(CIFAR100, None, None), protocol=4)
    for dtype in ("u1", "<i4", ">f8", "<u2", "?"):
        array = np.arange(6).reshape(2, 3).astype(dtype)
        seeds[f"array_{dtype.strip('<>')}_p2"] = pickle.dumps(array, protocol=2)
        seeds[f"array_{dtype.strip('<>')}_p5"] = pickle.dumps(array, protocol=5)
    seeds["fortran_array_p3"] = pickle.dumps(np.asfortranarray(np.ones((3, 2), np.float32)), protocol=3)
    seeds["nested_p4"] = pickle.dumps({b"k": [(1, 2.5, None, True, "s", b"b"), {"x": [[]]}]}, protocol=4)
    seeds["object_array_p2"] = pickle.dumps(np.array([1, "a"], dtype=object), protocol=2)  # must be refused
    seeds["set_p4"] = pickle.dumps({1, 2}, protocol=4)  # must be refused
    seeds["trap_call"] = _trap_pickle("bench.fuzz.sentinel", "trap")
    seeds["trap_import"] = _trap_pickle("bench.fuzz.import_trap", "anything")
    seeds["os_system"] = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echoK\x00\x86R."
    seeds["codecs_encode"] = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x06\x00\x00\x00latin1\x86R."
    seeds.update(_fixture_seeds("cifar*/**/*batch*"))
    seeds.update(_fixture_seeds("cifar*/**/batches.meta*"))
    seeds.update(_fixture_seeds("cifar100_hf_dummy/cifar-100-python/*"))
    return seeds


# ---- idx --------------------------------------------------------------------------------------------------
def idx_seeds() -> Seeds:
    rng = _rng()
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    arrays = {
        "images_u1": images,
        "labels_u1": np.array([7, 2, 1], np.uint8),
        "i1": np.array([-1, 5], np.int8),
        "i2": np.arange(6, dtype=np.int16).reshape(2, 3),
        "i4": np.array([[1 << 20, -3]], np.int32),
        "f4": np.array([0.5, -2.0, np.inf], np.float32),
        "f8": np.linspace(0, 1, 4),
        "zero_rows": np.zeros((0, 28, 28), np.uint8),
    }
    seeds = {name: encode_idx(array) for name, array in arrays.items()}
    seeds.update({f"{name}.gz": gzip.compress(data, mtime=0) for name, data in list(seeds.items())[:3]})
    seeds["trailing"] = seeds["labels_u1"] + b"\0"
    seeds["truncated"] = seeds["images_u1"][:-5]
    seeds["huge_dims"] = bytes((0, 0, 8, 3)) + struct.pack(">3I", 60000, 28, 28)
    return seeds


# ---- archives ---------------------------------------------------------------------------------------------
def _tar(members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode, format=tarfile.GNU_FORMAT) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
                continue
            name, payload = member
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(payload), 0o644, 1_262_304_000
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def _tar_special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o755
    return info


def _zip(members: list[tuple[str, bytes]], *, method: int = zipfile.ZIP_DEFLATED, mode: int | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as zipped:
        for name, payload in members:
            info = zipfile.ZipInfo(name, date_time=(2010, 1, 1, 0, 0, 0))
            info.compress_type = method
            if mode is not None:
                info.external_attr = mode << 16
            zipped.writestr(info, payload)
    return buffer.getvalue()


def archive_seeds() -> Seeds:
    files = [("data/roses/1.jpg", b"\xff\xd8jpeg"), ("data/tulips/2.png", b"\x89PNG" + bytes(40)),
             ("data/LICENSE.txt", b"CC-BY\n" * 20)]
    folder = _tar_special("data", tarfile.DIRTYPE)
    plain = _tar([folder, *files])
    seeds: Seeds = {
        "tar": plain,
        "tar.gz": gzip.compress(plain, mtime=0),
        "tar.bz2": bz2.compress(plain),
        "tar_pax": _pax_tar(files),
        "zip": _zip(files),
        "zip_stored": _zip(files, method=zipfile.ZIP_STORED),
        "zip_bzip2": _zip(files[:1], method=zipfile.ZIP_BZIP2),
        "zip_dirs": _zip([("top/", b""), ("top/a/", b""), ("top/a/x.txt", b"x")]),
        "tar_escape": _tar([("../escape.txt", b"out")]),
        "tar_absolute": _tar([("/tmp/absolute.txt", b"out")]),
        "tar_symlink": _tar([_tar_special("link", tarfile.SYMTYPE, "/etc/passwd"), ("link", b"through")]),
        "tar_hardlink": _tar([("a", b"a"), _tar_special("b", tarfile.LNKTYPE, "a")]),
        "tar_fifo": _tar([_tar_special("pipe", tarfile.FIFOTYPE)]),
        "tar_device": _tar([_tar_special("dev", tarfile.CHRTYPE)]),
        "tar_conflict": _tar([("x", b"file"), ("x/y", b"under a file")]),
        "zip_escape": _zip([("..\\escape.txt", b"out")]),
        "zip_symlink": _zip([("link", b"/etc/passwd")], mode=0o120777),
        "zip_absolute": _zip([("/abs.txt", b"out")]),
        "not_an_archive": b"hello, not an archive\n",
    }
    seeds.update(_fixture_seeds("cifar*/dummy_data.zip"))
    return seeds


def _pax_tar(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, payload in files:
            info = tarfile.TarInfo(name + "-é")  # a non-ASCII name needs a pax header
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


# ---- tfrecord ---------------------------------------------------------------------------------------------
def tfrecord_seeds() -> Seeds:
    from bench.fuzz.targets import frame_record

    rng = _rng()
    examples = [
        encode_example({"image/encoded": rng.bytes(48), "image/format": b"raw", "image/class/label": label,
                        "image/height": 4, "image/width": 4, "image/channels": 3, "image/key": f"k{label}".encode(),
                        "image/sha256": rng.bytes(32)})
        for label in (0, 7, -1)
    ]
    file_bytes = b"".join(frame_record(example) for example in examples)
    return {
        "raw_file": b"\x00" + file_bytes,
        "raw_truncated": b"\x00" + file_bytes[:-3],
        "raw_bad_crc": b"\x00" + file_bytes[:20] + bytes([file_bytes[20] ^ 1]) + file_bytes[21:],
        "framed_example": b"\x01" + examples[0],
        "framed_int_list": b"\x01" + encode_example({"labels": [1, 2, 3, -5], "names": [b"a", b"bc"]}),
        "framed_garbage": b"\x01" + b"\x0a\xff\xff\xff",
        "forged_length": b"\x02" + struct.pack("<Q", 1 << 40) + examples[1],
        "forged_small": b"\x02" + struct.pack("<Q", len(examples[1])) + examples[1] + b"\0\0\0\0",
    }


# ---- images -----------------------------------------------------------------------------------------------
def image_seeds() -> Seeds:
    import tempfile

    rng = _rng()
    photo = photo_like(rng, 40, 30)
    seeds: Seeds = {
        "photo.jpg": _encoded(photo, "JPEG", quality=85),
        "photo_progressive.jpg": _encoded(photo, "JPEG", quality=70, progressive=True),
        "photo.png": _encoded(photo, "PNG"),
        "rgba.png": _encoded(rgba_halves(), "PNG"),
        "photo.gif": _encoded(photo, "GIF"),
        "photo.bmp": _encoded(photo, "BMP"),
        "photo.webp": _encoded(photo, "WEBP", quality=80),
        "photo.tiff": _encoded(photo, "TIFF"),
        "bad_crc.png": break_png_crc(_encoded(photo, "PNG")),
    }
    with tempfile.TemporaryDirectory() as scratch:
        for name, path in write_awkward_images(Path(scratch)).items():
            data = path.read_bytes()
            if path.suffix.lower() in {".jpg", ".png", ".gif", ".bmp", ".webp"} and len(data) <= MAX_SEED_BYTES:
                seeds[f"awkward_{name}{path.suffix}"] = data
    seeds.update(_fixture_seeds("imagefolder*/**/*.jpg"))
    return seeds


SEEDERS: dict[str, Callable[[], Seeds]] = {
    "gnt": gnt_seeds,
    "safe_pickle": pickle_seeds,
    "idx": idx_seeds,
    "archive": archive_seeds,
    "tfrecord": tfrecord_seeds,
    "image": image_seeds,
}


def seeds(target: str) -> Seeds:
    """The seed inputs of ``target``, each at most MAX_SEED_BYTES, without duplicates (first name kept)."""
    built: Seeds = {}
    for name, data in SEEDERS[target]().items():
        if data not in built.values():
            built[name] = data
    too_big = [name for name, data in built.items() if len(data) > MAX_SEED_BYTES]
    if too_big:
        raise ValueError(f"{target} seeds over {MAX_SEED_BYTES} bytes: {too_big}")
    return built


def write_corpus(directory: Path, targets: list[str] | None = None) -> dict[str, int]:
    """Write ``directory/<target>/<seed>`` files; returns the number of seeds per target."""
    counts = {}
    for target in targets or list(SEEDERS):
        folder = Path(directory) / target
        folder.mkdir(parents=True, exist_ok=True)
        built = seeds(target)
        for name, data in built.items():
            (folder / name).write_bytes(data)
        counts[target] = len(built)
    return counts


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for name, count in write_corpus(Path(sys.argv[1])).items():
        print(f"{name}: {count} seeds")
