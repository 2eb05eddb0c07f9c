"""fingerprint_path: same digest as directory_fingerprint, excluded artifact roots, the per-file stat cache."""

from __future__ import annotations

import multiprocessing
import os
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from tasks.formats.errors import FormatError
from tasks.sources import fingerprint as fingerprint_module
from tasks.sources.fetch import directory_fingerprint
from tasks.sources.fingerprint import fingerprint_path, stat_cache_path

# Data written an hour ago: old enough to be cached (files modified within RACY_WINDOW_NS never are).
LONG_AGO_NS = time.time_ns() - 3600 * 10**9


def age(root: Path, stamp_ns: int = LONG_AGO_NS) -> None:
    """Give every regular file below (or at) ``root`` an mtime far in the past."""
    paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    for path in paths:
        os.utime(path, ns=(stamp_ns, stamp_ns))


def make_tree(root: Path) -> Path:
    """Class folders, nesting, an empty folder, names that sort differently as paths and as strings."""
    (root / "cats" / "kittens").mkdir(parents=True)
    (root / "dogs").mkdir()
    (root / "empty").mkdir()
    (root / "a-b").mkdir()
    (root / "a").mkdir()
    (root / "a" / "b").write_bytes(b"a/b")
    (root / "a-b" / "c").write_bytes(b"a-b/c")
    (root / "a b").write_bytes(b"a space b")
    (root / "cats" / "1.jpg").write_bytes(b"\xff\xd8cat one")
    (root / "cats" / "2.jpg").write_bytes(b"\xff\xd8cat two")
    (root / "cats" / "kittens" / "k.jpg").write_bytes(b"\xff\xd8kitten")
    (root / "dogs" / "1.jpg").write_bytes(b"\xff\xd8dog one")
    (root / "dogs" / "empty.jpg").write_bytes(b"")
    (root / "big.bin").write_bytes(os.urandom(3 << 20))
    age(root)
    return root


def make_varied_tree(root: Path) -> Path:
    make_tree(root)
    (root / "données").mkdir()
    (root / "données" / "été.png").write_bytes(b"unicode")
    (root / "汉字").mkdir()
    (root / "汉字" / "字.png").write_bytes(b"cjk")
    (root / "emoji-🐈.txt").write_bytes(b"emoji")
    (root / "link-to-file").symlink_to("cats/1.jpg")
    (root / "link-to-dir").symlink_to("dogs")
    (root / "dangling").symlink_to("no/such/target")
    # A name that is not valid UTF-8 (a surrogate-escaped str in Python).
    (root / os.fsdecode(b"latin1-\xe9t\xe9.bin")).write_bytes(b"latin-1 name")
    age(root)
    return root


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths passed to the module's file hasher, in order."""
    calls: list[str] = []
    real = fingerprint_module.hash_file

    def counting(path: str) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(fingerprint_module, "hash_file", counting)
    return calls


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return stat_cache_path(tmp_path / "artifacts")


def expected(path: Path) -> str:
    return "sha256:" + directory_fingerprint(path)


def cache_rows(cache_file: Path) -> dict[str, str]:
    with sqlite3.connect(cache_file) as connection:
        rows = connection.execute(f"SELECT path, sha256 FROM {fingerprint_module._TABLE}").fetchall()
    return {os.fsdecode(path) if isinstance(path, bytes) else path: digest for path, digest in rows}


# ---------------------------------------------------------------------------------------------------------
# Same digest as directory_fingerprint
# ---------------------------------------------------------------------------------------------------------


def test_equals_directory_fingerprint_on_a_varied_tree(tmp_path: Path, cache: Path) -> None:
    root = make_varied_tree(tmp_path / "tree")
    assert fingerprint_path(root, cache_file=None) == expected(root)
    assert fingerprint_path(root, cache_file=cache) == expected(root)  # cold
    assert fingerprint_path(root, cache_file=cache) == expected(root)  # warm


