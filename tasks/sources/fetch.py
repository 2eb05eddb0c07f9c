"""Verified downloads and content fingerprints. No Luigi, no TensorFlow: plain functions over the stdlib.

``fetch`` streams a source (``http(s)://``, ``file://`` or a plain local path) into ``<dest>.part``,
hashing as it goes, resumes an interrupted ``.part`` with an HTTP ``Range`` request, and renames the part
into place only when the pinned digest matches. A digest mismatch leaves neither ``dest`` nor ``.part``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tasks.formats.errors import ChecksumError, FormatError

ProgressCallback = Callable[[int, "int | None"], None]

SUPPORTED_ALGORITHMS = ("sha256", "md5")
_HEX_LENGTH = {"sha256": 64, "md5": 32}
_HASH_BLOCK = 1 << 20
_USER_AGENT = "tfpipe-fetch/1"
# Seconds to wait before retry n (1-based) is min(_BACKOFF_BASE_S * 2 ** (n - 1), _BACKOFF_MAX_S).
_BACKOFF_BASE_S = 0.05
_BACKOFF_MAX_S = 5.0
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)


class DownloadError(OSError):
    """A source that could not be fetched: HTTP error status, missing file, or retries exhausted."""

    def __init__(self, source: str, message: str, *, status: int | None = None) -> None:
        self.source = source
        self.status = status
        super().__init__(f"{source}: {message}")


@dataclass(frozen=True)
class Digest:
    """A pinned content digest, e.g. ``Digest.parse("sha256:9f86d0...")``."""

    algorithm: str
    hexdigest: str

    def __post_init__(self) -> None:
        if self.algorithm not in SUPPORTED_ALGORITHMS:
            raise ValueError(
                f"unsupported digest algorithm {self.algorithm!r}; use one of {SUPPORTED_ALGORITHMS}"
            )
        expected_length = _HEX_LENGTH[self.algorithm]
        if len(self.hexdigest) != expected_length or not re.fullmatch(r"[0-9a-f]+", self.hexdigest):
            raise ValueError(
                f"{self.algorithm} digest must be {expected_length} hex digits, got {self.hexdigest!r}"
            )

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``"<algorithm>:<hex>"`` (algorithm ``sha256`` or ``md5``; hex case-insensitive)."""
        algorithm, sep, hexdigest = text.strip().partition(":")
        if not sep:
            raise ValueError(f"digest {text!r} must look like 'sha256:<hex>' or 'md5:<hex>'")
        return cls(algorithm.strip().lower(), hexdigest.strip().lower())

    def new_hasher(self) -> hashlib._Hash:
        return _new_hasher(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


def _new_hasher(algorithm: str) -> hashlib._Hash:
    if algorithm not in SUPPORTED_ALGORITHMS:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}; use one of {SUPPORTED_ALGORITHMS}")
    return hashlib.new(algorithm, usedforsecurity=False)


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in blocks so size does not matter."""
    hasher = _new_hasher(algorithm)
    with open(path, "rb") as handle:
        _hash_stream(handle, hasher)
    return hasher.hexdigest()


def _hash_stream(handle: BinaryIO, hasher: hashlib._Hash) -> int:
    total = 0
    while block := handle.read(_HASH_BLOCK):
        hasher.update(block)
        total += len(block)
    return total


# --------------------------------------------------------------------------------------------------------
# Fingerprints of local sources
# --------------------------------------------------------------------------------------------------------


def directory_fingerprint(path: Path) -> str:
    """sha256 over every entry below ``path``: sorted relative paths with each file's sha256.

    Directories (so an empty class folder counts), regular files (by content, never by mtime or mode) and
    symlinks (by their target text, not followed) all enter the hash. Anything else (FIFO, socket, device)
    raises FormatError rather than being skipped silently. A regular file ``path`` is fingerprinted as a
    tree holding that one file under the name ``.``.
    """
    root = Path(path)
    hasher = hashlib.sha256()
    for kind, relative, value in _fingerprint_entries(root):
        record = f"{kind}\0{relative}\0{value}\n"
        hasher.update(record.encode("utf-8", "surrogateescape"))
    return hasher.hexdigest()


def _fingerprint_entries(root: Path) -> list[tuple[str, str, str]]:
    root_stat = os.lstat(root)
    if stat.S_ISREG(root_stat.st_mode):
        return [("file", ".", file_digest(root))]
    if not stat.S_ISDIR(root_stat.st_mode):
        raise FormatError("not a directory or regular file; cannot fingerprint it", path=root)
    entries: list[tuple[str, str, str]] = []
    for directory, subdirectories, filenames in os.walk(root, followlinks=False, onerror=_raise_walk_error):
        subdirectories.sort()
        for name in sorted(subdirectories + filenames):
            full = Path(directory) / name
            relative = full.relative_to(root).as_posix()
            entries.append(_fingerprint_entry(full, relative))
    entries.sort(key=lambda entry: entry[1])
    return entries


def _fingerprint_entry(full: Path, relative: str) -> tuple[str, str, str]:
    mode = os.lstat(full).st_mode
    if stat.S_ISLNK(mode):
        return ("symlink", relative, os.readlink(full))
    if stat.S_ISDIR(mode):
        return ("dir", relative, "")
    if stat.S_ISREG(mode):
        return ("file", relative, file_digest(full))
    raise FormatError("not a regular file, directory or symlink; refusing to skip it", path=full)


def _raise_walk_error(error: OSError) -> None:
    raise error


# --------------------------------------------------------------------------------------------------------
# fetch
# --------------------------------------------------------------------------------------------------------


def part_path(dest: Path) -> Path:
    """Where ``fetch`` keeps the bytes received so far for ``dest``."""
    return dest.with_name(dest.name + ".part")


def fetch(
    source: str,
    dest: Path,
    *,
    digest: Digest | None,
    progress: ProgressCallback | None = None,
    chunk_size: int = 1 << 20,
    timeout: float = 60.0,
    retries: int = 3,
) -> Path:
    """Fetch ``source`` to ``dest``, verifying ``digest`` while streaming; return ``dest``.

    ``source`` is an ``http(s)://`` URL, a ``file://`` URL or a local path. Bytes go to ``<dest>.part``;
    an existing part from an interrupted run is resumed with ``Range: bytes=N-`` (a server that ignores
    the range and answers 200 restarts the part from zero). Connection drops, short reads, timeouts and
    5xx answers are retried with resume, ``retries`` times after the first attempt. On a digest mismatch
    the part is deleted and ChecksumError raised. HTTP 4xx, missing files and exhausted retries raise
    DownloadError naming the source (and status). If ``dest`` already exists with the pinned digest it is
    returned without fetching. ``progress(done_bytes, total_bytes_or_None)`` is called after every chunk.
    """
    dest = Path(dest)
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if digest is not None and dest.is_file() and file_digest(dest, digest.algorithm) == digest.hexdigest:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        _download_http(source, dest, digest, progress, chunk_size, timeout, retries)
    elif scheme == "file":
        _copy_local(source, _file_url_to_path(source), dest, digest, progress, chunk_size)
    elif scheme == "" or _looks_like_windows_drive(source, scheme):
        _copy_local(source, Path(source), dest, digest, progress, chunk_size)
    else:
        raise DownloadError(source, f"unsupported URL scheme {scheme!r}; use http(s)://, file:// or a path")
    return dest


def _looks_like_windows_drive(source: str, scheme: str) -> bool:
    return len(scheme) == 1 and source[1:3] in (":\\", ":/")


def _file_url_to_path(source: str) -> Path:
    parts = urllib.parse.urlsplit(source)
    if parts.netloc not in ("", "localhost"):
        raise DownloadError(source, f"file:// URL names a remote host {parts.netloc!r}")
    return Path(urllib.request.url2pathname(parts.path))


def _copy_local(
    source: str,
    path: Path,
    dest: Path,
    digest: Digest | None,
    progress: ProgressCallback | None,
    chunk_size: int,
) -> None:
    if path.is_dir():
        raise DownloadError(source, "is a directory; fetch copies single files")
    part = part_path(dest)
    hasher = digest.new_hasher() if digest is not None else None
    try:
        source_handle = open(path, "rb")
    except FileNotFoundError as error:
        raise DownloadError(source, "no such file") from error
    with source_handle, open(part, "wb") as sink:
        total = os.fstat(source_handle.fileno()).st_size
        done = 0
        while chunk := source_handle.read(chunk_size):
            _write_chunk(sink, hasher, chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    _verify_and_commit(source, part, dest, digest, hasher)


def _write_chunk(sink: BinaryIO, hasher: hashlib._Hash | None, chunk: bytes) -> None:
    if hasher is not None:
        hasher.update(chunk)
    sink.write(chunk)


def _verify_and_commit(
    source: str, part: Path, dest: Path, digest: Digest | None, hasher: hashlib._Hash | None
) -> None:
    if digest is not None and hasher is not None:
        actual = hasher.hexdigest()
        if actual != digest.hexdigest:
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"checksum mismatch: expected {digest}, got {digest.algorithm}:{actual}", path=source
            )
    with open(part, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(part, dest)


class _RestartFromZero(Exception):
    """The part on disk cannot be continued (bogus range answer); discard it and start over."""

    def __init__(self, reason: str = "server answer does not continue the partial download") -> None:
        super().__init__(reason)


class _RetryableError(Exception):
    """A transient failure worth another attempt (the part keeps what was received)."""


@dataclass
class _PartState:
    """Bytes already in the part file and the digest state over exactly those bytes."""

    size: int
    hasher: hashlib._Hash | None


def _download_http(
    url: str,
    dest: Path,
    digest: Digest | None,
    progress: ProgressCallback | None,
    chunk_size: int,
    timeout: float,
    retries: int,
) -> None:
    part = part_path(dest)
    failures = 0
    while True:
        state = _load_part_state(part, digest)
        try:
            _attempt_http(url, part, state, digest, progress, chunk_size, timeout)
        except _RestartFromZero as error:
            part.unlink(missing_ok=True)
            failures += 1
            last_error = str(error)
        except _RetryableError as error:
            failures += 1
            last_error = str(error)
        else:
            _verify_and_commit(url, part, dest, digest, state.hasher)
            return
        if failures > retries:
            raise DownloadError(url, f"gave up after {failures} attempts; last: {last_error}")
        time.sleep(min(_BACKOFF_BASE_S * 2 ** (failures - 1), _BACKOFF_MAX_S))


def _load_part_state(part: Path, digest: Digest | None) -> _PartState:
    hasher = digest.new_hasher() if digest is not None else None
    if not part.exists():
        return _PartState(0, hasher)
    with open(part, "rb") as handle:
        if hasher is not None:
            size = _hash_stream(handle, hasher)
        else:
            size = os.fstat(handle.fileno()).st_size
    return _PartState(size, hasher)


def _attempt_http(
    url: str,
    part: Path,
    state: _PartState,
    digest: Digest | None,
    progress: ProgressCallback | None,
    chunk_size: int,
    timeout: float,
) -> None:
    """One request: returns once the part holds the whole body, else raises _RetryableError or
    _RestartFromZero (transient), DownloadError (permanent)."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if state.size > 0:
        request.add_header("Range", f"bytes={state.size}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        with error:
            _handle_http_error(url, error, state, digest)
        return
    except urllib.error.URLError as error:
        if isinstance(error.reason, OSError):
            raise _RetryableError(str(error.reason)) from error
        raise DownloadError(url, f"cannot connect: {error.reason}") from error
    except (http.client.HTTPException, ConnectionError, TimeoutError) as error:
        raise _RetryableError(f"{type(error).__name__}: {error}") from error
    with response:
        _prepare_part_for_response(url, response, part, state, digest)
        _stream_body(response, part, state, progress, chunk_size)


def _handle_http_error(
    url: str, error: urllib.error.HTTPError, state: _PartState, digest: Digest | None
) -> None:
    """Return if a 416 shows the part is already whole; raise for every other error status."""
    if error.code == 416 and state.size > 0:
        # The range starts at or past the end: the part is complete, or it is bogus (stale or too long).
        if _part_looks_complete(error, state, digest):
            return
        raise _RestartFromZero("HTTP 416 and the partial file is not the complete file")
    if error.code >= 500 or error.code in (408, 429):
        raise _RetryableError(f"HTTP {error.code} {error.reason}") from error
    raise DownloadError(url, f"HTTP {error.code} {error.reason}", status=error.code) from error


def _part_looks_complete(error: urllib.error.HTTPError, state: _PartState, digest: Digest | None) -> bool:
    if digest is not None and state.hasher is not None:
        return state.hasher.hexdigest() == digest.hexdigest
    return _content_range_total(error.headers.get("Content-Range")) == state.size


def _content_range_total(header: str | None) -> int | None:
    match = _CONTENT_RANGE.match(header or "")
    if match is None or match.group(3) == "*":
        return None
    return int(match.group(3))


def _prepare_part_for_response(
    url: str, response: http.client.HTTPResponse, part: Path, state: _PartState, digest: Digest | None
) -> None:
    """Make the part file match where the response body starts (append for 206, truncate for 200)."""
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range") or "")
        if match is None or match.group(1) is None or int(match.group(1)) != state.size:
            got = response.headers.get("Content-Range")
            raise _RestartFromZero(f"asked for bytes from {state.size}, got Content-Range {got!r}")
        return
    if response.status != 200:
        raise DownloadError(url, f"unexpected HTTP status {response.status}", status=response.status)
    # 200: a fresh body from byte 0, whether or not we asked for a range.
    state.size = 0
    state.hasher = digest.new_hasher() if digest is not None else None
    part.write_bytes(b"")


def _expected_total(response: http.client.HTTPResponse) -> int | None:
    if response.status == 206:
        return _content_range_total(response.headers.get("Content-Range"))
    length = response.headers.get("Content-Length")
    return int(length) if length is not None and length.strip().isdigit() else None


def _stream_body(
    response: http.client.HTTPResponse,
    part: Path,
    state: _PartState,
    progress: ProgressCallback | None,
    chunk_size: int,
) -> None:
    total = _expected_total(response)
    with open(part, "ab") as sink:
        try:
            while chunk := response.read(chunk_size):
                _write_chunk(sink, state.hasher, chunk)
                state.size += len(chunk)
                if progress is not None:
                    progress(state.size, total)
        except (http.client.HTTPException, ConnectionError, TimeoutError) as error:
            raise _RetryableError(f"{type(error).__name__} after {state.size} bytes") from error
    if total is not None and state.size < total:
        raise _RetryableError(f"connection closed after {state.size} of {total} bytes")
    if total is not None and state.size > total:
        raise _RestartFromZero(f"received {state.size} bytes, more than the announced {total}")
