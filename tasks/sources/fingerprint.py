"""Content fingerprints of local sources with a persistent per-file stat cache. No Luigi, no TensorFlow.

``fingerprint_path`` gives the same ``sha256:<hex>`` as ``"sha256:" + directory_fingerprint(path)``
(tasks/sources/fetch.py: one ``kind\\0relative\\0value\\n`` record per entry, sorted by relative path) but

- skips excluded paths lying in the source (the artifact root, when tfpipe runs inside the data folder):
  they are not walked, not hashed and leave no record, so writing into them never moves the fingerprint;
- remembers each regular file's sha256 under (resolved path, size, mtime_ns, inode, device) in a SQLite
  cache shared by every source, so an unchanged folder costs one ``scandir`` per directory and one
  ``lstat`` per file, and a changed file is the only one read again.

A file is cached only when its mtime lies more than ``RACY_WINDOW_NS`` before the end of its hash and its
stat did not move while it was read: a file written within the filesystem's timestamp granularity of the
hash could change again without its stat changing (git's "racy clean" problem). The cache is an
optimisation only: a corrupt or unreadable cache file counts as empty (and is replaced on the next save),
and failing to save it is logged, never raised.

Cache layout: one table, ``path`` (TEXT, or BLOB for a name that is not valid UTF-8) as primary key, so a
file has at most one row and lookups of one source are a range scan over its path prefix; ``sha256`` (64
hex digits) and ``stat`` (``"size mtime_ns inode device"``). Writers serialise on SQLite's lock and every
save is one transaction. One cache file per host: inode and device numbers mean nothing on another machine,
and with the artifact root on NFS the processes sharing one file are all on one host (SQLite's rollback
journal is used, not WAL, which needs shared memory that network file systems do not provide).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from tasks.formats.errors import FormatError
from tasks.sources.fetch import file_digest
from tasks.store.artifacts import host_name
from tasks.store.layout import CACHE_DIR

logger = logging.getLogger("tfpipe")

CACHE_FILENAME = "fingerprints.sqlite3"
# Files modified this recently (relative to the end of their hash) are hashed but not cached. Two seconds
# covers the coarsest common timestamp granularity (FAT) as well as small clock steps.
RACY_WINDOW_NS = 2_000_000_000
_TABLE = "file_sha256_v1"
_SCHEMA_VERSION = 1
_BUSY_TIMEOUT_S = 30.0
_HEX = 64

# A regular file whose cached digest is missing or stale: (relative, resolved path, lstat, cached row value).
_Miss = tuple[str, str, os.stat_result, "str | None"]


def stat_cache_path(artifact_root: Path) -> Path:
    """Where every caller on this host keeps the stat cache: ``<artifact_root>/.cache/<host>.fingerprints.sqlite3``."""
    return Path(artifact_root) / CACHE_DIR / f"{host_name()}.{CACHE_FILENAME}"


def fingerprint_path(path: Path, *, cache_file: Path | None, exclude: Sequence[Path] = ()) -> str:
    """``sha256:<hex>`` of a local file or directory's contents, reading only files whose stat changed.

    Equal to ``"sha256:" + tasks.sources.fetch.directory_fingerprint(path)`` when nothing is excluded:
    directories (empty ones too), regular files by content and symlinks by target text (never followed);
    a FIFO, socket or device raises FormatError naming it; a regular file ``path`` is a tree holding one
    file named ``.``. ``path`` itself must be a directory or regular file (not a symlink), as there.

    Each ``exclude`` path that is ``path`` itself or lies below it is skipped with everything under it.
    Paths are compared resolved (relative ones against the current directory, symlinks followed); an
    excluded path that is itself a symlink inside the source also excludes that link. Excluded paths
    elsewhere have no effect, and need not exist.

    ``cache_file`` (see ``stat_cache_path``) holds per-file digests keyed by resolved path, size,
    mtime_ns, inode and device; ``None`` hashes every file and keeps nothing.
    """
    root = os.fspath(path)
    root_stat = os.lstat(root)
    is_file = stat.S_ISREG(root_stat.st_mode)
    if not is_file and not stat.S_ISDIR(root_stat.st_mode):
        raise FormatError("not a directory or regular file; cannot fingerprint it", path=root)
    root_real = os.path.realpath(root)
    excluded = _excluded_relatives(root_real, exclude)
    if "." in excluded:
        return "sha256:" + hashlib.sha256(_records([])).hexdigest()
    cache = _StatCache(Path(cache_file) if cache_file is not None else None, root_real, is_file, excluded)
    if is_file:
        entries, misses = _lookup_file(root_real, root_stat, cache.loaded)
    else:
        entries, misses = _walk(root_real, excluded, cache.loaded)
    entries.extend(cache.hash_misses(misses))
    cache.save()
    entries.sort()
    return "sha256:" + hashlib.sha256(_records(entries)).hexdigest()


def hash_file(path: str) -> str:
    """sha256 hex of one file's bytes: the only place this module reads a source file."""
    return file_digest(Path(path))