def test_digest_of_a_fixed_tree_is_pinned(tmp_path: Path) -> None:
    """The record format is reimplemented (fetch.py keeps it inline): pin one digest, computed by hand from
    the records (kind, relative path, value; sorted by path), so neither implementation can drift."""
    root = tmp_path / "fixed"
    (root / "b" / "c").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_bytes(b"alpha")
    (root / "b" / "c" / "d.bin").write_bytes(bytes(range(256)) * 5000)
    (root / "b" / "é.txt").write_bytes(b"")
    (root / "b" / "link").symlink_to("c/d.bin")
    pinned = "sha256:171fc7c3b56d7e6f2f03aa2ab2cae63b3014bd66f17662857e54e7865444f5c9"
    assert expected(root) == fingerprint_path(root, cache_file=None) == pinned


def test_equals_directory_fingerprint_for_a_single_file(tmp_path: Path, cache: Path, hashed: list[str]) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"one file")
    age(path)
    assert fingerprint_path(path, cache_file=cache) == expected(path)
    assert fingerprint_path(path, cache_file=cache) == expected(path)
    assert len(hashed) == 1


def test_empty_directory_and_different_trees(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert fingerprint_path(tmp_path / "empty", cache_file=None) == expected(tmp_path / "empty")
    one = make_tree(tmp_path / "one")
    two = make_tree(tmp_path / "two")
    (two / "empty" / "new").mkdir()
    assert fingerprint_path(one, cache_file=None) != fingerprint_path(two, cache_file=None)


def test_same_content_elsewhere_is_equal(tmp_path: Path, cache: Path) -> None:
    one = make_tree(tmp_path / "one")
    two = make_tree(tmp_path / "two")
    (one / "big.bin").write_bytes((two / "big.bin").read_bytes())
    age(one)
    assert fingerprint_path(one, cache_file=cache) == fingerprint_path(two, cache_file=cache)


def test_fifo_inside_raises_format_error_naming_it(tmp_path: Path, cache: Path) -> None:
    root = make_tree(tmp_path / "tree")
    os.mkfifo(root / "cats" / "pipe")
    with pytest.raises(FormatError, match="pipe"):
        fingerprint_path(root, cache_file=cache)


def test_fifo_as_source_raises_format_error(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(FormatError, match="pipe"):
        fingerprint_path(tmp_path / "pipe", cache_file=None)


def test_symlinked_source_is_refused_as_by_directory_fingerprint(tmp_path: Path) -> None:
    (tmp_path / "alias").symlink_to(make_tree(tmp_path / "tree"))
    with pytest.raises(FormatError, match="alias"):
        directory_fingerprint(tmp_path / "alias")
    with pytest.raises(FormatError, match="alias"):
        fingerprint_path(tmp_path / "alias", cache_file=None)


def test_symlinks_are_not_followed(tmp_path: Path, cache: Path, hashed: list[str]) -> None:
    root = make_tree(tmp_path / "tree")
    (root / "elsewhere").symlink_to(tmp_path / "outside")  # dangling now
    before = fingerprint_path(root, cache_file=cache)
    make_tree(tmp_path / "outside")
    hashed.clear()
    assert fingerprint_path(root, cache_file=cache) == before == expected(root)
    assert hashed == []


# ---------------------------------------------------------------------------------------------------------
# The stat cache
# ---------------------------------------------------------------------------------------------------------


def test_unchanged_second_call_reads_no_file(
    tmp_path: Path, cache: Path, hashed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_varied_tree(tmp_path / "tree")
    first = fingerprint_path(root, cache_file=cache)
    assert len(hashed) == 13
    hashed.clear()

    def no_open(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a file was opened: {args}")

    with monkeypatch.context() as patch:
        patch.setattr("builtins.open", no_open)
        second = fingerprint_path(root, cache_file=cache)
    assert second == first
    assert hashed == []


def test_unchanged_call_does_not_write_the_cache(tmp_path: Path, cache: Path) -> None:
    root = make_tree(tmp_path / "tree")
    fingerprint_path(root, cache_file=cache)
    stamp = cache.stat().st_mtime_ns
    os.utime(cache, ns=(LONG_AGO_NS, LONG_AGO_NS))
    fingerprint_path(root, cache_file=cache)
    assert cache.stat().st_mtime_ns == LONG_AGO_NS != stamp


def test_one_changed_file_alone_is_rehashed(tmp_path: Path, cache: Path, hashed: list[str]) -> None:
    root = make_tree(tmp_path / "tree")
    before = fingerprint_path(root, cache_file=cache)
    hashed.clear()
    target = root / "cats" / "2.jpg"
    target.write_bytes(b"\xff\xd8cat TWO")  # same size
    age(target, LONG_AGO_NS + 10**9)
    after = fingerprint_path(root, cache_file=cache)
    assert hashed == [str(target.resolve())]
    assert after != before
    assert after == expected(root)
    hashed.clear()
    assert fingerprint_path(root, cache_file=cache) == after
    assert hashed == []


def test_file_replaced_by_rename_is_rehashed(tmp_path: Path, cache: Path, hashed: list[str]) -> None:
    root = make_tree(tmp_path / "tree")
    before = fingerprint_path(root, cache_file=cache)
    target = root / "dogs" / "1.jpg"
    old = target.stat()
    replacement = root / "dogs" / ".1.jpg.tmp"
    replacement.write_bytes(b"\xff\xd8dog ONE")  # same size; same mtime below: only the inode differs
    os.utime(replacement, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(replacement, target)
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    assert target.stat().st_ino != old.st_ino
    hashed.clear()
    after = fingerprint_path(root, cache_file=cache)
    assert hashed == [str(target.resolve())]
    assert after != before
    assert after == expected(root)


def test_freshly_modified_file_is_hashed_but_not_cached(tmp_path: Path, cache: Path, hashed: list[str]) -> None:
    root = make_tree(tmp_path / "tree")
    fresh = root / "cats" / "fresh.jpg"
    fresh.write_bytes(b"just written")  # mtime = now
    first = fingerprint_path(root, cache_file=cache)
    assert str(fresh.resolve()) not in cache_rows(cache)
    hashed.clear()
    assert fingerprint_path(root, cache_file=cache) == first
    assert hashed == [str(fresh.resolve())]
    age(fresh)  # now it is old: cached from the next hash on
    hashed.clear()
    assert fingerprint_path(root, cache_file=cache) == first
    assert hashed == [str(fresh.resolve())]
    hashed.clear()
    assert fingerprint_path(root, cache_file=cache) == first
    assert hashed == []


def test_file_with_mtime_in_the_future_is_not_cached(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "future.bin"
    path.write_bytes(b"x")
    age(path, time.time_ns() + 3600 * 10**9)
    fingerprint_path(path, cache_file=cache)
    assert not cache.exists() or str(path.resolve()) not in cache_rows(cache)


def test_cache_none_keeps_nothing(tmp_path: Path, hashed: list[str]) -> None:
    root = make_tree(tmp_path / "tree")
    fingerprint_path(root, cache_file=None)
    fingerprint_path(root, cache_file=None)
    assert len(hashed) == 2 * 9
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.parametrize(
    "garbage",
    [b"not a database at all\n" * 100, b"SQLite format 3\x00" + b"\xab" * 4000, b""],
    ids=["text", "bad-pages", "empty"],
)
def test_corrupt_cache_file_counts_as_empty_and_is_rewritten(
    tmp_path: Path, cache: Path, hashed: list[str], garbage: bytes
) -> None:
    root = make_tree(tmp_path / "tree")
    cache.parent.mkdir(parents=True)
    cache.write_bytes(garbage)
    assert fingerprint_path(root, cache_file=cache) == expected(root)
    assert len(cache_rows(cache)) == 9
    hashed.clear()
    assert fingerprint_path(root, cache_file=cache) == expected(root)
    assert hashed == []


def test_cache_that_cannot_be_written_never_crashes(tmp_path: Path, hashed: list[str]) -> None:
    root = make_tree(tmp_path / "tree")
    (tmp_path / "not-a-dir").write_bytes(b"a file where the cache folder should be")
    cache_file = tmp_path / "not-a-dir" / ".cache" / "fingerprints.sqlite3"
    assert fingerprint_path(root, cache_file=cache_file) == expected(root)
    assert fingerprint_path(root, cache_file=cache_file) == expected(root)
    assert len(hashed) == 2 * 9


def test_rows_of_deleted_files_are_pruned_only_under_the_root(tmp_path: Path, cache: Path) -> None:
    one = make_tree(tmp_path / "one")
    other = make_tree(tmp_path / "one-other")  # shares the path prefix "one" but is another source
    fingerprint_path(one, cache_file=cache)
    fingerprint_path(other, cache_file=cache)
    assert len(cache_rows(cache)) == 18
    (one / "cats" / "1.jpg").unlink()
    (one / "dogs" / "1.jpg").unlink()
    assert fingerprint_path(one, cache_file=cache) == expected(one)
    rows = cache_rows(cache)
    assert len(rows) == 16
    assert str((one / "cats" / "1.jpg").resolve()) not in rows
    assert str((other / "cats" / "1.jpg").resolve()) in rows


def test_single_file_source_keeps_the_rows_of_its_folder(tmp_path: Path, cache: Path) -> None:
    root = make_tree(tmp_path / "tree")
    fingerprint_path(root, cache_file=cache)
    fingerprint_path(root / "cats" / "1.jpg", cache_file=cache)
    assert len(cache_rows(cache)) == 9


def _fingerprint_in_child(root: str, cache_file: str, repeats: int) -> str:
    digests = {fingerprint_path(Path(root), cache_file=Path(cache_file)) for _ in range(repeats)}
    assert len(digests) == 1
    return digests.pop()


def test_two_processes_share_one_cache_file(tmp_path: Path, cache: Path, hashed: list[str]) -> None:
    root = make_tree(tmp_path / "tree")
    for index in range(200):  # enough rows that both processes are writing at the same time
        (root / "many" / f"{index % 7}").mkdir(parents=True, exist_ok=True)
        (root / "many" / f"{index % 7}" / f"{index}.bin").write_bytes(os.urandom(100))
    age(root)
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        results = [pool.apply_async(_fingerprint_in_child, (str(root), str(cache), 3)) for _ in range(2)]
        digests = [result.get(timeout=120) for result in results]
    assert digests == [expected(root)] * 2
    with sqlite3.connect(cache) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert len(cache_rows(cache)) == 209
    assert fingerprint_path(root, cache_file=cache) == expected(root)
    assert hashed == []


# ---------------------------------------------------------------------------------------------------------
# Excluded paths (the artifact root inside the source)
# ---------------------------------------------------------------------------------------------------------


def fill_artifacts(artifacts: Path, tag: str) -> None:
    (artifacts / "download" / f"Download-{tag}").mkdir(parents=True, exist_ok=True)
    (artifacts / "download" / f"Download-{tag}" / "MANIFEST.json").write_text(tag)


def test_excluded_artifact_root_absolute(tmp_path: Path, hashed: list[str]) -> None:
    source = make_tree(tmp_path / "data")
    clean = fingerprint_path(source, cache_file=None)
    artifacts = source / "artifacts"
    cache_file = stat_cache_path(artifacts)  # the cache itself lives in the excluded root
    assert fingerprint_path(source, cache_file=cache_file, exclude=[artifacts]) == clean
    fill_artifacts(artifacts, "one")
    hashed.clear()
    assert fingerprint_path(source, cache_file=cache_file, exclude=[artifacts]) == clean
    fill_artifacts(artifacts, "two")
    assert fingerprint_path(source, cache_file=cache_file, exclude=[artifacts]) == clean
    assert hashed == []
    assert not any(path.startswith(str(artifacts.resolve())) for path in cache_rows(cache_file))
    assert fingerprint_path(source, cache_file=None) != clean  # not excluded: it is part of the tree


def test_excluded_artifact_root_relative_with_cwd_inside(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_tree(tmp_path / "data")
    clean = fingerprint_path(source, cache_file=None)
    fill_artifacts(source / "artifacts", "one")
    monkeypatch.chdir(source)
    assert fingerprint_path(Path("."), cache_file=cache, exclude=[Path("artifacts")]) == clean
    assert fingerprint_path(Path("."), cache_file=cache, exclude=[Path("./artifacts/")]) == clean
    assert fingerprint_path(source, cache_file=cache, exclude=[Path("artifacts")]) == clean
    monkeypatch.chdir(source / "cats")
    assert fingerprint_path(Path(".."), cache_file=cache, exclude=[Path("../artifacts")]) == clean


def test_excluded_path_spelled_through_a_symlink(tmp_path: Path, cache: Path) -> None:
    source = make_tree(tmp_path / "data")
    clean = fingerprint_path(source, cache_file=None)
    fill_artifacts(source / "artifacts", "one")
    (tmp_path / "alias").symlink_to(source)
    assert fingerprint_path(source, cache_file=cache, exclude=[tmp_path / "alias" / "artifacts"]) == clean
    assert fingerprint_path(tmp_path / "data", cache_file=cache, exclude=[source / "artifacts"]) == clean
    assert fingerprint_path(tmp_path / "data" / ".", cache_file=cache, exclude=[source / "artifacts"]) == clean


def test_excluded_symlink_inside_the_source_is_left_out(tmp_path: Path, cache: Path) -> None:
    source = make_tree(tmp_path / "data")
    clean = fingerprint_path(source, cache_file=None)
    (tmp_path / "real-artifacts").mkdir()
    (source / "artifacts").symlink_to(tmp_path / "real-artifacts")
    assert fingerprint_path(source, cache_file=cache, exclude=[source / "artifacts"]) == clean


def test_excluded_root_that_does_not_exist_yet(tmp_path: Path, cache: Path) -> None:
    source = make_tree(tmp_path / "data")
    clean = fingerprint_path(source, cache_file=cache, exclude=[source / "artifacts"])
    assert clean == expected(source)
    fill_artifacts(source / "artifacts", "one")
    assert fingerprint_path(source, cache_file=cache, exclude=[source / "artifacts"]) == clean


def test_excluded_paths_outside_the_source_have_no_effect(tmp_path: Path, cache: Path) -> None:
    source = make_tree(tmp_path / "data")
    make_tree(tmp_path / "data-other")
    outside = [tmp_path / "artifacts", tmp_path, tmp_path / "data-other", tmp_path / "data-other" / "cats"]
    assert fingerprint_path(source, cache_file=cache, exclude=outside) == expected(source)


def test_excluded_nested_folder_and_file(tmp_path: Path, cache: Path, hashed: list[str]) -> None:
    source = make_tree(tmp_path / "data")
    digest = fingerprint_path(source, cache_file=cache, exclude=[source / "cats" / "kittens", source / "big.bin"])
    hashed.clear()
    import shutil

    shutil.rmtree(source / "cats" / "kittens")
    (source / "big.bin").unlink()
    assert fingerprint_path(source, cache_file=cache) == digest == expected(source)
    assert hashed == []


def test_excluding_the_source_itself_leaves_nothing(tmp_path: Path, cache: Path, hashed: list[str]) -> None:
    source = make_tree(tmp_path / "data")
    (tmp_path / "empty").mkdir()
    assert fingerprint_path(source, cache_file=cache, exclude=[source]) == expected(tmp_path / "empty")
    assert hashed == []


def test_rows_below_an_excluded_path_are_not_pruned(tmp_path: Path, cache: Path) -> None:
    source = make_tree(tmp_path / "data")
    fingerprint_path(source, cache_file=cache)
    fingerprint_path(source, cache_file=cache, exclude=[source / "cats"])
    assert str((source / "cats" / "1.jpg").resolve()) in cache_rows(cache)


def test_stat_cache_path(tmp_path: Path) -> None:
    host = socket.gethostname().replace(".", "_")
    assert stat_cache_path(tmp_path / "artifacts") == tmp_path / "artifacts" / ".cache" / f"{host}.fingerprints.sqlite3"
