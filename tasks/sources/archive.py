"""Safe extraction of tar (plain, gzip, bzip2, xz) and zip archives. No Luigi, no TensorFlow.

Only regular files and directories are extracted. Absolute paths, ``..`` escapes, links of any kind,
devices, FIFOs, too many members and too many bytes are rejected with ArchiveError naming the archive and
the member. Extraction happens in a temporary sibling of ``dest`` that is renamed into place only when
every member succeeded, so ``dest`` either holds the whole archive or does not exist.
"""

from __future__ import annotations

import errno
import gzip
import lzma
import os
import posixpath
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tasks.formats.errors import ArchiveError

DEFAULT_MAX_TOTAL_BYTES = 8 << 30
DEFAULT_MAX_MEMBERS = 5_000_000
TEMP_PREFIX = ".extract-"
_COPY_BLOCK = 1 << 20
# What tarfile and the decompressors raise on corrupt or truncated input.
_CORRUPT_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)
# UnicodeDecodeError: a name flagged UTF-8 that is not (zipfile raises it while reading the directory; bench/fuzz).
_CORRUPT_ZIP_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, NotImplementedError,
                       UnicodeDecodeError)
# Raised when two members disagree about whether a path is a file or a directory.
_PATH_CONFLICT_ERRORS = (FileExistsError, NotADirectoryError, IsADirectoryError)
_HAS_TAR_FILTERS = hasattr(tarfile, "data_filter")


def safe_extract(
    archive: Path,
    dest: Path,
    *,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> list[str]:
    """Extract ``archive`` (tar, tar.gz/tgz, tar.bz2, tar.xz or zip, detected by content) into ``dest``.

    Returns the relative POSIX paths of the regular files extracted, in archive order (directories are
    created but not listed). ``dest`` must not exist yet. On any error ``dest`` is not created and the
    temporary directory is removed.
    """
    archive = Path(archive)
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        raise FileExistsError(f"{dest}: extraction target already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{dest.name}-", dir=dest.parent))
    try:
        extracted = _extract_by_content(archive, staging, max_total_bytes, max_members)
        os.chmod(staging, 0o755)
        os.rename(staging, dest)
    except BaseException:
        _remove_tree(staging)
        raise
    return extracted


def _extract_by_content(archive: Path, staging: Path, max_total_bytes: int, max_members: int) -> list[str]:
    try:
        is_tar = tarfile.is_tarfile(archive)
    except _CORRUPT_TAR_ERRORS as error:  # is_tarfile lets a truncated gzip stream's EOFError out (bench/fuzz)
        raise ArchiveError(f"corrupt or truncated tar: {error}", path=archive) from error
    if is_tar:
        return _extract_tar(archive, staging, max_total_bytes, max_members)
    try:
        is_zip = zipfile.is_zipfile(archive)
    except _CORRUPT_ZIP_ERRORS as error:  # is_zipfile lets "zipfiles that span multiple disks" out (bench/fuzz)
        raise ArchiveError(f"corrupt or unsupported zip: {error}", path=archive) from error
    if is_zip:
        return _extract_zip(archive, staging, max_total_bytes, max_members)
    raise ArchiveError("not a tar or zip archive", path=archive)


def _remove_tree(root: Path) -> None:
    """Delete ``root`` even if extraction left read-only directories in it."""
    if not root.exists():
        return
    os.chmod(root, 0o700)
    for directory, subdirectories, _files in os.walk(root):
        for name in subdirectories:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, 0o700)
    shutil.rmtree(root)


# --------------------------------------------------------------------------------------------------------
# Member names
# --------------------------------------------------------------------------------------------------------


def safe_member_path(archive: Path, name: str) -> str:
    """The normalised relative POSIX path of a member, or ArchiveError if it could leave the target.

    Backslashes count as separators, so a Windows-made ``..\\evil`` is caught as well. ``"./"`` gives
    ``"."`` (the extraction directory itself).
    """
    if "\0" in name:  # a pax header can carry one; no file system takes it (os calls raise ValueError; bench/fuzz)
        raise ArchiveError("NUL byte in the member name", path=archive, member=name)
    unified = name.replace("\\", "/")
    if unified.startswith("/") or _has_drive(unified):
        raise ArchiveError("absolute path", path=archive, member=name)
    if not unified:
        raise ArchiveError("empty member name", path=archive, member=name)
    normalised = posixpath.normpath(unified)
    if ".." in PurePosixPath(normalised).parts:
        raise ArchiveError("path escapes the extraction directory ('..')", path=archive, member=name)
    return normalised