def _records(entries: Iterable[tuple[str, str, str]]) -> bytes:
    """What ``directory_fingerprint`` hashes: ``kind\\0relative\\0value\\n`` per (relative, kind, value)."""
    text = "".join(f"{kind}\0{relative}\0{value}\n" for relative, kind, value in entries)
    return text.encode("utf-8", "surrogateescape")


def _stat_text(st: os.stat_result) -> str:
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ino} {st.st_dev}"


def _excluded_relatives(root_real: str, exclude: Sequence[Path]) -> frozenset[str]:
    """Excluded paths inside the source, as relative POSIX paths (``.`` for the source itself)."""
    base = root_real if root_real.endswith(os.sep) else root_real + os.sep
    relatives = set()
    for excluded in exclude:
        absolute = os.path.abspath(os.fspath(excluded))
        parent, name = os.path.split(absolute)
        # Resolved fully, and with only its parent resolved (an excluded symlink inside the source).
        for candidate in (os.path.realpath(absolute), os.path.join(os.path.realpath(parent), name)):
            if candidate == root_real:
                relatives.add(".")
            elif candidate.startswith(base):
                relatives.add(candidate[len(base) :].replace(os.sep, "/"))
    return frozenset(relatives)


def _lookup_file(
    path_real: str, st: os.stat_result, loaded: dict[str, str]
) -> tuple[list[tuple[str, str, str]], list[_Miss]]:
    """A regular file as the whole source: the tree holding it under the name ``.``."""
    cached = loaded.pop(path_real, None)
    if cached is not None and cached[_HEX:] == _stat_text(st):
        return [(".", "file", cached[:_HEX])], []
    return [], [(".", path_real, st, cached)]


