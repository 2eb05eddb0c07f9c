"""The `images` pipeline (any class-per-folder directory): the shared real-format fixtures, awkward and corrupt
files under both policies, retrain.py's `_nohash_` groups, splits that never move when images are added,
running inside the data folder, and the unchanged-folder fast path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import cli
from tasks.data.shards import iter_shard_examples
from tests.conftest import FIXTURES, REPO
from tests.fakes.images import write_awkward_images, write_class_folder

UNTIL_SHARDS = ["--until", "tfrecords"]


def stage_dirs(root: Path, stage: str) -> list[Path]:
    return sorted(p for p in (root / stage).glob("*-*") if not p.name.startswith("."))


def manifest_of(path: Path) -> dict:
    return json.loads((path / "MANIFEST.json").read_text())


def split_of_keys(shards: Path) -> dict[bytes, str]:
    info = json.loads((shards / "tfpipe_info.json").read_text())
    return {key: split for split in info["splits"] for _, _, key in iter_shard_examples(shards, split)}


def run(*args: str) -> int:
    return cli.main(list(args))


def fixture_folder(name: str) -> Path:
    folder = FIXTURES / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (a clone without ../shared)")
    return folder


def test_beans_fixture_skips_and_counts_its_junk(tmp_path: Path, luigi_config, capsys) -> None:
    source = fixture_folder("imagefolder_hf_beans_dummy")
    root = tmp_path / "artifacts"
    assert run("run", "images", "--source", str(source), "--artifacts", str(root), *UNTIL_SHARDS) == 0
    [decoded] = stage_dirs(root, "decode")
    manifest = manifest_of(decoded)
    assert manifest["junk_skipped"] == 1 and manifest["bad_images_skipped"] == 0
    assert sum(manifest["records"].values()) == 6 and manifest["num_classes"] == 3
    skipped = json.loads((decoded / "skipped.json").read_text())
    assert [entry["path"] for entry in skipped["junk"]] == [".DS_Store"]
    assert (decoded / "labels.txt").read_text().splitlines() == ["0:angular_leaf_spot", "1:bean_rust", "2:healthy"]
    out = capsys.readouterr().out
    assert "1 non-image file(s) skipped" in out and "fewer than 20 images" in out  # the run's summary says so


def test_cats_vs_dogs_zip_with_macos_junk_and_an_exif_only_jpeg(tmp_path: Path, luigi_config) -> None:
    archive = fixture_folder("imagefolder_hf_cats_vs_dogs_dummy") / "dummy_data.zip"
    root = tmp_path / "artifacts"
    assert run("run", "images", "--source", str(archive), "--artifacts", str(root), *UNTIL_SHARDS) == 0
    [decoded] = stage_dirs(root, "decode")
    manifest = manifest_of(decoded)
    assert sum(manifest["records"].values()) == 10 and manifest["bad_images_skipped"] == 0
    junk = json.loads((decoded / "skipped.json").read_text())["junk"]
    assert any("__MACOSX" in entry["path"] for entry in junk) and manifest["junk_skipped"] == len(junk) >= 3
    assert not (decoded / ".extract").exists()
    info = json.loads((stage_dirs(root, "tfrecords")[0] / "tfpipe_info.json").read_text())
    assert info["image_shape"] == [64, 64, 3] and info["num_classes"] == 2


@pytest.fixture
def awkward_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    write_class_folder(folder, {"roses": 12, "tulips": 12}, size=(80, 60), seed=5)
    write_awkward_images(folder)  # adds classes "awkward" and "corrupt" plus junk everywhere
    return folder


def test_a_corrupt_image_fails_the_run_by_default_with_its_name(awkward_folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    result = cli_process("run", "images", "--source", str(awkward_folder), "--artifacts", str(root),
                         "--until", "decode", cwd=tmp_path)
    assert result.returncode == 30  # [retcode] task_failed
    assert "tfpipe: DecodeImages failed:" in result.stderr and "/corrupt/" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout  # an expected error: its message, no traceback
    assert stage_dirs(root, "decode") == [] and not list((root / "decode").glob(".tmp-*"))


def test_skip_policy_lists_every_bad_image_and_reads_every_awkward_one(awkward_folder: Path, tmp_path: Path,
                                                                      luigi_config, capsys) -> None:
    root = tmp_path / "artifacts"
    assert run("run", "images", "--source", str(awkward_folder), "--artifacts", str(root), "--until", "decode",
               "--set", "DecodeImages.on_error=skip") == 0
    [decoded] = stage_dirs(root, "decode")
    manifest = manifest_of(decoded)
    skipped = json.loads((decoded / "skipped.json").read_text())
    bad = {entry["path"]: entry["reason"] for entry in skipped["bad_images"]}
    assert set(bad) == {"corrupt/truncated.jpg", "corrupt/zero.jpg", "corrupt/random.png", "corrupt/random.jpg",
                        "corrupt/bad_crc.png"}
    assert all(reason for reason in bad.values())
    assert manifest["bad_images_skipped"] == 5
    # corrupt/ held only bad files: its class has no examples, and it is reported, not kept as an empty class
    assert (decoded / "labels.txt").read_text().splitlines() == ["0:awkward", "1:roses", "2:tulips"]
    assert sum(manifest["records"].values()) == 24 + 11  # every awkward image (cmyk, 16-bit, gif...) decoded
    junk = {entry["path"] for entry in skipped["junk"]}
    assert {".DS_Store", "awkward/Thumbs.db", "awkward/notes.txt", "awkward/.hidden.jpg"} <= junk
    assert "5 corrupt image(s) skipped" in capsys.readouterr().out


def test_nohash_groups_share_a_split_and_adding_images_moves_none(tmp_path: Path, luigi_config) -> None:
    folder = tmp_path / "flowers"
    written = write_class_folder(folder, {"daisy": 40, "roses": 40}, size=(48, 40), seed=1)
    for path in written["daisy"][:30]:  # 10 groups of three: photo<g>_nohash_<n>.jpg
        index = int(path.stem)
        path.rename(path.with_name(f"photo{index // 3}_nohash_{index % 3}.jpg"))
    root = tmp_path / "artifacts"
    assert run("run", "images", "--source", str(folder), "--artifacts", str(root), *UNTIL_SHARDS,
               "--set", "DecodeImages.test_fraction=0.3", "--set", "ImageDirs.validation_fraction=0.3") == 0
    [shards] = stage_dirs(root, "tfrecords")
    before = split_of_keys(shards)
    assert len(before) == 80 and len(set(before.values())) == 3
    groups: dict[str, set[str]] = {}
    for key, split in before.items():
        name = key.decode()
        if "_nohash_" in name:
            groups.setdefault(name.split("_nohash_")[0], set()).add(split)
    assert len(groups) == 10 and all(len(splits) == 1 for splits in groups.values())

    write_class_folder(tmp_path / "more", {"daisy": 0, "roses": 25}, size=(48, 40), seed=9)
    for path in (tmp_path / "more" / "roses").iterdir():
        shutil.copy(path, folder / "roses" / f"new_{path.name}")
    assert run("run", "images", "--source", str(folder), "--artifacts", str(root), *UNTIL_SHARDS,
               "--set", "DecodeImages.test_fraction=0.3", "--set", "ImageDirs.validation_fraction=0.3") == 0
    [new_shards] = [d for d in stage_dirs(root, "tfrecords") if d != shards]
    after = split_of_keys(new_shards)
    assert len(after) == 105
    assert {key: after[key] for key in before} == before  # no existing example changed split


def cli_process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_running_inside_the_data_folder(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    write_class_folder(folder, {"a": 10, "b": 10}, size=(40, 30), seed=2)
    first = cli_process("run", "images", "--source", ".", *UNTIL_SHARDS, cwd=folder)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert (folder / "artifacts" / "tfrecords").is_dir()  # the default root, inside the source
    [decoded] = stage_dirs(folder / "artifacts", "decode")
    assert manifest_of(decoded)["num_classes"] == 2  # the artifact root is no class and no junk
    assert not any("artifacts" in entry["path"] for entry in json.loads((decoded / "skipped.json").read_text())["junk"])
    again = cli_process("status", "images", "--source", ".", *UNTIL_SHARDS, cwd=folder)
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout + again.stderr


def test_status_rehashes_only_what_changed(tmp_path: Path, luigi_config, monkeypatch: pytest.MonkeyPatch,
                                           capsys) -> None:
    from tasks.sources import fingerprint

    folder = tmp_path / "data"
    written = write_class_folder(folder, {"a": 15, "b": 15}, size=(40, 30), seed=3)
    for path in (p for paths in written.values() for p in paths):  # old enough to be cached (not "racy")
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns - 10**10))
    root = tmp_path / "artifacts"
    assert run("run", "images", "--source", str(folder), "--artifacts", str(root), "--until", "decode") == 0
    hashed: list[str] = []
    real_hash = fingerprint.hash_file
    monkeypatch.setattr(fingerprint, "hash_file", lambda path: hashed.append(path) or real_hash(path))
    capsys.readouterr()
    assert run("status", "images", "--source", str(folder), "--artifacts", str(root), "--until", "decode") == 0
    assert hashed == [] and "up to date" in capsys.readouterr().out
    changed = written["b"][3]
    changed.write_bytes(written["b"][4].read_bytes())
    assert run("status", "images", "--source", str(folder), "--artifacts", str(root), "--until", "decode") == 0
    assert [Path(p).name for p in hashed] == [changed.name]
    assert "to-do  decode" in capsys.readouterr().out


def test_images_default_model_trains_above_chance(images_published_run: tuple[Path, Path]) -> None:
    _, root = images_published_run  # the session's images run (tests/conftest.py), the default model, 5 epochs
    metrics = json.loads((stage_dirs(root, "evaluate")[0] / "metrics.json").read_text())
    assert json.loads((stage_dirs(root, "train")[0] / "train_info.json").read_text())["model"] == "small_cnn"
    assert metrics["examples"] >= 20 and metrics["top1_accuracy"] > 0.6, metrics["top1_accuracy"]
