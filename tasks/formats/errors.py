"""Named errors for malformed input. Every message names the file and, where known, the offset or member."""

from __future__ import annotations

from pathlib import Path


class FormatError(ValueError):
    """Input bytes that do not follow their format.

    The message always carries the file, and the byte offset, archive member or record index when known,
    so an operator can find the bad spot without a debugger.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        offset: int | None = None,
        member: str | None = None,
        index: int | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.offset = offset
        self.member = member
        self.index = index
        where = []
        if self.path is not None:
            where.append(self.path)
        if member is not None:
            where.append(f"member {member!r}")
        if index is not None:
            where.append(f"record {index}")
        if offset is not None:
            where.append(f"byte offset {offset}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ChecksumError(FormatError):
    """Downloaded or cached bytes whose digest differs from the pinned one."""


class ArchiveError(FormatError):
    """An archive member that is unsafe (path escape, link, device) or over the size cap."""


class UnsafePickleError(FormatError):
    """A pickle that asks for anything outside the small allow-list its format needs."""


class GntFormatError(FormatError):
    """A CASIA HWDB `.gnt` file that is truncated or malformed."""


class IdxFormatError(FormatError):
    """An IDX (MNIST-style) file with a bad header, a size that disagrees with its dimensions or a broken gzip stream.

    For a gzip file ``offset`` counts bytes of the decompressed stream (``decompressed=True``), and the message
    says so: ``"path, byte offset 8 of the decompressed stream: ..."``.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        offset: int | None = None,
        decompressed: bool = False,
    ) -> None:
        super().__init__(message, path=path, offset=offset)
        self.decompressed = decompressed
        if decompressed and offset is not None:
            where = f"{self.path}, " if self.path is not None else ""
            self.args = (f"{where}byte offset {offset} of the decompressed stream: {message}",)
