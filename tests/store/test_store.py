"""The artifact store contract: keys, atomic commits, manifest validity, sweeping killed builds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.store import artifacts as store


def identity(key_params: dict[str, str] | None = None, version: int = 1) -> store.ArtifactIdentity:
    params = key_params or {"a": "1"}
    key = store.artifact_key("Fam", params, version, {"Up": "abc"})
    return store.ArtifactIdentity("Fam", "stage", key, version, params, {"Up": "abc"})


def test_key_changes_with_each_part_and_is_stable() -> None:
    base = store.artifact_key("Fam", {"a": "1"}, 1, {"Up": "k1"})
    assert base == store.artifact_key("Fam", {"a": "1"}, 1, {"Up": "k1"})
    assert len(base) == 12 and all(c in "0123456789abcdef" for c in base)
    variants = [
        store.artifact_key("Other", {"a": "1"}, 1, {"Up": "k1"}),
        store.artifact_key("Fam", {"a": "2"}, 1, {"Up": "k1"}),
        store.artifact_key("Fam", {"a": "1"}, 2, {"Up": "k1"}),
        store.artifact_key("Fam", {"a": "1"}, 1, {"Up": "k2"}),
    ]
    assert len({base, *variants}) == 5


def test_building_commits_with_manifest_last(tmp_path: Path) -> None:
    ident = identity()
    with store.building(tmp_path, ident) as (temp, extra):
        (temp / "sub").mkdir()
        (temp / "sub" / "data.bin").write_bytes(b"x" * 10)
        extra["records"] = {"train": 1}
        assert not ident.directory(tmp_path).exists()
    final = ident.directory(tmp_path)
    manifest = json.loads((final / store.MANIFEST_NAME).read_text())
    assert manifest["key"] == ident.key and manifest["records"] == {"train": 1}
    assert manifest["files"]["sub/data.bin"]["size"] == 10
    assert manifest["files"]["sub/data.bin"]["sha256"] == store.sha256_file(final / "sub" / "data.bin")
    assert store.is_valid_artifact(final, ident.key)
    assert store.verify_artifact(final) == []
    assert [p.name for p in final.parent.iterdir()] == [final.name]


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    ident = identity()
    with pytest.raises(RuntimeError), store.building(tmp_path, ident) as (temp, _):
        (temp / "half.bin").write_bytes(b"partial")
        raise RuntimeError("boom")
    assert list((tmp_path / "stage").iterdir()) == []


def test_manifest_validity_checks_key_and_sizes(tmp_path: Path) -> None:
    ident = identity()
    with store.building(tmp_path, ident) as (temp, _):
        (temp / "f.txt").write_text("hello")
    final = ident.directory(tmp_path)
    assert not store.is_valid_artifact(final, "000000000000")
    (final / "f.txt").write_text("hello, longer")
    assert not store.is_valid_artifact(final, ident.key)
    (final / "f.txt").write_text("jello")  # same size, other bytes: only the audit sees it
    assert store.is_valid_artifact(final, ident.key)
    assert store.verify_artifact(final) and "sha256" in store.verify_artifact(final)[0]
    (final / store.MANIFEST_NAME).write_text("{not json")
    assert not store.is_valid_artifact(final, ident.key)


def test_directory_without_manifest_is_not_done_and_is_replaced(tmp_path: Path) -> None:
    ident = identity()
    final = ident.directory(tmp_path)
    final.mkdir(parents=True)
    (final / "junk").write_text("left by hand")
    assert not store.is_valid_artifact(final, ident.key)
    with store.building(tmp_path, ident) as (temp, _):
        (temp / "good").write_text("ok")
    assert store.is_valid_artifact(final, ident.key)
    assert not (final / "junk").exists()


def test_sweep_removes_temps_of_dead_processes_only(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = store.socket.gethostname().replace(".", "_")
    stale = stage / f"{store.TEMP_PREFIX}Fam-abc.{host}.{int(dead.stdout)}.deadbeef"
    live = stage / f"{store.TEMP_PREFIX}Fam-abd.{host}.{store.os.getpid()}.cafecafe"
    stale.mkdir()
    live.mkdir()
    removed = store.sweep_stale_temps(stage)
    assert removed == [stale]
    assert live.exists() and not stale.exists()
