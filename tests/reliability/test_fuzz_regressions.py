"""Regression tests: every input bench/fuzz found crashing a reader, inlined, now refused by its named error.

Each test names where the input came from (an atheris run of bench/fuzz/run.py, or the deterministic
mutations of test_fuzz_targets.py, 2026-12-01) and what the reader did before the fix.
"""

from __future__ import annotations

import errno
import io
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tasks.formats.errors import ArchiveError, FormatError, UnsafePickleError
from tasks.formats.safe_pickle import load_restricted
from tasks.formats.tfrecord import decode_example, masked_crc32c, read_records
from tasks.sources.archive import safe_extract

REPO = Path(__file__).resolve().parents[2]


# ---- tfrecord ----------------------------------------------------------------------------------------------
def _forged_header(length: int) -> bytes:
    """A record header whose length field lies, with the valid CRC a bit flip could never produce."""
    field = struct.pack("<Q", length)
    return field + struct.pack("<I", masked_crc32c(field))


@pytest.mark.parametrize("length", [1 << 40, (1 << 64) - 1, 1 << 33, 21])
@pytest.mark.parametrize("verify", [True, False])
def test_tfrecord_length_past_the_end_is_a_format_error(tmp_path: Path, length: int, verify: bool) -> None:
    """Was MemoryError (2**40), OverflowError (2**64-1), or an 8 GB allocation (2**33) before reading 20 bytes."""
    path = tmp_path / "forged.tfrecord"
    path.write_bytes(_forged_header(length) + b"twenty bytes of data")
    with pytest.raises(FormatError, match="runs past the end") as caught:
        list(read_records(path, verify=verify))
    assert caught.value.path == str(path) and caught.value.offset == 0 and caught.value.index == 0


def test_tfrecord_exact_length_still_reads(tmp_path: Path) -> None:
    """The new bound is exact: a record that ends at the end of the file is whole."""
    payload = b"x" * 21
    path = tmp_path / "one.tfrecord"
    path.write_bytes(_forged_header(len(payload)) + payload + struct.pack("<I", masked_crc32c(payload)))
    assert list(read_records(path)) == [payload]


# From atheris (target tfrecord, mode byte 0x82 -> "framed"): a varint field 1 where the Features message is.
FUZZ_VARINT_FEATURES = b"\x82" + bytes(68) + b"\x08" + bytes(106) + b"\xff"
# From the deterministic mutations: a Features map entry whose value field is a varint.
MUTATION_VARINT_ENTRY = b"\x081els\x12\x11\n\x1b\n\x06labels\x12\x11"


@pytest.mark.parametrize("example", [FUZZ_VARINT_FEATURES[1:], MUTATION_VARINT_ENTRY, b"\x08\x00"])
def test_decode_example_varint_where_a_message_belongs_is_a_value_error(example: bytes) -> None:
    """Was TypeError ("object of type 'int' has no len()")."""
    with pytest.raises(ValueError, match="is a varint"):
        decode_example(example)


def test_decode_example_varint_name_does_not_allocate_its_value() -> None:
    """A map entry's name as a 9-byte varint of 2**62: ``bytes(v)`` used to allocate 2**62 zero bytes."""
    huge = b"\x80\x80\x80\x80\x80\x80\x80\x80\x40"  # varint 2**62
    entry = b"\x08" + huge  # field 1 (name), wire type 0
    features = b"\x0a" + bytes([len(entry)]) + entry
    example = b"\x0a" + bytes([len(features)]) + features
    with pytest.raises(ValueError, match="is a varint"):
        decode_example(example)


