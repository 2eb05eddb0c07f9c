"""The restricted unpickler: loads numeric data pickles, refuses code and odd objects before they run."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from tasks.formats.errors import FormatError, UnsafePickleError
from tasks.formats.safe_pickle import load_restricted

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
REAL_META = FIXTURES / "cifar10_real_meta" / "batches.meta"
BOM_META = FIXTURES / "cifar10_real_meta" / "batches.meta.BOM_CORRUPTED_negative"


class _RunsShell:
    """Pickles as ``os.system(command)``: what a malicious download would contain."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


class _CallsEval:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_round_trip_of_numeric_arrays_and_containers(tmp_path: Path, protocol: int) -> None:
    data = {
        b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072),
        b"floats": np.linspace(0, 1, 5, dtype=np.float32),
        b"labels": [3, 7],
        "nested": (None, True, 1.5, "text", [b"x"]),
    }
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))

    loaded = load_restricted(path)

    np.testing.assert_array_equal(loaded[b"data"], data[b"data"])
    assert loaded[b"data"].dtype == np.uint8
    np.testing.assert_array_equal(loaded[b"floats"], data[b"floats"])
    assert loaded[b"labels"] == [3, 7]
    assert loaded["nested"] == data["nested"]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_arrays_of_every_layout_load_as_numpy_loads_them(protocol: int) -> None:
    """Fortran order, big-endian (numpy loads it native), bool, float16, 0-d, empty (protocol 2 writes its b''
    as a ``bytes()`` call), strided and large (numpy keeps a reference to the bytes) arrays."""
    arrays = [np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)), np.arange(5, dtype=">f8"),
              np.array([True, False]), np.arange(4, dtype=np.float16), np.array(7, dtype=np.int64),
              np.zeros((0, 3), np.uint8), np.arange(6, dtype=np.uint16)[::2],
              np.arange(3000, dtype=np.uint8).reshape(3, 1000)]
    for array in arrays:
        blob = pickle.dumps(array, protocol=protocol)
        loaded, expected = load_restricted(io.BytesIO(blob)), pickle.loads(blob)
        assert type(loaded) is np.ndarray
        assert (loaded.dtype, loaded.shape, loaded.strides) == (expected.dtype, expected.shape, expected.strides)
        assert loaded.flags.writeable == expected.flags.writeable
        np.testing.assert_array_equal(loaded, array)
    assert load_restricted(io.BytesIO(pickle.dumps([b"", b"x"], protocol=2))) == [b"", b"x"]


def test_bytes_with_arguments_is_refused() -> None:
    hostile = b"\x80\x02c__builtin__\nbytes\nK\x05\x85R."  # bytes(5)
    with pytest.raises(UnsafePickleError, match="bytes called with 1 argument"):
        load_restricted(io.BytesIO(hostile), path_for_errors="x.pkl")


def test_accepts_a_file_object_and_names_it_in_errors(tmp_path: Path) -> None:
    assert load_restricted(io.BytesIO(pickle.dumps([1, 2], protocol=2))) == [1, 2]
    with pytest.raises(FormatError, match="my-source"):
        load_restricted(io.BytesIO(b"not a pickle"), path_for_errors="my-source")


@pytest.mark.parametrize("protocol", [2, 4])
def test_os_system_payload_is_rejected_before_it_runs(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({b"data": _RunsShell(f"touch {marker}")}, protocol=protocol))

    with pytest.raises(UnsafePickleError) as caught:
        load_restricted(path)

    assert not marker.exists()
    message = str(caught.value)
    assert str(path) in message
    assert "system" in message  # names the global it refused (posix.system / nt.system)


def test_builtins_eval_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "eval.pkl"
    path.write_bytes(pickle.dumps(_CallsEval(), protocol=2))
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        load_restricted(path)