def _has_drive(name: str) -> bool:
    return len(name) >= 2 and name[1] == ":" and name[0].isalpha()


def _target_inside(staging: Path, relative: str, archive: Path, member: str) -> Path:
    target = staging / relative
    resolved = target.resolve()
    if resolved != staging.resolve() and staging.resolve() not in resolved.parents:
        raise ArchiveError("path resolves outside the extraction directory", path=archive, member=member)
    return target


class _Budget:
    """Running member count and byte total, so limits stop a hostile archive as soon as it crosses them."""

    def __init__(self, archive: Path, max_total_bytes: int, max_members: int) -> None:
        self.archive = archive
        self.max_total_bytes = max_total_bytes
        self.max_members = max_members
        self.members = 0
        self.total_bytes = 0

    def count_member(self, name: str) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise ArchiveError(f"more than {self.max_members} members", path=self.archive, member=name)

    def add_bytes(self, name: str, size: int) -> None:
        self.total_bytes += size
        if self.total_bytes > self.max_total_bytes:
            raise ArchiveError(
                f"total size {self.total_bytes} bytes exceeds the cap of {self.max_total_bytes}",
                path=self.archive,
                member=name,
            )


# --------------------------------------------------------------------------------------------------------
# tar
# --------------------------------------------------------------------------------------------------------


def _extract_tar(archive: Path, staging: Path, max_total_bytes: int, max_members: int) -> list[str]:
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members = _checked_tar_members(archive, tar, _Budget(archive, max_total_bytes, max_members))
            _extract_tar_members(archive, tar, members, staging)
    except _CORRUPT_TAR_ERRORS as error:
        raise ArchiveError(f"corrupt or truncated tar: {error}", path=archive) from error
    except _PATH_CONFLICT_ERRORS as error:
        raise ArchiveError(f"members conflict (file versus directory): {error}", path=archive) from error
    return _unique([member.name for member in members if member.isreg()])


def _checked_tar_members(archive: Path, tar: tarfile.TarFile, budget: _Budget) -> list[tarfile.TarInfo]:
    """Every member, each checked before the next header is read; names replaced by normalised ones."""
    checked = []
    for member in tar:
        budget.count_member(member.name)
        _reject_unsafe_tar_type(archive, member)
        original_name = member.name
        member.name = safe_member_path(archive, original_name)
        if member.name == ".":
            if not member.isdir():
                raise ArchiveError("a file cannot be named '.'", path=archive, member=original_name)
            continue  # "./" is the extraction directory itself
        if member.isreg():
            budget.add_bytes(member.name, member.size)
        checked.append(member)
    return checked


def _reject_unsafe_tar_type(archive: Path, member: tarfile.TarInfo) -> None:
    if member.issym():
        raise ArchiveError(f"symbolic link (to {member.linkname!r})", path=archive, member=member.name)
    if member.islnk():
        raise ArchiveError(f"hard link (to {member.linkname!r})", path=archive, member=member.name)
    if member.ischr() or member.isblk():
        raise ArchiveError("device file", path=archive, member=member.name)
    if member.isfifo():
        raise ArchiveError("FIFO (named pipe)", path=archive, member=member.name)
    if member.issparse():
        raise ArchiveError("sparse file", path=archive, member=member.name)
    if not (member.isreg() or member.isdir()):
        raise ArchiveError(f"unsupported member type {member.type!r}", path=archive, member=member.name)


def _extract_tar_members(
    archive: Path, tar: tarfile.TarFile, members: list[tarfile.TarInfo], staging: Path
) -> None:
    for member in members:
        _target_inside(staging, member.name, archive, member.name)
        _drop_special_mode_bits(member)
    try:
        if _HAS_TAR_FILTERS:
            tar.extractall(staging, members=members, filter="data")
        else:
            tar.extractall(staging, members=members)
    except tarfile.FilterError as error:
        name = error.tarinfo.name if error.tarinfo is not None else None
        raise ArchiveError(f"rejected by the tar data filter: {error}", path=archive, member=name) from error


