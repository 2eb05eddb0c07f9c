"""Where the artifacts live: a local folder (the default) or a bucket, ``s3://bucket/prefix``. Plain Python.

The root is text (``[ArtifactStore] root`` or ``--artifacts``), parsed here once. A local path is used as
it is. A bucket root is served through fsspec/s3fs (``tasks/store/bucket.py``, imported only when a bucket
is in use), and each host keeps a local mirror of the artifacts it reads or writes under its cache folder
(``[ArtifactStore] cache``, by default ``$XDG_CACHE_HOME/tfpipe`` or ``~/.cache/tfpipe``): TensorFlow reads
local files. Any other URL is refused, never taken for a local folder named ``gs:``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

BUCKET_SCHEMES = ("s3",)
# A URL scheme (RFC 3986): letters, then letters, digits, "+", "-" or "."; then ":".
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# S3 bucket names: 3-63 lower-case letters, digits, dots and hyphens, starting and ending alphanumeric.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class RootError(ValueError):
    """An artifact root tfpipe cannot serve; the message is one line naming it."""


@dataclass(frozen=True)
class RootLocation:
    """A parsed artifact root: ``scheme`` is "" for a local folder (``path``), or ``s3`` with ``bucket`` and
    ``prefix`` (no leading or trailing slash, may be empty)."""

    text: str
    scheme: str = ""
    path: str = ""
    bucket: str = ""
    prefix: str = ""

    @property
    def is_bucket(self) -> bool:
        return bool(self.scheme)

    @property
    def url(self) -> str:
        """The root as users write it: ``s3://bucket/prefix``, or the local path."""
        if not self.is_bucket:
            return self.path
        return f"{self.scheme}://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")

    def key(self, relative: str) -> str:
        """The object path (``bucket/prefix/relative``) of a path relative to the root."""
        parts = [self.bucket, self.prefix, relative.strip("/")]
        return "/".join(part for part in parts if part)

    def mirror(self, cache_dir: Path) -> Path:
        """This host's local folder for the root: the root itself, or its mirror under ``cache_dir``."""
        if not self.is_bucket:
            return Path(self.path)
        return Path(cache_dir) / self.scheme / self.bucket / self.prefix


def parse_root(text: str) -> RootLocation:
    """``text`` as a local path or a bucket URL; anything else raises `RootError`."""
    text = str(text).strip()
    if not text:
        raise RootError("the artifact root is empty: give a folder or s3://bucket/prefix")
    match = _SCHEME.match(text)
    if match is None:
        return RootLocation(text, path=text)
    scheme = match.group(1).lower()
    if scheme == "file":
        if not text.lower().startswith("file://"):
            raise RootError(f"artifact root {text!r}: a file URL is file:///absolute/path")
        return RootLocation(text, path=text[len("file://"):] or "/")
    if scheme not in BUCKET_SCHEMES:
        raise RootError(f"artifact root {text!r}: {scheme}:// is not served; use a local folder or "
                        f"{', '.join(s + '://bucket/prefix' for s in BUCKET_SCHEMES)}")
    rest = text[len(match.group(0)):]
    if not rest.startswith("//"):
        raise RootError(f"artifact root {text!r}: a bucket URL is {scheme}://bucket/prefix")
    bucket, _, prefix = rest[2:].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise RootError(f"artifact root {text!r}: {bucket!r} is not a bucket name (3-63 characters: a-z, 0-9, "
                        "'.' and '-')")
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise RootError(f"artifact root {text!r}: the prefix has an empty, '.' or '..' part")
    return RootLocation(text, scheme=scheme, bucket=bucket, prefix=prefix)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/tfpipe``, else ``~/.cache/tfpipe``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tfpipe"
