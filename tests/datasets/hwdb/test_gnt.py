"""GNT codec: round trips across block boundaries and a located GntFormatError for every malformation."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from tasks.datasets.hwdb.gnt import count_gnt_samples, iter_gnt
from tasks.formats.errors import GntFormatError
from tests.fakes.gnt import encode_sample, write_gnt

CHARS = ["啊", "阿", "埃", "挨", "哎", "唉", "哀", "皑"]


def _samples(count: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        height, width = (int(v) for v in rng.integers(1, 40, 2))
        out.append((CHARS[i % len(CHARS)], rng.integers(0, 256, (height, width), dtype=np.uint8)))
    return out


def _header(size: int, tag: bytes, width: int, height: int) -> bytes:
    return struct.pack("<I", size) + tag + struct.pack("<HH", width, height)


@pytest.fixture()
def good_file(tmp_path: Path) -> tuple[Path, list[tuple[str, np.ndarray]]]:
    samples = _samples(25)
    path = tmp_path / "good.gnt"
    assert write_gnt(path, samples) == 25
    return path, samples


@pytest.mark.parametrize("block_size", [1, 7, 64, 1000, 4 << 20])
def test_round_trip_any_block_size(good_file: tuple[Path, list], block_size: int) -> None:
    path, samples = good_file
    decoded = list(iter_gnt(path, block_size=block_size))
    assert [s.tag for s in decoded] == [tag for tag, _ in samples]
    assert [s.index for s in decoded] == list(range(len(samples)))
    offset = 0
    for sample, (_, bitmap) in zip(decoded, samples, strict=True):
        np.testing.assert_array_equal(sample.bitmap, bitmap)
        assert sample.bitmap.dtype == np.uint8
        assert sample.offset == offset
        offset += 10 + bitmap.size
    assert offset == path.stat().st_size


def test_samples_straddle_blocks(good_file: tuple[Path, list]) -> None:
    path, samples = good_file
    offsets = [s.offset for s in iter_gnt(path, block_size=64)]
    sizes = [10 + b.size for _, b in samples]
    assert any(o // 64 != (o + size - 1) // 64 for o, size in zip(offsets, sizes, strict=True))


def test_yielded_bitmaps_are_independent_of_the_buffer(good_file: tuple[Path, list]) -> None:
    path, samples = good_file
    decoded = list(iter_gnt(path, block_size=64))
    decoded[0].bitmap[...] = 0  # writable copy; must not corrupt later samples
    np.testing.assert_array_equal(decoded[-1].bitmap, samples[-1][1])


def test_tag_is_gb2312_lead_byte_first(tmp_path: Path) -> None:
    path = tmp_path / "one.gnt"
    write_gnt(path, [("啊", np.full((2, 3), 7, np.uint8))])
    raw = path.read_bytes()
    assert raw[4:6] == b"\xb0\xa1"  # '啊' is B0A1 in GB2312
    assert raw[:4] == (16).to_bytes(4, "little") and raw[6:10] == b"\x03\x00\x02\x00"
    (sample,) = iter_gnt(path)
    assert sample.tag == "啊" and sample.bitmap.shape == (2, 3)


def test_empty_file_has_no_samples(tmp_path: Path) -> None:
    path = tmp_path / "empty.gnt"
    path.write_bytes(b"")
    assert list(iter_gnt(path)) == []
    assert count_gnt_samples(path) == 0


def test_count_agrees_with_iteration(good_file: tuple[Path, list]) -> None:
    path, samples = good_file
    assert count_gnt_samples(path) == len(samples) == sum(1 for _ in iter_gnt(path))


def test_writer_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="GB2312"):
        encode_sample("a", np.zeros((2, 2), np.uint8))  # 1-byte code
    with pytest.raises(ValueError, match="GB2312"):
        encode_sample("😀", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        encode_sample("啊", np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        encode_sample("啊", np.zeros((0, 2), np.uint8))


# ------------------------------------------------------------------------------------------ malformed

GOOD = encode_sample("阿", np.full((3, 4), 200, np.uint8))  # 22 bytes
ONE_BY_ONE = b"\x00"


def _malformed_cases() -> dict[str, tuple[bytes, str]]:
    tag = "埃".encode("gb2312")
    return {
        "truncated_header": (GOOD + GOOD[:6], "truncated header"),
        "truncated_bitmap": (GOOD + GOOD[:-5], "truncated bitmap"),
        "size_mismatch": (GOOD + _header(99, tag, 2, 2) + bytes(4), r"size field 99 != 10 \+ 2\*2"),
        "zero_width": (GOOD + _header(10, tag, 0, 5), "zero-sized bitmap 0x5"),
        "zero_height": (GOOD + _header(10, tag, 5, 0), "zero-sized bitmap 5x0"),
        "too_wide": (GOOD + _header(10 + 2000, tag, 2000, 1) + bytes(2000), "exceeds max_dim=1024"),
        "bad_tag": (GOOD + _header(11, b"\xff\xff", 1, 1) + ONE_BY_ONE, "tag bytes ff ff are not one GB2312"),
        "ascii_tag": (GOOD + _header(11, b"ab", 1, 1) + ONE_BY_ONE, "tag bytes 61 62 are not one GB2312"),
        "trail_byte_out_of_range": (GOOD + _header(11, b"\xb0\x20", 1, 1) + ONE_BY_ONE, "tag bytes b0 20"),
    }


CASES = _malformed_cases()


@pytest.mark.parametrize("block_size", [8, 4 << 20])
@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_sample_raises_located_error(tmp_path: Path, case: str, block_size: int) -> None:
    payload, match = CASES[case]
    path = tmp_path / f"{case}.gnt"
    path.write_bytes(payload)

    with pytest.raises(GntFormatError, match=match) as caught:
        list(iter_gnt(path, block_size=block_size))

    error = caught.value
    message = str(error)
    assert path.name in message
    assert error.offset == len(GOOD) and f"byte offset {len(GOOD)}" in message
    assert error.index == 1 and "sample 1" in message


@pytest.mark.parametrize("case", sorted(CASES))
def test_count_raises_the_same_error(tmp_path: Path, case: str) -> None:
    payload, match = CASES[case]
    path = tmp_path / f"{case}.gnt"
    path.write_bytes(payload)
    with pytest.raises(GntFormatError, match=match) as caught:
        count_gnt_samples(path)
    assert caught.value.offset == len(GOOD) and caught.value.index == 1


def test_good_samples_before_the_fault_are_yielded(tmp_path: Path) -> None:
    path = tmp_path / "cut.gnt"
    path.write_bytes(GOOD + GOOD + GOOD[:15])
    iterator = iter_gnt(path, block_size=16)
    assert [next(iterator).index, next(iterator).index] == [0, 1]
    with pytest.raises(GntFormatError, match="truncated bitmap, 5 of 12 bytes"):
        next(iterator)


def test_max_dim_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "big.gnt"
    write_gnt(path, [("啊", np.zeros((10, 50), np.uint8))])
    assert len(list(iter_gnt(path, max_dim=50))) == 1
    with pytest.raises(GntFormatError, match="exceeds max_dim=49"):
        list(iter_gnt(path, max_dim=49))