def _drop_special_mode_bits(member: tarfile.TarInfo) -> None:
    """What the stdlib "data" filter does to modes, done here too for Pythons without filters."""
    if member.isdir():
        member.mode = (member.mode | 0o700) & 0o755
    else:
        member.mode = (member.mode | 0o600) & 0o755
    member.uid = member.gid = os.getuid() if hasattr(os, "getuid") else 0
    member.uname = member.gname = ""


# --------------------------------------------------------------------------------------------------------
# zip
# --------------------------------------------------------------------------------------------------------


def _corrupt_zip_data(error: OSError) -> bool:
    """An OSError that zipfile or a decompressor raises on bad bytes, not one of the disk's.

    bz2 says "Invalid data stream" (no errno); an offset field pointing before the start of the file makes
    zipfile's seek fail with EINVAL (both found by bench/fuzz). ENOSPC, EACCES and the like stay OSErrors.
    """
    return error.errno is None or error.errno == errno.EINVAL


def _open_zip(archive: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive)
    except OSError as error:
        if not _corrupt_zip_data(error):
            raise
        raise ArchiveError(f"corrupt or unsupported zip: {error}", path=archive) from error


def _extract_zip(archive: Path, staging: Path, max_total_bytes: int, max_members: int) -> list[str]:
    try:
        with _open_zip(archive) as zipped:
            infos = zipped.infolist()
            _check_zip_directory(archive, infos, max_total_bytes, max_members)
            return _unique(_extract_zip_members(archive, zipped, infos, staging, max_total_bytes))
    except _CORRUPT_ZIP_ERRORS as error:
        raise ArchiveError(f"corrupt or unsupported zip: {error}", path=archive) from error
    except _PATH_CONFLICT_ERRORS as error:
        raise ArchiveError(f"members conflict (file versus directory): {error}", path=archive) from error


def _check_zip_directory(
    archive: Path, infos: list[zipfile.ZipInfo], max_total_bytes: int, max_members: int
) -> None:
    """Check every central-directory entry (names, types, declared sizes) before writing anything."""
    budget = _Budget(archive, max_total_bytes, max_members)
    for info in infos:
        budget.count_member(info.filename)
        safe_member_path(archive, info.filename)
        _reject_unsafe_zip_type(archive, info)
        if not info.is_dir():
            budget.add_bytes(info.filename, info.file_size)


def _reject_unsafe_zip_type(archive: Path, info: zipfile.ZipInfo) -> None:
    if info.flag_bits & 0x1:
        raise ArchiveError("encrypted member", path=archive, member=info.filename)
    mode = info.external_attr >> 16
    if mode == 0 or info.is_dir():
        return
    file_type = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise ArchiveError("symbolic link", path=archive, member=info.filename)
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise ArchiveError("device file", path=archive, member=info.filename)
    if stat.S_ISFIFO(mode):
        raise ArchiveError("FIFO (named pipe)", path=archive, member=info.filename)
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise ArchiveError(f"unsupported file type {oct(file_type)}", path=archive, member=info.filename)


