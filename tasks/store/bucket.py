"""A bucket root's objects through fsspec/s3fs: small objects, conditional writes, file transfers, and a count
of the HTTP requests made. No Luigi, no TensorFlow; s3fs is imported when a `Bucket` is made, so a local
root never loads it.

Credentials, endpoint and region come from the standard AWS settings (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``,
``AWS_DEFAULT_REGION``, ``~/.aws``), never from tfpipe's own files. Every failure to reach the server or to
be let in raises `BucketError`: one line naming the root, the endpoint and the problem.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from tasks.store.roots import RootError, RootLocation

T = TypeVar("T")
# A stopped server should fail a command in seconds, not after minutes of retries.
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 120
MAX_ATTEMPTS = 3
TRANSFER_BATCH = 32  # files in flight at once in upload_many / download_many
MULTIPART_CHUNK = 8 * 2**20  # a file of two chunks or more goes up in parts, 10 at once (as boto3's transfers do)
PRECONDITION_CODES = ("PreconditionFailed", "412", "ConditionalRequestConflict")


class BucketError(OSError):
    """The bucket cannot be used: unreachable, credentials refused, no such bucket."""


@dataclass(frozen=True)
class ObjectInfo:
    """One object of a listing: its size in bytes and when it was last written (POSIX time; 0 when unknown)."""

    size: int
    modified: float


class Bucket:
    """The objects under one bucket root; paths are relative to the root (``train/Train-ab12/MANIFEST.json``)."""

    def __init__(self, location: RootLocation) -> None:
        if location.scheme != "s3":
            raise RootError(f"{location.text}: not an s3:// root")
        try:
            import s3fs
        except ImportError:
            raise RootError(f"artifact root {location.url}: s3:// roots need s3fs (pip install s3fs)") from None
        self.location = location
        self.requests = 0
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        self.fs = s3fs.S3FileSystem(
            endpoint_url=endpoint, skip_instance_cache=True, use_listings_cache=False,
            config_kwargs={"connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S,
                           "retries": {"max_attempts": MAX_ATTEMPTS, "mode": "standard"}})
        self.fs.retries = 1  # s3fs's own retry loop, on top of botocore's MAX_ATTEMPTS
        self._endpoint = endpoint or ""
        self._checked = False

    # ---- naming --------------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return self._endpoint or "the default AWS endpoint"

    def path(self, relative: str) -> str:
        return self.location.key(relative)

    def url(self, relative: str) -> str:
        return f"{self.location.scheme}://{self.path(relative)}"

    # ---- requests ------------------------------------------------------------------------------------------
    def _count(self, **_: Any) -> None:
        self.requests += 1

    def _connect(self) -> None:
        client = self.fs.s3  # s3fs connects lazily, on first use
        self._endpoint = self._endpoint or str(client.meta.endpoint_url)
        client.meta.events.register("before-send.s3", self._count)

    def call(self, what: str, action: Callable[[], T]) -> T:
        """``action()``, with every way the server can refuse it turned into one `BucketError` line."""
        if not self._checked:
            self._checked = True
            self._translated(f"connect to {self.location.url}", self._connect)
            self._translated(f"open bucket {self.location.bucket}", self._check_bucket)
        return self._translated(what, action)

    def _check_bucket(self) -> None:
        try:
            self.fs.call_s3("head_bucket", Bucket=self.location.bucket)
        except FileNotFoundError:
            raise BucketError(f"{self.location.url}: bucket {self.location.bucket!r} does not exist at "
                              f"{self.endpoint}") from None

    def _translated(self, what: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except (BucketError, FileNotFoundError, FileExistsError):
            raise
        except PermissionError as err:
            raise BucketError(f"{self.location.url} at {self.endpoint}: {what}: access denied ({_first_line(err)}); "
                              "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE") from None
        except Exception as err:  # noqa: BLE001 - botocore, aiohttp and s3fs raise many types for one cause
            if _is_precondition_failure(err):
                raise FileExistsError(self.url(what)) from err
            raise BucketError(f"{self.location.url} at {self.endpoint}: {what}: {_reason(err)}") from None

    # ---- objects -------------------------------------------------------------------------------------------
    def read(self, relative: str) -> bytes | None:
        """The object's bytes, or None when there is none: one GET (s3fs would first HEAD it for its size, to
        split a large object into concurrent ranges; the objects read whole here are small)."""
        try:
            return self.call(f"read {relative}", lambda: self.fs.cat_file(self.path(relative), max_concurrency=1))
        except FileNotFoundError:
            return None

    def read_with_tag(self, relative: str) -> tuple[bytes, str] | None:
        """The object's bytes and its ETag (for a conditional replace), or None when there is none."""
        def read() -> tuple[bytes, str]:
            response = self.fs.call_s3("get_object", Bucket=self.location.bucket, Key=self._key(relative))
            return _read_body(self.fs, response["Body"]), str(response["ETag"])
        try:
            return self.call(f"read {relative}", read)
        except FileNotFoundError:
            return None

    def write(self, relative: str, data: bytes) -> None:
        self.call(f"write {relative}", lambda: self.fs.pipe_file(self.path(relative), data))

    def create(self, relative: str, data: bytes) -> bool:
        """Write the object only if there is none (``If-None-Match: *``); False when one was there first."""
        try:
            self.call(f"create {relative}", lambda: self.fs.pipe_file(self.path(relative), data, mode="create"))
        except FileExistsError:
            return False
        return True

    def replace(self, relative: str, data: bytes, tag: str | None) -> bool:
        """Write the object if it still has ``tag`` (``If-Match``), or if there is none when ``tag`` is None;
        False when someone else changed it first."""
        if tag is None:
            return self.create(relative, data)
        try:
            self.call(f"replace {relative}", lambda: self.fs.pipe_file(self.path(relative), data, IfMatch=tag))
        except FileExistsError:
            return False
        return True

    def upload(self, local: Path, relative: str) -> None:
        self.call(f"upload {relative}", lambda: self.fs.put_file(str(local), self.path(relative)))

    def download(self, relative: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        self.call(f"download {relative}", lambda: self.fs.get_file(self.path(relative), str(local)))

    def upload_many(self, pairs: builtins.list[tuple[Path, str]]) -> None:
        """Upload ``(local file, relative path)`` pairs, many at once (s3fs runs them concurrently)."""
        if pairs:
            self.call(f"upload {len(pairs)} file(s)", lambda: self.fs.put(
                [str(local) for local, _ in pairs], [self.path(relative) for _, relative in pairs],
                batch_size=TRANSFER_BATCH, chunksize=MULTIPART_CHUNK))

    def download_many(self, pairs: builtins.list[tuple[str, Path]]) -> None:
        """Download ``(relative path, local file)`` pairs, many at once."""
        for _, local in pairs:
            local.parent.mkdir(parents=True, exist_ok=True)
        if pairs:
            self.call(f"download {len(pairs)} file(s)", lambda: self.fs.get(
                [self.path(relative) for relative, _ in pairs], [str(local) for _, local in pairs],
                batch_size=TRANSFER_BATCH))

    def list(self, relative: str) -> builtins.list[str]:
        """Every object below ``relative`` (recursively), as paths relative to the root."""
        base = self.path(relative).rstrip("/")
        try:
            found = self.call(f"list {relative}", lambda: self.fs.find(base))
        except FileNotFoundError:
            return []
        root = self.path("").rstrip("/") + "/"
        return sorted(p[len(root):] for p in found if p.startswith(root))

    def entries(self, relative: str = "", starting: str = "") -> dict[str, ObjectInfo]:
        """Every object below ``relative`` (recursively) whose name there starts with ``starting``, with its size
        and last-modified time, by paths relative to the root: one listing request per 1,000 objects."""
        stem = self._key(relative).rstrip("/")
        stem = (f"{stem}/" if stem else "") + starting  # listed from the bucket: one request even when empty
        try:
            found = self.call(f"list {relative or 'the root'}",
                              lambda: self.fs.find(self.location.bucket, prefix=stem, detail=True))
        except FileNotFoundError:
            return {}
        root = self.path("").rstrip("/") + "/"
        return {name[len(root):]: ObjectInfo(int(info.get("size") or 0), _timestamp(info.get("LastModified")))
                for name, info in sorted(found.items())
                if name.startswith(root) and info.get("type", "file") == "file"}

    def delete(self, relatives: builtins.list[str]) -> None:
        if relatives:
            self.call(f"delete {len(relatives)} object(s)", lambda: self.fs.rm([self.path(r) for r in relatives]))

    def _key(self, relative: str) -> str:
        return self.path(relative)[len(self.location.bucket) + 1:]

    @contextmanager
    def counting(self) -> Iterator[builtins.list[int]]:
        """``with bucket.counting() as made:`` ... ``made[0]`` is the number of requests made inside."""
        made = [0]
        before = self.requests
        try:
            yield made
        finally:
            made[0] = self.requests - before


def _timestamp(value: Any) -> float:
    """A listing's LastModified (a datetime, or ISO text from some servers) as POSIX time; 0 when unknown."""
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _read_body(fs: Any, body: Any) -> bytes:
    from fsspec.asyn import sync

    async def read() -> bytes:
        async with body as stream:
            return await stream.read()

    return sync(fs.loop, read)


def _is_precondition_failure(err: BaseException) -> bool:
    for candidate in (err, err.__cause__, err.__context__):
        response = getattr(candidate, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code") in PRECONDITION_CODES:
            return True
    return "pre-condition" in str(err).lower() or "precondition" in str(err).lower()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _reason(err: BaseException) -> str:
    """What went wrong, in words: the connection, or the server's own message."""
    text = _first_line(err)
    name = type(err).__name__
    if "connect" in name.lower() or "connect" in text.lower() or isinstance(err, (ConnectionError, TimeoutError)):
        return f"cannot reach the server ({text})"
    return f"{name}: {text}" if text != name else name