# ---- archives ----------------------------------------------------------------------------------------------
# From atheris (target archive): a zip whose central directory puts a member before the start of the file.
FUZZ_ZIP_NEGATIVE_OFFSET = (
    b"PK\x03\x04\x14\x00\x00\x00\x08\x00\x00\x00!<\xd9*\xb5'\x08\x00\x00\x00\x06\x00\x00\x00\x10\x00\x00\x00"
    b"data/roses/1.jpg\xfb\x7f#\xab 5\x1d\x00PK\x03\x04\x14\x00\x00\x00\x08\x00\x00\x00!<3\xe3\x97\xf2\t\x00"
    b"\x00\x00,\x00\x00\x00\x11\x00\x00\x00data/tulip\x00\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80"
    b"\x01n\x00\x00\x00datax\x00\x00\x00\x10\x00\x00\x00data/LICENSE.txtsv\xd6u\x8a\xe4r\xa6;\t\x00PK\x01\x02"
    b"\x14\x03\x14\x00\x00\x00\x08\x00\x00\x00!<\xd9*\xb5'\x08\x00\x00\x00\x06\x00\x00\x00\x10\x00\x00\x00\x00"
    b"\x00\x00\x00\x00\x00\x00\x00\x80\x01\x00\x00\x00\x00data/roses/1.jpgPK\x01\x02\x14\x03\x14\x00\x00\x00\x08"
    b"\x00\x00\x00!<3\xe3\x97\xf2\t\x00\x00\x00,\x00\x00\x00\x11\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80"
    b"\x016\x00\x00\x00data/tulips/2.pngPK\x01\x02\x14\x03\x14\x00\x00\x00\x08\x00\x00\x00!<oK\x1dq\x0b\x00\x00"
    b"\x00x\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x01n\x00\x00\x00data/LICENSE.txtPK"
    b"\x05\x06\x00\x00\x00\x00\x03\x00\x03\x00\xbb\x00\x00\x00\xa7\x00\x00\x00\x00\x00"
)
# From the deterministic mutations: a bzip2 zip member whose stream is corrupt.
MUTATION_ZIP_BAD_BZIP2 = (
    b"PK\x03\x04.\x00\x00\x00\x0c\x00\x00\x00!<\xd9*\xb5'.\x00\x00\x00\x06\x00\x00\x00\x10\x00\x00\x00"
    b"data/roses/1.jpgBZh91AY&SYU\xb1_\xe8\x00\x00\x02\x81\x82\x82\x90@\x00\x00@\x00\x00\xa0\x00!\x80\x0c\x02+v"
    b"\xe2\xeeH\xa7\n\x7f\n\xb6+\xfd\x00PK\x01\x02.\x03.\x00\x00\x00\x0c\x00\x00\x00!<\xd9*\xb5'.\x00\x00\x00\x06"
    b"\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x01\x00\x00\x00\x00data/roses/1.jpgPK\x05"
    b"\x06\x00\x00\x00\x00\x01\x00\x01\x00>\x00\x00\x00\\\x00\x00\x00\x00\x00"
)


@pytest.mark.parametrize("data", [FUZZ_ZIP_NEGATIVE_OFFSET, MUTATION_ZIP_BAD_BZIP2],
                         ids=["negative-offset", "bad-bzip2"])
def test_corrupt_zip_is_an_archive_error_and_leaves_nothing(tmp_path: Path, data: bytes) -> None:
    """Were OSError [Errno 22] Invalid argument (a seek before the file start) and OSError "Invalid data stream"."""
    archive = tmp_path / "input.zip"
    archive.write_bytes(data)
    with pytest.raises(ArchiveError, match="corrupt") as caught:
        safe_extract(archive, tmp_path / "out")
    assert caught.value.path == str(archive)
    assert sorted(os.listdir(tmp_path)) == ["input.zip"]  # no destination, no staging directory


# Rebuilt from an atheris finding (target archive): a zip entry flagged UTF-8 whose name is not UTF-8.
ZIP_BAD_UTF8_NAME = (
    b"PK\x03\x04\x14\x00\x00\x08\x00\x00-\xbc\x81]\x83\x16\xdc\x8c\x01\x00\x00\x00\x01\x00\x00\x00\t\x00"
    b"\x00\x00caf\x80\x80.txtxPK\x01\x02\x14\x03\x14\x00\x00\x08\x00\x00-\xbc\x81]\x83\x16\xdc\x8c\x01\x00"
    b"\x00\x00\x01\x00\x00\x00\t\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x01\x00\x00\x00\x00caf\x80"
    b"\x80.txtPK\x05\x06\x00\x00\x00\x00\x01\x00\x01\x007\x00\x00\x00(\x00\x00\x00\x00\x00"
)
# Rebuilt from an atheris finding (target archive): a tar.gz cut inside its deflate stream.
TGZ_CUT_IN_THE_STREAM = (
    b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xed\xcd\xc1\r@@\x14\x04\xd0_\x8a\n\x84\x84U\xcf\xb6\xc0J"
    b"\x94o9\x89;\x89x\xef2\x93\xb9"
)