def _extract_zip_members(
    archive: Path, zipped: zipfile.ZipFile, infos: list[zipfile.ZipInfo], staging: Path, max_total_bytes: int
) -> list[str]:
    extracted: list[str] = []
    written_total = 0
    for info in infos:
        relative = safe_member_path(archive, info.filename)
        target = _target_inside(staging, relative, archive, info.filename)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if relative == ".":
            raise ArchiveError("a file cannot be named '.'", path=archive, member=info.filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        written_total += _copy_zip_member(archive, zipped, info, target, max_total_bytes - written_total)
        extracted.append(relative)
    return extracted


def _copy_zip_member(
    archive: Path, zipped: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, bytes_left: int
) -> int:
    """Copy one member, counting real bytes: a header that understates the size cannot get past the caps."""
    try:
        return _copy_zip_member_bytes(archive, zipped, info, target, bytes_left)
    except _CORRUPT_ZIP_ERRORS as error:
        raise ArchiveError(f"corrupt member: {error}", path=archive, member=info.filename) from error
    except OSError as error:
        if not _corrupt_zip_data(error):
            raise
        raise ArchiveError(f"corrupt member: {error}", path=archive, member=info.filename) from error


def _copy_zip_member_bytes(
    archive: Path, zipped: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, bytes_left: int
) -> int:
    written = 0
    with zipped.open(info) as source, open(target, "wb") as sink:
        while block := source.read(_COPY_BLOCK):
            written += len(block)
            if written > info.file_size:
                raise ArchiveError(
                    f"member inflates past its declared size of {info.file_size} bytes",
                    path=archive,
                    member=info.filename,
                )
            if written > bytes_left:
                raise ArchiveError("total extracted bytes exceed the size cap", path=archive, member=info.filename)
            sink.write(block)
    return written


def _unique(paths: list[str]) -> list[str]:
    return list(dict.fromkeys(paths))


# ---- ALZip (the official CASIA HWDB1.1 train zip wraps an .alz archive) -------------------------------
def unalz_missing_message(alz: Path) -> str:
    return (
        f"{alz.name} is an ALZip archive and the `unalz` command is not installed. Install it and rerun, "
        f"or extract it by hand: `apt-get install unalz && unalz {alz.name}`, put the extracted train and "
        "test folders of .gnt files (e.g. HWDB1.1trn_gnt/ and HWDB1.1tst_gnt/) in one directory DIR, and "
        "run `tfpipe run hwdb --source DIR`"
    )


def check_extracted_tree(root: Path, archive: Path) -> None:
    """Every path below ``root`` is a regular file or directory that stays inside ``root``."""
    inside = root.resolve()
    for path in root.rglob("*"):
        member = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise ArchiveError("extracted a symbolic link", path=archive, member=member)
        resolved = path.resolve()
        if resolved != inside and inside not in resolved.parents:
            raise ArchiveError("extracted a path outside the extraction directory", path=archive, member=member)
        if not (path.is_file() or path.is_dir()):
            raise ArchiveError("extracted something that is not a file or directory", path=archive, member=member)


def run_unalz(alz: Path, dest: Path) -> None:
    """Extract an ALZip archive into the new directory ``dest`` with the ``unalz`` command, then check it."""
    unalz = shutil.which("unalz")
    if unalz is None:
        raise ValueError(f"{alz}: {unalz_missing_message(alz)}")
    dest.mkdir(parents=True)
    result = subprocess.run([unalz, str(alz.resolve()), str(dest.resolve())], cwd=dest, capture_output=True,
                            text=True, errors="replace", check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-500:]
        raise ArchiveError(f"unalz exited with {result.returncode}: {detail}", path=alz)
    check_extracted_tree(dest, alz)


def alz_volumes(alz: Path) -> list[Path]:
    """The ``.alz`` file and the ``.a00``, ``.a01``... volumes of a split ALZip archive beside it."""
    parts = [p for p in alz.parent.glob(f"{alz.stem}.[aA][0-9][0-9]") if p.is_file()]
    return [alz, *sorted(parts)]


def extract_alz_archives(root: Path) -> list[Path]:
    """Replace every ``.alz`` below ``root`` by a folder of its contents named after it; returns the folders."""
    folders = []
    for alz in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".alz"):
        dest = alz.with_suffix("")
        if dest.exists():
            dest = alz.with_suffix(".unalz")
        run_unalz(alz, dest)
        for volume in alz_volumes(alz):  # the archive's bytes now live in ``dest``; don't keep both
            volume.unlink()
        folders.append(dest)
    return folders


def unpack(data: Path, dest: Path) -> Path:
    """A folder to read: ``data`` itself if it is one, else ``data`` safely extracted to ``dest`` (.alz too)."""
    if data.is_dir():
        return data
    safe_extract(data, dest)
    extract_alz_archives(dest)
    return dest


def shown_name(path: Path, unpacked: Path, data: Path) -> str:
    """``path`` as a message names it, where ``unpack(data, ...)`` returned ``unpacked``: in a folder ``data``,
    itself; in an extracted archive (a temporary folder nobody has seen), the archive and the member path."""
    if data.is_dir() or not path.is_relative_to(unpacked):
        return str(path)
    member = path.relative_to(unpacked).as_posix()
    return str(data) if member == "." else f"{data} member {member}"
