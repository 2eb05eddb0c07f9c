"""fetch against a loopback HTTP server: digests, resume with Range, retries, HTTP errors, local sources."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from tasks.formats.errors import ChecksumError
from tasks.sources.fetch import Digest, DownloadError, directory_fingerprint, fetch, file_digest, part_path
from tests.helpers.http import LoopbackServer, serve_directory

PAYLOAD = random.Random(1234).randbytes(200_000)
NAME = "data.bin"


def sha256_of(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def md5_of(data: bytes) -> Digest:
    return Digest("md5", hashlib.md5(data).hexdigest())


@pytest.fixture
def served(tmp_path: Path) -> Path:
    root = tmp_path / "served"
    root.mkdir()
    (root / NAME).write_bytes(PAYLOAD)
    return root


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "out" / NAME


def assert_complete(dest: Path) -> None:
    assert dest.read_bytes() == PAYLOAD
    assert not part_path(dest).exists()


# ---------------------------------------------------------------------------------------------------------
# Digest
# ---------------------------------------------------------------------------------------------------------


def test_digest_parse_accepts_both_algorithms_and_normalises_case() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    assert Digest.parse(f"sha256:{sha.upper()}") == Digest("sha256", sha)
    md5 = hashlib.md5(b"x").hexdigest()
    assert Digest.parse(f" md5:{md5} ") == Digest("md5", md5)
    assert str(Digest.parse(f"sha256:{sha}")) == f"sha256:{sha}"


@pytest.mark.parametrize("text", ["", "abc", "sha1:" + "0" * 40, "sha256:" + "0" * 63, "md5:" + "g" * 32])
def test_digest_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        Digest.parse(text)


def test_file_digest_streams_to_the_same_value_as_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD * 8)
    assert file_digest(path) == hashlib.sha256(PAYLOAD * 8).hexdigest()
    assert file_digest(path, "md5") == hashlib.md5(PAYLOAD * 8).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("digest", [sha256_of(PAYLOAD), md5_of(PAYLOAD)], ids=["sha256", "md5"])
def test_http_download_verifies_digest(served: Path, dest: Path, digest: Digest) -> None:
    with serve_directory(served) as base_url:
        result = fetch(base_url + NAME, dest, digest=digest, timeout=5)
    assert result == dest
    assert_complete(dest)


def test_wrong_checksum_leaves_neither_dest_nor_part(served: Path, dest: Path) -> None:
    wrong = sha256_of(b"something else")
    with serve_directory(served) as base_url:
        url = base_url + NAME
        with pytest.raises(ChecksumError) as caught:
            fetch(url, dest, digest=wrong, timeout=5)
    message = str(caught.value)
    assert url in message
    assert wrong.hexdigest in message
    assert hashlib.sha256(PAYLOAD).hexdigest() in message
    assert not dest.exists()
    assert not part_path(dest).exists()


def test_dropped_connection_is_resumed_with_range(served: Path, dest: Path) -> None:
    with LoopbackServer(served, drop_after_bytes=70_000) as server:
        fetch(server.url + NAME, dest, digest=sha256_of(PAYLOAD), timeout=5, retries=2)
        requests = server.requests
    assert_complete(dest)
    assert [r.range for r in requests] == [None, "bytes=70000-"]


def test_several_drops_each_resume_from_where_the_last_stopped(served: Path, dest: Path) -> None:
    with LoopbackServer(served, drop_after_bytes=50_000, drop_count=3) as server:
        fetch(server.url + NAME, dest, digest=sha256_of(PAYLOAD), timeout=5, retries=3)
        ranges = [r.range for r in server.requests]
    assert_complete(dest)
    assert ranges == [None, "bytes=50000-", "bytes=100000-", "bytes=150000-"]


def test_retries_exhausted_raises_and_keeps_the_part_for_later(served: Path, dest: Path) -> None:
    with LoopbackServer(served, drop_after_bytes=10_000, drop_count=100) as server:
        url = server.url + NAME
        with pytest.raises(DownloadError) as caught:
            fetch(url, dest, digest=sha256_of(PAYLOAD), timeout=5, retries=1)
        assert len(server.requests) == 2
    assert url in str(caught.value)
    assert not dest.exists()
    assert part_path(dest).read_bytes() == PAYLOAD[:20_000]


def test_existing_part_is_resumed(served: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True)
    part_path(dest).write_bytes(PAYLOAD[:123_456])
    with LoopbackServer(served) as server:
        fetch(server.url + NAME, dest, digest=sha256_of(PAYLOAD), timeout=5)
        requests = server.requests
    assert_complete(dest)
    assert [r.range for r in requests] == ["bytes=123456-"]


def test_existing_part_with_wrong_bytes_fails_the_digest_and_is_removed(served: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True)
    part_path(dest).write_bytes(b"\0" * 1000)
    with serve_directory(served) as base_url, pytest.raises(ChecksumError):
        fetch(base_url + NAME, dest, digest=sha256_of(PAYLOAD), timeout=5)
    assert not dest.exists()
    assert not part_path(dest).exists()


def test_server_ignoring_range_restarts_from_zero(served: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True)
    part_path(dest).write_bytes(PAYLOAD[:5_000])
    with LoopbackServer(served, honour_range=False) as server:
        fetch(server.url + NAME, dest, digest=sha256_of(PAYLOAD), timeout=5)
        requests = server.requests
    assert_complete(dest)
    assert [r.range for r in requests] == ["bytes=5000-"]


def test_complete_part_answered_416_is_verified_and_committed(served: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True)
    part_path(dest).write_bytes(PAYLOAD)
    with LoopbackServer(served) as server:
        fetch(server.url + NAME, dest, digest=sha256_of(PAYLOAD), timeout=5)
        requests = server.requests
    assert_complete(dest)
    assert [r.range for r in requests] == [f"bytes={len(PAYLOAD)}-"]


def test_part_longer_than_the_file_is_discarded_and_refetched(served: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True)
    part_path(dest).write_bytes(PAYLOAD + b"stale tail")
    with LoopbackServer(served) as server:
        fetch(server.url + NAME, dest, digest=sha256_of(PAYLOAD), timeout=5)
        requests = server.requests
    assert_complete(dest)
    assert [r.range for r in requests] == [f"bytes={len(PAYLOAD) + 10}-", None]


def test_download_without_digest_still_resumes(served: Path, dest: Path) -> None:
    with LoopbackServer(served, drop_after_bytes=1_000) as server:
        fetch(server.url + NAME, dest, digest=None, timeout=5)
        assert [r.range for r in server.requests] == [None, "bytes=1000-"]
    assert_complete(dest)


def test_404_names_url_and_status(served: Path, dest: Path) -> None:
    with LoopbackServer(served) as server:
        url = server.url + "missing.bin"
        with pytest.raises(DownloadError) as caught:
            fetch(url, dest, digest=None, timeout=5, retries=3)
        assert len(server.requests) == 1, "a 404 is not retried"
    assert caught.value.status == 404
    assert url in str(caught.value)
    assert "404" in str(caught.value)
    assert not dest.exists()
    assert not part_path(dest).exists()


def test_connection_refused_is_a_download_error(tmp_path: Path, dest: Path) -> None:
    with LoopbackServer(tmp_path) as server:
        url = server.url + NAME
    # The server is stopped: nothing listens on that port any more.
    with pytest.raises(DownloadError) as caught:
        fetch(url, dest, digest=None, timeout=2, retries=1)
    assert url in str(caught.value)


def test_progress_is_called_with_increasing_counts_and_the_total(served: Path, dest: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    with serve_directory(served) as base_url:
        fetch(
            base_url + NAME,
            dest,
            digest=sha256_of(PAYLOAD),
            chunk_size=16_384,
            timeout=5,
            progress=lambda done, total: calls.append((done, total)),
        )
    done_values = [done for done, _ in calls]
    assert len(calls) >= len(PAYLOAD) // 16_384
    assert done_values == sorted(set(done_values)), "strictly increasing"
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert {total for _, total in calls} == {len(PAYLOAD)}


def test_dest_already_verified_is_not_downloaded_again(served: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True)
    dest.write_bytes(PAYLOAD)
    with LoopbackServer(served) as server:
        fetch(server.url + NAME, dest, digest=sha256_of(PAYLOAD), timeout=5)
        assert server.requests == []
    assert_complete(dest)


# ---------------------------------------------------------------------------------------------------------
# Local sources
# ---------------------------------------------------------------------------------------------------------


def test_plain_path_source_is_copied_and_verified(served: Path, dest: Path) -> None:
    fetch(str(served / NAME), dest, digest=sha256_of(PAYLOAD))
    assert_complete(dest)


def test_file_url_source_is_copied_and_verified(served: Path, dest: Path) -> None:
    fetch((served / NAME).as_uri(), dest, digest=md5_of(PAYLOAD))
    assert_complete(dest)


def test_local_source_with_wrong_checksum(served: Path, dest: Path) -> None:
    source = (served / NAME).as_uri()
    with pytest.raises(ChecksumError) as caught:
        fetch(source, dest, digest=sha256_of(b"nope"))
    assert source in str(caught.value)
    assert not dest.exists()
    assert not part_path(dest).exists()


def test_missing_local_source(tmp_path: Path, dest: Path) -> None:
    missing = tmp_path / "nowhere.bin"
    with pytest.raises(DownloadError, match="nowhere.bin"):
        fetch(str(missing), dest, digest=None)
    assert not dest.exists()


def test_unsupported_scheme(dest: Path) -> None:
    with pytest.raises(DownloadError, match="ftp"):
        fetch("ftp://example.invalid/x", dest, digest=None)


# ---------------------------------------------------------------------------------------------------------
# directory_fingerprint
# ---------------------------------------------------------------------------------------------------------


def make_tree(root: Path) -> Path:
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    (root / "cats" / "1.jpg").write_bytes(b"\xff\xd8cat one")
    (root / "cats" / "2.jpg").write_bytes(b"\xff\xd8cat two")
    (root / "dogs" / "1.jpg").write_bytes(b"\xff\xd8dog one")
    return root


def test_fingerprint_changes_when_one_byte_changes(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    before = directory_fingerprint(root)
    assert directory_fingerprint(root) == before
    (root / "dogs" / "1.jpg").write_bytes(b"\xff\xd8dog onE")
    assert directory_fingerprint(root) != before


def test_fingerprint_ignores_mtime(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    before = directory_fingerprint(root)
    os.utime(root / "cats" / "1.jpg", (1_000_000, 1_000_000))
    os.utime(root / "dogs", (2_000_000, 2_000_000))
    assert directory_fingerprint(root) == before


def test_fingerprint_same_content_elsewhere_is_equal(tmp_path: Path) -> None:
    assert directory_fingerprint(make_tree(tmp_path / "a")) == directory_fingerprint(make_tree(tmp_path / "b"))


def test_fingerprint_sees_renames_new_empty_dirs_and_symlinks(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    seen = {directory_fingerprint(root)}
    (root / "cats" / "2.jpg").rename(root / "cats" / "3.jpg")
    seen.add(directory_fingerprint(root))
    (root / "birds").mkdir()
    seen.add(directory_fingerprint(root))
    (root / "link.jpg").symlink_to("cats/1.jpg")
    seen.add(directory_fingerprint(root))
    (root / "link.jpg").unlink()
    (root / "link.jpg").symlink_to("dogs/1.jpg")
    seen.add(directory_fingerprint(root))
    assert len(seen) == 5


def test_fingerprint_of_a_single_file_follows_its_content(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc")
    first = directory_fingerprint(path)
    path.write_bytes(b"abd")
    assert directory_fingerprint(path) != first


def test_fingerprint_refuses_a_fifo_rather_than_skipping_it(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    os.mkfifo(root / "cats" / "pipe")
    with pytest.raises(ValueError, match="pipe"):
        directory_fingerprint(root)
