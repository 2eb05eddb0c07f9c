"""safe_extract: good tar/zip archives extract; every unsafe member is refused and leaves nothing behind."""

from __future__ import annotations

import io
import stat
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from tasks.formats.errors import ArchiveError
from tasks.sources import archive as archive_module
from tasks.sources.archive import safe_extract

GOOD_FILES = {
    "cifar/data_batch_1": b"\x80\x02batch one" * 50,
    "cifar/sub/readme.txt": b"hello\n",
    "top.txt": b"top level",
}


# ---------------------------------------------------------------------------------------------------------
# Archive builders
# ---------------------------------------------------------------------------------------------------------


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def special_member(name: str, member_type: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = member_type
    info.linkname = linkname
    if member_type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, None


def dir_member(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def write_zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        for name, data in members:
            zipped.writestr(name, data)
    return path


def good_tar_members() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [dir_member("cifar"), dir_member("cifar/sub")] + [
        file_member(name, data) for name, data in GOOD_FILES.items()
    ]


def entries_below(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*")}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Archives go in ``workdir``; extraction goes to ``workdir/out/dest`` so escapes land in ``out``."""
    (tmp_path / "out").mkdir()
    return tmp_path


def assert_refused(archive: Path, dest: Path, member: str, **limits: int) -> ArchiveError:
    before = entries_below(archive.parent)
    with pytest.raises(ArchiveError) as caught:
        safe_extract(archive, dest, **limits)
    error = caught.value
    assert repr(member) in str(error), str(error)
    assert str(archive) in str(error)
    assert not dest.exists()
    assert entries_below(archive.parent) == before, "nothing written anywhere (no staging dir, no escapes)"
    return error


# ---------------------------------------------------------------------------------------------------------
# Good archives
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_good_tar_extracts_every_file(workdir: Path, mode: str) -> None:
    archive = write_tar(workdir / "data.bin", good_tar_members(), mode)  # the name says nothing of the type
    dest = workdir / "out" / "dest"
    extracted = safe_extract(archive, dest)
    assert extracted == list(GOOD_FILES)
    for name, data in GOOD_FILES.items():
        assert (dest / name).read_bytes() == data
    assert entries_below(workdir / "out") == {"dest", "dest/cifar", "dest/cifar/sub"} | {
        f"dest/{name}" for name in GOOD_FILES
    }


def test_good_zip_extracts_every_file(workdir: Path) -> None:
    archive = write_zip(workdir / "data.tar.gz", [("cifar/", b"")] + list(GOOD_FILES.items()))
    dest = workdir / "out" / "dest"
    extracted = safe_extract(archive, dest)
    assert extracted == list(GOOD_FILES)
    for name, data in GOOD_FILES.items():
        assert (dest / name).read_bytes() == data


def test_dot_slash_prefix_and_inner_dotdot_that_stays_inside_are_fine(workdir: Path) -> None:
    archive = write_tar(
        workdir / "a.tgz",
        [dir_member("./"), file_member("./x/y.txt", b"y"), file_member("x/../z.txt", b"z")],
    )
    dest = workdir / "out" / "dest"
    assert safe_extract(archive, dest) == ["x/y.txt", "z.txt"]
    assert (dest / "x" / "y.txt").read_bytes() == b"y"
    assert (dest / "z.txt").read_bytes() == b"z"


def test_read_only_directory_in_archive_does_not_block_its_files(workdir: Path) -> None:
    info, _ = dir_member("ro")
    info.mode = 0o555
    archive = write_tar(workdir / "a.tar", [(info, None), file_member("ro/f.txt", b"f")], "w")
    dest = workdir / "out" / "dest"
    safe_extract(archive, dest)
    assert (dest / "ro" / "f.txt").read_bytes() == b"f"


def test_not_an_archive(workdir: Path) -> None:
    junk = workdir / "junk.tar.gz"
    junk.write_bytes(b"this is not an archive at all" * 20)
    with pytest.raises(ArchiveError, match="not a tar or zip"):
        safe_extract(junk, workdir / "out" / "dest")
    assert not (workdir / "out" / "dest").exists()


def test_existing_dest_is_left_alone(workdir: Path) -> None:
    archive = write_tar(workdir / "a.tgz", good_tar_members())
    dest = workdir / "out" / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        safe_extract(archive, dest)
    assert entries_below(dest) == {"keep.txt"}


def test_truncated_tar_gz_is_an_archive_error_and_leaves_nothing(workdir: Path) -> None:
    whole = write_tar(workdir / "whole.tgz", [file_member("big.bin", bytes(range(256)) * 400)])
    cut = workdir / "cut.tgz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    with pytest.raises(ArchiveError):
        safe_extract(cut, workdir / "out" / "dest")
    assert entries_below(workdir / "out") == set()


# ---------------------------------------------------------------------------------------------------------
# Unsafe tar members
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(params=[True, False], ids=["stdlib-filter", "own-checks-only"])
def tar_filters(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run each unsafe-tar case with and without the stdlib extraction filter: behaviour must not differ."""
    monkeypatch.setattr(archive_module, "_HAS_TAR_FILTERS", request.param)
    return request.param


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "a/b/../../../evil.txt", "..\\evil.txt"])
def test_tar_dotdot_escape(workdir: Path, tar_filters: bool, name: str) -> None:
    archive = write_tar(workdir / "a.tgz", [file_member("ok.txt", b"ok"), file_member(name, b"evil")])
    assert_refused(archive, workdir / "out" / "dest", name)
    assert not (workdir / "evil.txt").exists()


def test_tar_absolute_path(workdir: Path, tar_filters: bool) -> None:
    target = workdir / "out" / "absolute-evil.txt"
    archive = write_tar(workdir / "a.tgz", [file_member(str(target), b"evil")])
    assert_refused(archive, workdir / "out" / "dest", str(target))
    assert not target.exists()


def test_tar_symlink_pointing_outside(workdir: Path, tar_filters: bool) -> None:
    outside = workdir / "out"
    archive = write_tar(
        workdir / "a.tgz",
        [special_member("escape", tarfile.SYMTYPE, str(outside)), file_member("escape/evil.txt", b"evil")],
    )
    assert_refused(archive, outside / "dest", "escape")
    assert not (outside / "evil.txt").exists()


def test_tar_relative_symlink_inside_is_still_refused(workdir: Path, tar_filters: bool) -> None:
    archive = write_tar(
        workdir / "a.tgz", [file_member("real.txt", b"r"), special_member("alias.txt", tarfile.SYMTYPE, "real.txt")]
    )
    assert_refused(archive, workdir / "out" / "dest", "alias.txt")


def test_tar_hard_link(workdir: Path, tar_filters: bool) -> None:
    archive = write_tar(
        workdir / "a.tgz", [file_member("real.txt", b"r"), special_member("hard.txt", tarfile.LNKTYPE, "real.txt")]
    )
    assert_refused(archive, workdir / "out" / "dest", "hard.txt")


@pytest.mark.parametrize("member_type", [tarfile.CHRTYPE, tarfile.BLKTYPE], ids=["char", "block"])
def test_tar_device(workdir: Path, tar_filters: bool, member_type: bytes) -> None:
    archive = write_tar(workdir / "a.tgz", [special_member("null", member_type)])
    error = assert_refused(archive, workdir / "out" / "dest", "null")
    assert "device" in str(error)


def test_tar_fifo(workdir: Path, tar_filters: bool) -> None:
    archive = write_tar(workdir / "a.tgz", [special_member("pipe", tarfile.FIFOTYPE)])
    error = assert_refused(archive, workdir / "out" / "dest", "pipe")
    assert "FIFO" in str(error)


def test_tar_total_size_cap(workdir: Path, tar_filters: bool) -> None:
    archive = write_tar(
        workdir / "a.tgz", [file_member("one.bin", b"1" * 600), file_member("two.bin", b"2" * 600)]
    )
    error = assert_refused(archive, workdir / "out" / "dest", "two.bin", max_total_bytes=1000)
    assert "1000" in str(error)


def test_tar_too_many_members(workdir: Path, tar_filters: bool) -> None:
    archive = write_tar(workdir / "a.tgz", [file_member(f"f{i}.txt", b"x") for i in range(4)])
    assert_refused(archive, workdir / "out" / "dest", "f2.txt", max_members=2)


def test_tar_unsafe_member_after_good_ones_leaves_no_partial_dest(workdir: Path, tar_filters: bool) -> None:
    members = good_tar_members() + [special_member("late-link", tarfile.SYMTYPE, "/etc/passwd")]
    archive = write_tar(workdir / "a.tgz", members)
    assert_refused(archive, workdir / "out" / "dest", "late-link")
    assert entries_below(workdir / "out") == set()


# ---------------------------------------------------------------------------------------------------------
# Unsafe zip members
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "..\\evil.txt"])
def test_zip_dotdot_escape(workdir: Path, name: str) -> None:
    archive = write_zip(workdir / "a.zip", [("ok.txt", b"ok"), (zipfile.ZipInfo(name), b"evil")])
    assert_refused(archive, workdir / "out" / "dest", name)
    assert not (workdir / "evil.txt").exists()


@pytest.mark.parametrize("absolute", ["/tmp/zip-absolute-evil.txt", "C:/evil.txt"])
def test_zip_absolute_path(workdir: Path, absolute: str) -> None:
    archive = write_zip(workdir / "a.zip", [(zipfile.ZipInfo(absolute), b"evil")])
    assert_refused(archive, workdir / "out" / "dest", absolute)


def test_zip_symlink_member(workdir: Path) -> None:
    info = zipfile.ZipInfo("link")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = write_zip(workdir / "a.zip", [(info, b"/etc/passwd")])
    assert_refused(archive, workdir / "out" / "dest", "link")


def test_zip_declared_size_over_cap(workdir: Path) -> None:
    archive = write_zip(workdir / "a.zip", [("small.bin", b"s" * 100), ("big.bin", b"\0" * 5000)])
    assert_refused(archive, workdir / "out" / "dest", "big.bin", max_total_bytes=1000)


def lie_about_size(archive: Path, name: str, declared: int) -> None:
    """Patch the uncompressed size of ``name`` in both its local header and the central directory."""
    data = bytearray(archive.read_bytes())
    encoded = name.encode()
    local = data.index(b"PK\x03\x04")  # the first local header belongs to the only member
    assert data[local + 30 : local + 30 + len(encoded)] == encoded
    struct.pack_into("<I", data, local + 22, declared)
    central = data.index(b"PK\x01\x02")
    assert data[central + 46 : central + 46 + len(encoded)] == encoded
    struct.pack_into("<I", data, central + 24, declared)
    archive.write_bytes(bytes(data))


def test_zip_bomb_with_lying_size_header_is_stopped(workdir: Path) -> None:
    archive = write_zip(workdir / "bomb.zip", [("bomb.bin", b"\0" * 2_000_000)])
    lie_about_size(archive, "bomb.bin", 100)
    with zipfile.ZipFile(archive) as zipped:
        assert zipped.getinfo("bomb.bin").file_size == 100, "the header now lies"
    assert_refused(archive, workdir / "out" / "dest", "bomb.bin", max_total_bytes=1000)


def test_zip_too_many_members(workdir: Path) -> None:
    archive = write_zip(workdir / "a.zip", [(f"f{i}.txt", b"x") for i in range(5)])
    assert_refused(archive, workdir / "out" / "dest", "f3.txt", max_members=3)