# From atheris (target archive, after the fixes above): a ZIP64 end locator naming a second disk.
FUZZ_ZIP_MULTI_DISK = (
    b"PK\x03A-BY\nPK\x01\x02\x14\x03\x14\x00\x00\x00\x00\x00\x00\x80!<\xd9*\xb5'\x06\x00\x00\x00\x06\x00"
    b"\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x01\x00\x00\x00\x00da\x91\x9e\xd0\x8dos"
    b"es/0.jpgPK\x01\x02\x14\x03\x14\x00\x00\x00\x00\x00\x00\x00!<1\xe3\x97\xf2,\x00\x00\x00,\x00\x00\x00"
    b"\x11\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x018\x00\x00\x00data/tulips/2.pngPK\x01\x02\x14"
    b"\x03\x14\x00\x00\x00\x00\x00\x00\x00\x80\x01PK\x06\x07data/LICENSE.txtPK\x05\x06\x00\x00\x00\x00\x03"
    b"\x00\x03\x00\xbb\x00\x00\x005\x01\x00\x00\x00\x00"
)


@pytest.mark.parametrize(("data", "message"), [(ZIP_BAD_UTF8_NAME, "corrupt or unsupported zip"),
                                               (TGZ_CUT_IN_THE_STREAM, "corrupt or truncated tar"),
                                               (FUZZ_ZIP_MULTI_DISK, "span multiple disks")],
                         ids=["zip-bad-utf8-name", "tgz-cut", "zip-multi-disk"])
def test_archive_detection_errors_are_archive_errors(tmp_path: Path, data: bytes, message: str) -> None:
    """Were UnicodeDecodeError (zipfile reading the directory), EOFError (tarfile.is_tarfile itself) and
    BadZipFile (zipfile.is_zipfile itself)."""
    archive = tmp_path / "input.archive"
    archive.write_bytes(data)
    with pytest.raises(ArchiveError, match=message) as caught:
        safe_extract(archive, tmp_path / "out")
    assert caught.value.path == str(archive)
    assert sorted(os.listdir(tmp_path)) == ["input.archive"]


def _pax_tar_with_nul_in_name() -> bytes:
    """A pax tar whose ``path`` record holds a NUL (pax values are length-delimited, so tarfile keeps it).

    Rebuilt from an atheris finding (target archive, a 6,247-byte tar): ``ValueError: embedded null byte``
    from ``Path.resolve`` in the containment check.
    """
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("aX\u00e9.txt")  # the non-ASCII name puts it in a pax header
        info.size, info.mtime = 1, 0
        tar.addfile(info, io.BytesIO(b"x"))
    data = buffer.getvalue()
    at = data.index(b"path=aX") + len(b"path=a")
    return data[:at] + b"\0" + data[at + 1 :]


def test_nul_in_a_tar_member_name_is_an_archive_error(tmp_path: Path) -> None:
    archive = tmp_path / "input.tar"
    archive.write_bytes(_pax_tar_with_nul_in_name())
    with pytest.raises(ArchiveError, match="NUL byte") as caught:
        safe_extract(archive, tmp_path / "out")
    assert caught.value.path == str(archive) and caught.value.member == "a\0\u00e9.txt"
    assert sorted(os.listdir(tmp_path)) == ["input.tar"]