def _walk(
    root_real: str, excluded: frozenset[str], loaded: dict[str, str]
) -> tuple[list[tuple[str, str, str]], list[_Miss]]:
    """Entries whose value is known without reading a file, and the regular files still to hash.

    Cached rows confirmed by an unchanged stat are popped from ``loaded``; rows of changed files travel with
    their miss. The hot loop of an unchanged folder: one scandir per directory, one lstat per file.
    """
    entries: list[tuple[str, str, str]] = []
    misses: list[_Miss] = []
    pop = loaded.pop
    pending = [(root_real, "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as scan:
            for entry in scan:
                relative = prefix + entry.name
                if relative in excluded:
                    continue
                # is_dir/is_file/is_symlink come from d_type: no system call unless the filesystem omits it.
                if entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    cached = pop(entry.path, None)
                    if cached is not None and cached[_HEX:] == _stat_text(st):
                        entries.append((relative, "file", cached[:_HEX]))
                    else:
                        misses.append((relative, entry.path, st, cached))
                elif entry.is_dir(follow_symlinks=False):
                    entries.append((relative, "dir", ""))
                    pending.append((entry.path, relative + "/"))
                elif entry.is_symlink():
                    entries.append((relative, "symlink", os.readlink(entry.path)))
                else:
                    raise FormatError("not a regular file, directory or symlink; refusing to skip it", path=entry.path)
    return entries, misses


def _sql_path(path: str) -> str | bytes:
    """A path as stored: TEXT when it is valid UTF-8 (decoded by SQLite itself on load), else its bytes."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


class _StatCache:
    """The cache rows under one fingerprinted root (loaded at once) and the changes to write back.

    ``loaded`` maps resolved path -> ``sha256 hex + stat text``; the walk pops every row it confirms, so what
    is left at save time (outside excluded paths) belongs to files that are gone and is pruned.
    """

    def __init__(self, cache_file: Path | None, root_real: str, is_file: bool, excluded: frozenset[str]) -> None:
        self.cache_file = cache_file
        self.root_real = root_real
        self.is_file = is_file
        # Rows below excluded paths may belong to other sources: never pruned from here.
        base = root_real.rstrip(os.sep) + os.sep
        self.excluded_paths = tuple(base + relative.replace("/", os.sep) for relative in excluded)
        self.new_rows: list[tuple[str, str, str]] = []
        self.stale_rows: list[tuple[str, str]] = []
        self.corrupt_inode: int | None = None
        self.loaded: dict[str, str] = self._load() if cache_file is not None else {}

    # ---- hashing -----------------------------------------------------------------------------------------

    def hash_misses(self, misses: list[_Miss]) -> list[tuple[str, str, str]]:
        """Hash the files the cache could not vouch for; keep the trustworthy digests for saving.

        One thread: hashing threads measured slower than one on a 2-core machine (GIL and a busy core).
        """
        entries = []
        for relative, path, st, cached in misses:
            digest, trustworthy = _hash_and_check(path, st)
            entries.append((relative, "file", digest))
            if self.cache_file is None:
                continue
            if trustworthy:
                self.new_rows.append((path, digest, _stat_text(st)))
            elif cached is not None:
                self.stale_rows.append((path, cached))
        return entries

    # ---- persistence -------------------------------------------------------------------------------------

    def _selections(self) -> list[tuple[str, tuple[str | bytes, ...]]]:
        """WHERE clauses (and parameters) selecting this root's TEXT rows and its BLOB rows."""
        if self.is_file:
            return [("path = ?", (_sql_path(self.root_real),))]
        base = self.root_real.rstrip(os.sep) + os.sep
        # Every value starting with ``base`` sorts in [base, base with its last character incremented).
        ranges: list[tuple[str, tuple[str | bytes, ...]]] = []
        encoded = os.fsencode(base)
        if isinstance(_sql_path(base), str):
            ranges.append(("path >= ? AND path < ?", (base, base[:-1] + chr(ord(base[-1]) + 1))))
        ranges.append(("path >= ? AND path < ?", (encoded, encoded[:-1] + bytes([encoded[-1] + 1]))))
        return ranges

    def _load(self) -> dict[str, str]:
        assert self.cache_file is not None
        if not self.cache_file.exists():
            return {}
        loaded: dict[str, str] = {}
        try:
            connection = sqlite3.connect(self.cache_file, timeout=_BUSY_TIMEOUT_S)
            try:
                for where, parameters in self._selections():
                    rows = connection.execute(f"SELECT path, sha256 || stat FROM {_TABLE} WHERE {where}", parameters)
                    if isinstance(parameters[0], str):
                        loaded.update(rows)
                    else:
                        loaded.update((os.fsdecode(path), value) for path, value in rows)
            finally:
                connection.close()
        except sqlite3.OperationalError as error:
            # Locked past the timeout, no table yet, unreadable: start empty, leave the file alone.
            logger.debug("fingerprint cache %s not read: %s", self.cache_file, error)
            return {}
        except sqlite3.DatabaseError as error:
            logger.warning("fingerprint cache %s is corrupt (%s); it will be rebuilt", self.cache_file, error)
            self._note_corrupt()
            return {}
        return loaded

    def _note_corrupt(self) -> None:
        assert self.cache_file is not None
        try:
            self.corrupt_inode = os.stat(self.cache_file).st_ino
        except OSError:
            self.corrupt_inode = None

    def _is_excluded(self, path: str) -> bool:
        return any(path == excluded or path.startswith(excluded + os.sep) for excluded in self.excluded_paths)

    def save(self) -> None:
        """Write new rows and prune stale ones of this root, in one transaction; nothing if nothing changed."""
        if self.cache_file is None:
            return
        stale = self.stale_rows + [item for item in self.loaded.items() if not self._is_excluded(item[0])]
        if not self.new_rows and not stale:
            return
        try:
            self._write(stale)
        except (sqlite3.Error, OSError) as error:
            logger.warning("fingerprint cache %s not saved: %s", self.cache_file, error)

    def _write(self, stale: list[tuple[str, str]]) -> None:
        assert self.cache_file is not None
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        if self.corrupt_inode is not None:
            self._remove_corrupt_file()
        try:
            self._write_rows(stale)
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError:
            # Corrupted since it was loaded, or corrupt in a way loading did not reach: replace it once.
            self._note_corrupt()
            self._remove_corrupt_file()
            self._write_rows(stale)

    def _write_rows(self, stale: list[tuple[str, str]]) -> None:
        assert self.cache_file is not None
        connection = sqlite3.connect(self.cache_file, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "delete":
                connection.execute("PRAGMA journal_mode=DELETE")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(
                f"CREATE TABLE IF NOT EXISTS {_TABLE} (path PRIMARY KEY NOT NULL, sha256 TEXT NOT NULL,"
                " stat TEXT NOT NULL) WITHOUT ROWID"
            )
            connection.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            # A stale row goes only if it is still the one loaded (another process may have replaced it since).
            connection.executemany(
                f"DELETE FROM {_TABLE} WHERE path = ? AND sha256 || stat = ?",
                [(_sql_path(path), value) for path, value in stale],
            )
            connection.executemany(
                f"INSERT OR REPLACE INTO {_TABLE} (path, sha256, stat) VALUES (?, ?, ?)",
                [(_sql_path(path), digest, stat_text) for path, digest, stat_text in self.new_rows],
            )
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()

    def _remove_corrupt_file(self) -> None:
        """Delete the corrupt cache (and its WAL files) unless another process replaced it meanwhile."""
        assert self.cache_file is not None
        try:
            if os.stat(self.cache_file).st_ino == self.corrupt_inode:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.cache_file}{suffix}").unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        self.corrupt_inode = None


def _hash_and_check(path: str, st: os.stat_result) -> tuple[str, bool]:
    """The file's digest, and whether it may be cached under ``st`` (old enough, unchanged while read)."""
    digest = hash_file(path)
    if st.st_mtime_ns > time.time_ns() - RACY_WINDOW_NS:
        return digest, False
    try:
        after = os.lstat(path)
    except OSError:
        return digest, False
    return digest, _stat_text(after) == _stat_text(st)