@pytest.mark.parametrize("protocol", [2, 5])
def test_object_dtype_array_is_rejected(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "objects.pkl"
    path.write_bytes(pickle.dumps({b"data": np.array([1, "a", None], dtype=object)}, protocol=protocol))
    with pytest.raises(UnsafePickleError, match="dtype object") as caught:
        load_restricted(path)
    assert str(path) in str(caught.value)


def test_numpy_scalar_is_rejected(tmp_path: Path) -> None:
    """numpy scalars need numpy.core.multiarray.scalar, which is not on the allow-list."""
    path = tmp_path / "scalar.pkl"
    path.write_bytes(pickle.dumps(np.int64(3), protocol=2))
    with pytest.raises(UnsafePickleError, match="scalar"):
        load_restricted(path)


def test_truncated_pickle_is_a_format_error_naming_the_file(tmp_path: Path) -> None:
    whole = pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}, protocol=2)
    path = tmp_path / "half.pkl"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(FormatError, match="truncated or malformed") as caught:
        load_restricted(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("payload", [b"", b"\xff\xfe\x80\x02", b"(dp0\n.", b"\x80\x09."])
def test_non_pickle_leading_bytes_are_rejected_at_offset_0(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "odd.pkl"
    path.write_bytes(payload)
    with pytest.raises(FormatError, match="does not look like a pickle") as caught:
        load_restricted(path)
    assert caught.value.offset == 0
    assert "byte offset 0" in str(caught.value)


@pytest.mark.skipif(not REAL_META.is_file(), reason=f"shared fixture {REAL_META} not present")
def test_real_cifar10_meta_loads() -> None:
    meta = load_restricted(REAL_META)
    assert meta[b"num_vis"] == 3072
    assert meta[b"label_names"][0] == b"airplane"


@pytest.mark.skipif(not BOM_META.is_file(), reason=f"shared fixture {BOM_META} not present")
def test_bom_corrupted_real_meta_is_rejected_with_clear_message() -> None:
    with pytest.raises(FormatError) as caught:
        load_restricted(BOM_META)
    message = str(caught.value)
    assert "does not look like a pickle" in message
    assert "ff fe" in message
    assert "byte offset 0" in message
    assert BOM_META.name in message


def _frame_overrun() -> bytes:
    """A protocol-4 pickle whose first frame is 3 bytes long but holds a 5-byte opcode (BININT)."""
    return b"\x80\x04\x95" + (3).to_bytes(8, "little") + b"J\x01\x00\x00\x00."


def test_a_file_and_a_stream_of_the_same_bytes_are_refused_alike(tmp_path: Path) -> None:
    # A file is walked through a read-only map, a stream from its bytes: one verdict, one offset.
    path = tmp_path / "overrun.pkl"
    path.write_bytes(_frame_overrun())
    with pytest.raises(FormatError, match="past the end of its frame") as from_file:
        load_restricted(path)
    with pytest.raises(FormatError, match="past the end of its frame") as from_stream:
        load_restricted(io.BytesIO(_frame_overrun()), path_for_errors=str(path))
    assert from_file.value.offset == from_stream.value.offset == 11
    assert str(from_file.value) == str(from_stream.value)


def test_a_pickle_that_starts_inside_a_file_counts_offsets_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "embedded.bin"
    path.write_bytes(b"header--" + _frame_overrun())
    with open(path, "rb") as stream:
        stream.seek(8)
        with pytest.raises(FormatError, match="past the end of its frame at offset 14") as caught:
            load_restricted(stream)
    assert caught.value.offset == 11
    good = tmp_path / "embedded-good.bin"
    good.write_bytes(b"header--" + pickle.dumps({b"labels": [3, 1]}, protocol=4))
    with open(good, "rb") as stream:
        stream.seek(8)
        assert load_restricted(stream) == {b"labels": [3, 1]}


def test_a_gzip_stream_is_walked_by_its_own_bytes(tmp_path: Path) -> None:
    # GzipFile.fileno() answers with the compressed file's descriptor: a caller's stream is never mapped.
    import gzip

    path = tmp_path / "batch.pkl.gz"
    value = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), b"labels": [0, 1, 2]}
    path.write_bytes(gzip.compress(pickle.dumps(value, protocol=4)))
    with gzip.open(path, "rb") as stream:
        loaded = load_restricted(stream, path_for_errors=str(path))
    assert loaded[b"labels"] == [0, 1, 2]
    np.testing.assert_array_equal(loaded[b"data"], value[b"data"])
    # The walk sees the decompressed opcodes: a memo index no pickle has is refused inside a gzip stream too.
    hostile = tmp_path / "memo.pkl.gz"
    hostile.write_bytes(gzip.compress(b"\x80\x04]r" + (1000).to_bytes(4, "little") + b"."))
    with gzip.open(hostile, "rb") as stream, pytest.raises(FormatError, match="memo index 1000"):
        load_restricted(stream, path_for_errors=str(hostile))