def test_disk_errors_while_extracting_a_zip_stay_os_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fix turns only bad-data OSErrors into ArchiveError: a full disk is not a "corrupt" archive."""
    import zipfile

    import tasks.sources.archive as archive_module

    archive = tmp_path / "ok.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("a.txt", b"a")

    def full_disk(path: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return open(path, mode, *args, **kwargs)  # noqa: SIM115 - handed back to the caller's with

    monkeypatch.setattr(archive_module, "open", full_disk, raising=False)
    with pytest.raises(OSError) as caught:
        safe_extract(archive, tmp_path / "out")
    assert caught.value.errno == errno.ENOSPC and not isinstance(caught.value, ArchiveError)
    assert not (tmp_path / "out").exists()


# ---- restricted unpickler ---------------------------------------------------------------------------------
# From atheris (target safe_pickle): a numpy array pickle whose 'latin1' became 'latin2'.
FUZZ_LATIN2_ARRAY = (
    b"\x80\x02cnumpy._core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85q\x02c_codecs\nencode\n"
    b"q\x03X\x01\x00\x00\x00bq\x04X\x06\x00\x00\x00latin2q\x05\x86q\x06Rq\x07\x87q\x08Rq\t(K\x01K\x02\x85q\n"
    b"cnumpy\ndtype\nq\x0bX\x02\x00\x00\x00O8q\x0c\x89\x88\x87q\rRq\x0e(\xb1\xfc\xa7\xfe\x00\x00\x00|q\x0fNNNJ"
    b"\xff\xff\xff\xffJ\xff\xff\xff\xffK?tq\x10b\x89]q\x11(K\x01X\x01\x00\x00\x00aq\x12etq\x13b."
)


def _codecs_encode_pickle(codec: bytes) -> bytes:
    return b"\x80\x02c_codecs\nencode\nX\x04\x00\x00\x00abcdX" + struct.pack("<I", len(codec)) + codec + b"\x86R."


def test_fuzzed_latin2_array_is_refused_without_importing_a_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: codecs.encode imported encodings.iso8859_2 for the pickle (a module outside the allow-list)."""
    monkeypatch.delitem(sys.modules, "encodings.iso8859_2", raising=False)
    with pytest.raises(UnsafePickleError, match="latin2") as caught:
        load_restricted(io.BytesIO(FUZZ_LATIN2_ARRAY), path_for_errors="batch.pkl")
    assert caught.value.path == "batch.pkl"
    assert "encodings.iso8859_2" not in sys.modules


@pytest.mark.parametrize("codec", [b"nosuchcodec", b"cp1026", b"zlib", b"rot13", b"latin1\x00"])
def test_codecs_encode_only_takes_latin1(codec: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown name was an uncaught LookupError; a known one imported its module (cp1026) or ran it (zlib)."""
    module = f"encodings.{codec.decode(errors='replace')}"
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(UnsafePickleError, match="only latin1"):
        load_restricted(io.BytesIO(_codecs_encode_pickle(codec)), path_for_errors="x.pkl")
    assert module not in sys.modules


def test_codecs_encode_latin1_still_gives_bytes() -> None:
    assert load_restricted(io.BytesIO(_codecs_encode_pickle(b"latin1"))) == b"abcd"
    array = np.arange(12, dtype=">i4").reshape(3, 4)
    import pickle

    for protocol in (2, 5):
        assert np.array_equal(load_restricted(io.BytesIO(pickle.dumps(array, protocol=protocol))), array)


def test_build_cannot_rewrite_numpys_frombuffer() -> None:
    """Was: BUILD with a slot state set ``numpy._core.numeric._frombuffer.__defaults__`` for the whole process."""
    from numpy._core.numeric import _frombuffer as frombuffer

    defaults = frombuffer.__defaults__
    # GLOBAL _frombuffer, (None, {'__defaults__': (1,)}), BUILD, POP, EMPTY_DICT, STOP
    hostile = b"\x80\x02cnumpy._core.numeric\n_frombuffer\nN}X\x0c\x00\x00\x00__defaults__K\x01\x85s\x86b0}."
    with pytest.raises(FormatError):
        load_restricted(io.BytesIO(hostile), path_for_errors="x.pkl")
    assert frombuffer.__defaults__ == defaults


def test_array_larger_than_the_pickle_is_refused() -> None:
    """Found probing the allow-list (np.ndarray as a REDUCE callable): 28 bytes returned a 16 GB uninitialised
    array. numpy.ndarray is now only an argument of _reconstruct: calling it is refused before anything is made."""
    shape = (2 * 10**9).to_bytes(5, "little")
    hostile = b"\x80\x02cnumpy\nndarray\n\x8a\x05" + shape + b"\x85\x85R."  # ndarray((2e9,)) of float64
    with pytest.raises(UnsafePickleError, match="calls numpy.ndarray directly") as caught:
        load_restricted(io.BytesIO(hostile), path_for_errors="x.pkl")
    assert caught.value.path == "x.pkl"


def _array_with_dtype_flags(flags: int) -> bytes:
    """A uint8 array pickle whose dtype BUILD state carries ``flags`` (real pickles carry 0 for numeric dtypes).

    The minimal form of an atheris finding (target safe_pickle: a 15,594-byte CIFAR-100 fixture whose dtype
    state's flag byte became 0xff) that raised SystemError "error return without exception set".
    """
    return (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R"
            b"(K\x01K\x04\x85cnumpy\ndtype\nX\x02\x00\x00\x00u1\x89\x88\x87R"
            b"(K\x03X\x01\x00\x00\x00|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK" + bytes([flags]) + b"tb"
            b"\x89C\x04\x01\x02\x03\x04tb.")


def test_genuine_dtype_state_still_loads() -> None:
    assert load_restricted(io.BytesIO(_array_with_dtype_flags(0))).tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("flags", [1, 4, 16, 128, 255])
def test_forged_dtype_flags_are_refused_and_leave_nothing_to_blow_up(flags: int) -> None:
    """Were SystemError (0xff), RuntimeError "get_clear_loop not set" (1: the array claimed to hold objects,
    raised again wherever it was freed) or a silently accepted array with a forged dtype (4..128)."""
    import gc

    with pytest.raises(FormatError) as caught:
        load_restricted(io.BytesIO(_array_with_dtype_flags(flags)), path_for_errors="x.pkl")
    assert caught.value.path == "x.pkl"
    del caught
    gc.collect()  # a forged array still alive would raise RuntimeError here, on being freed
    assert np.zeros(3, np.uint8).sum() == 0


def test_a_forged_dtype_is_refused_even_on_an_array_the_pickle_throws_away() -> None:
    """From atheris (target safe_pickle: crashes that did not reproduce alone, and "deallocated bytearray object
    has exported buffers"): a dtype whose BUILD flags say it holds objects made numpy decref the array's bytes
    as pointers when the array was freed, and an array the pickle POPs never reached the check of the result.
    Dtype states are now checked when BUILD applies them, before any array is made."""
    popped_then_list = _array_with_dtype_flags(1)[:-1] + b"0]."  # ... BUILD, POP, EMPTY_LIST, STOP
    with pytest.raises(FormatError, match="state"):
        load_restricted(io.BytesIO(popped_then_list), path_for_errors="x.pkl")


def test_build_twice_on_one_array_is_refused() -> None:
    """numpy's own ``ndarray.__setstate__`` lets a second BUILD swap an array's shape, dtype and memory."""
    once = _array_with_dtype_flags(0)
    state = once[once.index(b"(K\x01K\x04"):-1]  # the array's BUILD state and the BUILD opcode
    with pytest.raises(FormatError, match="already has its data"):
        load_restricted(io.BytesIO(once[:-1] + state + b"."), path_for_errors="x.pkl")


def test_a_bytearray_under_an_array_is_copied_before_the_pickle_can_resize_it() -> None:
    """Protocol 5 writes an array in band as _frombuffer(bytearray, ...); the pickle still holds the bytearray
    and can APPENDS to it (bytearray.extend), which numpy memory sharing would turn into a BufferError."""
    import pickle

    array = np.arange(4, dtype=np.uint8)
    body = pickle.dumps(array, protocol=5)
    assert b"\x96" in body  # BYTEARRAY8: in-band data
    # The array, then the bytearray again (memo 3 in this layout), extended by APPENDS, in a tuple with the array.
    hostile = body[:2] + body[11:-1] + b"h\x03(K\x05e\x86."  # without its FRAME, so that opcodes can follow
    with pytest.raises(UnsafePickleError, match="bytearray"):
        load_restricted(io.BytesIO(hostile), path_for_errors="x.pkl")


# From atheris (target safe_pickle, an oom-* input): LONG_BINPUT 175726962 in a 266-byte batches.meta variant.
FUZZ_MEMO_INDEX = (
    b"\x80\x02}q\x01(U\x13num_cases_per_batchq\x02M\x10'U\x0blabel_namesq\x03]q\x04(U\x08airplaneq\x05U\nautomobile"
    b"q\x06U\x04birarray\nq\x01K\x00\x85q\x02c_codecs\nencode\nq\x03X\x01\x00\x00\x00bq\x04X\x06\x00\x00\x00latin1"
    b"q\x05\x86q\x06Rq\x07\x87q\x08Rq\t(K\x01K\x02\x85q\ncnumpy\ndtype\nq\x0bX\x02\x00\x00\x00O8q\x0c\x89\x88\x87q"
    b"\rRq\x0e(K\x03Xdq\x07U\x03catq\x08U\x04deerq\tU\x03dogq\nU\x04fr.gq\x0bU\x05horseq\x0cU\x04shipq\rU\x05truck"
    b"q\x0eeU\x07num_visq\x0fM\x00\x0cu."
)
MEMO_RSS_LIMIT_MB = 512


def run_child(code: str, *, address_space_mb: int | None = None) -> subprocess.CompletedProcess:
    """``code`` in a fresh Python in the repository (bounded by a timeout), optionally under an address-space
    limit, so that a reader's huge allocation fails there instead of in the test process."""
    if address_space_mb is not None:
        code = (f"import resource\nresource.setrlimit(resource.RLIMIT_AS, ({address_space_mb} << 20, "
                f"{address_space_mb} << 20))\n" + code)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_huge_memo_index_is_refused(tmp_path: Path) -> None:
    """The outcome is the named error, in a child under a 1.5 GB address-space limit (the memo scan refuses the
    index before the unpickler grows its memo; the next test checks the memory without a limit)."""
    path = tmp_path / "batches.meta"
    path.write_bytes(FUZZ_MEMO_INDEX)
    child = textwrap.dedent(f"""
        from tasks.formats.errors import FormatError
        from tasks.formats.safe_pickle import load_restricted
        try:
            load_restricted({str(path)!r})
        except FormatError as exc:
            print("FormatError", exc.path)
    """)
    done = run_child(child, address_space_mb=1536)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["FormatError", str(path)]


@pytest.mark.slow  # a child process that zero-filled 2.3 GB before the memo scan
def test_huge_memo_index_does_not_allocate_gigabytes(tmp_path: Path) -> None:
    path = tmp_path / "batches.meta"
    path.write_bytes(FUZZ_MEMO_INDEX)
    child = textwrap.dedent(f"""
        from tasks.formats.safe_pickle import load_restricted
        try:
            load_restricted({str(path)!r})
        except ValueError:
            pass
        # VmHWM, not ru_maxrss: Linux keeps the parent's ru_maxrss across fork and exec (a large pytest).
        high = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
        print(int(high.split()[1]) // 1024)
    """)
    done = run_child(child)
    assert done.returncode == 0, done.stderr[-2000:]
    peak_mb = int(done.stdout.strip().splitlines()[-1])
    assert peak_mb < MEMO_RSS_LIMIT_MB, f"loading a {len(FUZZ_MEMO_INDEX)}-byte pickle peaked at {peak_mb} MB"


# From atheris (target safe_pickle, crash-f52ff475 of 2026-12-01): a protocol-5 array whose dtype state is a 6-tuple
# with an int where numpy expects the subarray. numpy's own dtype.__setstate__ took it and the process died of
# SIGSEGV (reproduced alone on the code before the stand-ins: exit -11).
FUZZ_SHORT_DTYPE_STATE = (
    b'\x80\x05\x95|\x00\x00\x00\x00\x00\x00\x00\x8c\x13numpy._core.numeric\x94\x8c\x0b_frombuffer\x94\x93\x94(\x96\x06\x00\x00\x00\x00'
    b'\x00\x00\x00\x00\x01\x02\x03\x04\x05\x94\x8c\x05numpy\x94\x8c\x05dtype\x94\x93\x94\x8c\x02u1\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01|\x94MNNJ\xff\xff\xff\xffJ\xff'
    b'\xff\xff\xffK\x00t\x94bK\x02K\x03\x86\x94\x8c\x01C\x94t\x94R\x94.'
)


def test_a_dtype_state_numpy_would_crash_on_is_refused_in_a_live_process() -> None:
    child = textwrap.dedent(f"""
        import io
        from tasks.formats.errors import UnsafePickleError
        from tasks.formats.safe_pickle import load_restricted
        try:
            load_restricted(io.BytesIO({FUZZ_SHORT_DTYPE_STATE!r}), path_for_errors="x.pkl")
        except UnsafePickleError as exc:
            print(exc)
    """)
    done = run_child(child)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert "dtype 'u1' has the state (3, '|', 20046, -1, -1, 0)" in done.stdout, done.stdout


# From atheris (target safe_pickle, an oom-* input that reproduced alone after the stand-ins): a FRAME inside a
# frame. CPython's C unpickler then reads the next frame from the file, drops the rest of the current one and runs
# opcodes a linear walk never sees; the 267 bytes peaked at 10 GB.
FUZZ_NESTED_FRAME = (
    b'\x80\x05\x95|\x00\x00\x00\x00\x00\x00\x00\x8c\x13numpy._core.numeric\x94\x8c\x0b_frombuffer\x94\x93'
    b'\x94(\x96\x06\x00\x00\x00\x00\x00\x00\x00\x00\x01\x01\x01\x01\x01\x94\x8c\x05numpy\x94\x8c\x05dtype\x94\x93\x94\x8c\x02b0\x94\x89\x80\x05\x95|\x00\x00'
    b'\x00\x00\x00\x00\x00\x8c\x13numpy._core.numeric\x94\x8c\x0b_frombuffer\x94\x93\x94(\x96\x06\x00\x00'
    b'\x00\x00\x00\x00\x00\x00\x01\x01\x01\x01\x01\x94\x8c\x05numpy\x94\x8c\x05dtype\x94\x93\x94\x8c\x02b0\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01|\x94'
    b'NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94bK\x02K\x03\x86\x94\x8c\x01C\x94t\x94\x88\x87\x94R\x94(K\x03\x8c\x01|\x94NNNJ\xff\xff'
    b'\xff\xffJ\xff\xff\xff\xffK\x00t\x94bK\x02K\x03\x86\x94\x8c\x01C\x94t\x94R\x94.'
)


def test_a_frame_inside_a_frame_is_refused_before_the_unpickler_runs(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(FUZZ_NESTED_FRAME)
    child = textwrap.dedent(f"""
        from tasks.formats.errors import FormatError
        from tasks.formats.safe_pickle import load_restricted
        try:
            load_restricted({str(path)!r})
        except FormatError as exc:
            print(exc.offset, exc)
    """)
    done = run_child(child, address_space_mb=1536)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("92 ") and "a new frame inside the frame" in done.stdout, done.stdout


def test_an_opcode_running_past_its_frame_is_refused() -> None:
    """The other way the C unpickler leaves a linear walk behind: an argument that crosses the frame's end."""
    import pickle

    body = pickle.dumps("abcdef", protocol=4)  # PROTO 4, FRAME n, SHORT_BINUNICODE 'abcdef', MEMOIZE, STOP
    short_frame = body[:3] + (4).to_bytes(8, "little") + body[11:]
    with pytest.raises(FormatError, match="runs past the end of its frame at offset 15") as caught:
        load_restricted(io.BytesIO(short_frame), path_for_errors="x.pkl")
    assert caught.value.offset == 11



# From atheris (target safe_pickle, the stream-and-file differential): a PUT whose line is not a number and
# crosses the frame's end. The walk left such a PUT to the unpickler and stopped, before its frame check; the
# restricted unpickler (a file-like reader) then took the line from after the frame ("0") and ran on through
# opcodes the walk never saw. Loaded [] before the fix.
def _put_line_across_the_frame_end() -> bytes:
    body = b"]pabc"  # EMPTY_LIST, then PUT whose line has no newline inside the 5-byte frame
    return b"\x80\x04\x95" + len(body).to_bytes(8, "little") + body + b"0\n."


@pytest.mark.parametrize("as_file", [False, True], ids=["stream", "file"])
def test_a_put_line_crossing_its_frame_end_is_refused(tmp_path: Path, as_file: bool) -> None:
    blob = _put_line_across_the_frame_end()
    source: io.BytesIO | Path = io.BytesIO(blob)
    if as_file:
        source = tmp_path / "put.pkl"
        source.write_bytes(blob)
    with pytest.raises(FormatError, match="PUT: it runs past the end of its frame at offset 16") as caught:
        load_restricted(source, path_for_errors="x.pkl")
    assert caught.value.offset == 12


def test_a_negative_length_field_crossing_its_frame_end_is_refused() -> None:
    """The walk's other early stop: a BINSTRING whose signed length is negative, read across the frame's end."""
    body = b"T\xff\xff"  # BINSTRING, the first two bytes of its 4-byte length inside the frame
    blob = b"\x80\x02\x95" + len(body).to_bytes(8, "little") + body + b"\xff\xff."
    with pytest.raises(FormatError, match="BINSTRING: it runs past the end of its frame at offset 14"):
        load_restricted(io.BytesIO(blob), path_for_errors="x.pkl")

# ---- idx ---------------------------------------------------------------------------------------------------
def test_idx_dimensions_claiming_more_than_the_file_are_refused_before_reading(tmp_path: Path) -> None:
    """Found writing the idx target: an 8-byte plain file claiming 3 GiB made ``read`` reserve 3 GiB first.

    Under an address-space limit below the claim that was a MemoryError; now it is the truncation error,
    with the same offset a gzip file of the same bytes gives.
    """
    path = tmp_path / "lying-idx1-ubyte"
    path.write_bytes(bytes((0, 0, 8, 1)) + struct.pack(">I", 3 << 30))
    child = textwrap.dedent(f"""
        from tasks.formats.errors import IdxFormatError
        from tasks.datasets.mnist.idx import read_idx
        try:
            read_idx({str(path)!r})
        except IdxFormatError as exc:
            print("IdxFormatError", exc.offset)
    """)
    done = run_child(child, address_space_mb=1536)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["IdxFormatError", "8"]


# From atheris (target idx): 8 dimensions, two of them zero, the others multiplying far past 2**63.
FUZZ_IDX_EMPTY_HUGE_SHAPE = (
    b'\x00\x00\x08\x08\x03\x00\x00\xea`\x00\x00\x10\x01\x00\x00\x00\x00\x00\x00\x00'
    b'\x00\x00\x00\x00\x1c\x98\x98\x98\x98\x98\x98\x98\x98\x98\x98\x98'
)


def test_idx_empty_shape_too_big_for_numpy_is_an_idx_error(tmp_path: Path) -> None:
    """Was ValueError "cannot reshape array of size 0 into shape (50331882,1610612752,16777216,0,0,...)"."""
    from tasks.datasets.mnist.idx import read_idx
    from tasks.formats.errors import IdxFormatError

    path = tmp_path / "fuzzed.idx"
    path.write_bytes(FUZZ_IDX_EMPTY_HUGE_SHAPE)
    with pytest.raises(IdxFormatError, match="non-zero sizes overflow") as caught:
        read_idx(path)
    assert caught.value.path == str(path) and caught.value.offset == 4


def test_idx_empty_file_of_real_images_still_reads(tmp_path: Path) -> None:
    from tasks.datasets.mnist.idx import read_idx, write_idx

    path = tmp_path / "t10k-images-idx3-ubyte"
    write_idx(path, np.zeros((0, 28, 28), np.uint8))
    assert read_idx(path).shape == (0, 28, 28)


# Found by bench/fuzz after the memo scan: a Python 2 string that is not ASCII stopped pickletools.genops before
# the opcodes that followed (out of memory under -rss_limit_mb=2048). The scan now reads past such strings.
FUZZ_MEMO_AFTER_UNDECODABLE = (
    b'\x80\x05\x95|\x00\x00\x00\x00\x00\x00\x00\x8c\x13numpy._core.numeric\x94\x8c\x0b_from'
    b'buffer\x94\x93\x94(\x96\x06\x00\x00\x00\x00\x00\x00\x00\x00\x01\x01\x01\x01\x01\x94\x8c\x05numpy\x94\x8c\x05dtyp'
    b'e\x94\x93\x94\x8c\x02b2\x94\x89\x80\x05\x95|\x00\x00\x00\x00\x00\x00\x00\x8c\x13numpy._core.numer'
    b'ic\x94\x8c\x0b_frombuffer\x94\x93\x94(\x96\x06\x00\x00\x00\x00\x00\x00\x00\x00\x01\x01\x01\x01/\x94\x8c\x05nu'
    b'mpy\x94\x80\x02}q\x00(c_code\x88\x87\x94R\x94(K\x03\x8c\x01|\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff'
    b'\xffK\x00t\x94\xffcs\nencode\nq\x01X\x0b\x00\x00\x00batch_labelq\x02X\x06\x00\x00'
    b'\x00latin1q\x03\x86q\x04Rq\x05h\x01X\x05\x00\x00\x00trainq\xff\xff\xff\xff\xff\xff\x0cbK\x02K\x03'
    b'\x86\x94\x8c\x01C\x94t\x94R\x06h\x03\x86q\x07Rq\x08h\x01X\x0b\x00\x00\x00fine_labelsq\th\x03'
    b'\x86q\nRq\x94.\x0b]q\x0c(K|q!N\x98\xc2\x97\xc2\x98\xc2\xa8\x86\xc2\x80\x02\x7ftrgj\x8cwtys\xc2\xc2'
    b'\x82\xc2recon'
)


def test_a_pickle_undecodable_before_its_memo_opcodes_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(FUZZ_MEMO_AFTER_UNDECODABLE)
    with pytest.raises(FormatError, match="data_batch_1"):
        load_restricted(path)
