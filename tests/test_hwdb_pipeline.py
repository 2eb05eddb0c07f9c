"""CASIA HWDB1.1 pipeline: fake .gnt sets in the real byte format -> decode -> ... -> frozen model -> predict."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import time
import zipfile
from pathlib import Path

import luigi
import numpy as np
import pytest

from pipelines import cli
from pipelines.registry import DATASETS, get_dataset
from pipelines.stages import decode_task
from tasks.datasets.hwdb.gnt import iter_gnt
from tasks.datasets.hwdb.task import DecodeHwdb
from tasks.formats.dataset_info import DatasetInfo
from tasks.formats.errors import ArchiveError, GntFormatError
from tasks.formats.examples import load_split
from tasks.formats.images import fit_to_square
from tasks.sources.task import Download
from tests.fakes.hwdb import DEFAULT_CHARS, TEST_DIR, TRAIN_DIR, FakeHwdb, write_fake_hwdb
from tests.helpers.http import LoopbackServer

TEST_ONLY = "鳌"  # a GB2312 character the training files never show


def small_fake(root: Path, **overrides: object) -> FakeHwdb:
    options = {"chars": DEFAULT_CHARS[:12], "per_char_per_file": 3, "test_only_chars": TEST_ONLY, "seed": 3}
    return write_fake_hwdb(root, **{**options, **overrides})


def hwdb_decode(source: str = "", checksum: str = "", **params: object) -> DecodeHwdb:
    return decode_task(get_dataset("hwdb"), source=source, checksum=checksum, **params)


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def stage_dirs(root: Path, stage: str, family: str = "") -> list[Path]:
    return sorted(p for p in (root / stage).glob(f"{family}*-*") if not p.name.startswith("."))


def build(*tasks: luigi.Task) -> bool:
    return luigi.build(list(tasks), local_scheduler=True, log_level="WARNING")


def zip_folder(folder: Path, archive: Path) -> Path:
    """A plain zip holding ``folder`` (by its name), as the official HWDB1.1 zips hold their folders."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(folder.rglob("*")):
            zipped.write(path, path.relative_to(folder.parent).as_posix())
    return archive


# ---- (a) decode --------------------------------------------------------------------------------------------
def test_decode_dictionary_from_train_only_and_skipped_test_characters(
    tmp_path: Path, luigi_config: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = small_fake(tmp_path / "src")
    appended: list[int] = []
    from tasks.formats.arrays import ArrayWriter

    original_append = ArrayWriter.append

    def recording_append(self: ArrayWriter, **batch: np.ndarray) -> None:
        appended.append(len(batch["key"]))
        original_append(self, **batch)

    monkeypatch.setattr(ArrayWriter, "append", recording_append)
    task = hwdb_decode(source=str(fake.root), image_size=24, chunk_rows=7)
    assert build(task)
    out = task.artifact_dir
    train_chars = sorted(fake.train_chars)

    char_dict = json.loads((out / "char_dict.json").read_text(encoding="utf-8"))
    assert list(char_dict) == train_chars and list(char_dict.values()) == list(range(len(train_chars)))
    assert TEST_ONLY not in char_dict
    labels = (out / "labels.txt").read_text(encoding="utf-8").splitlines()
    assert labels == [f"{i}:{ch}" for i, ch in enumerate(train_chars)]

    skipped = json.loads((out / "skipped.json").read_text(encoding="utf-8"))
    assert skipped["test"] == {"samples": 3, "characters": {TEST_ONLY: 3}}
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["skipped_test_samples"] == 3 and manifest["skipped_test_characters"] == 1
    assert manifest["records"] == {"train": fake.counts["train"], "test": fake.counts["test"] - 3}
    assert manifest["gnt_files"] == {"train": 3, "test": 1}

    info = DatasetInfo.load(out)
    assert info.image_shape == (24, 24, 1) and info.num_classes == 12 and info.folder_style == "index"
    # Streaming: rows go to disk in chunks of at most chunk_rows, never a whole split at once.
    assert max(appended) <= 7 and len(appended) > fake.counts["test"] // 7

    test = load_split(out, "test")
    assert test["image"].shape == (fake.counts["test"] - 3, 24, 24, 1) and test["image"].dtype == np.uint8
    expected = [s for s in iter_gnt(fake.test_files[0]) if s.tag != TEST_ONLY]
    for row, sample in enumerate(expected):
        assert test["key"][row].decode() == f"test/1241-c/{sample.index:05d}"
        assert int(test["label"][row]) == char_dict[sample.tag]
        np.testing.assert_array_equal(test["image"][row, :, :, 0], fit_to_square(sample.bitmap, 24))
    train = load_split(out, "train")
    assert train["image"].shape == (fake.counts["train"], 24, 24, 1)
    assert train["key"][0].decode() == "train/1001-c/00000"
    assert sorted(set(train["label"].tolist())) == list(range(12))


def test_split_folders_need_train_and_test_names(tmp_path: Path, luigi_config: object) -> None:
    fake = small_fake(tmp_path / "src", test_only_chars="")
    (fake.root / TEST_DIR).rename(fake.root / "heldout")
    task = hwdb_decode(source=str(fake.root))
    assert build(*task.requires().values())
    with pytest.raises(ValueError, match=r"no test folder .*tst or test.*subfolders found: HWDB1.1trn_gnt, heldout"):
        task.run()
    (fake.root / "heldout").rename(fake.root / "Test")  # any case, any name containing test/tst
    (fake.root / TRAIN_DIR).rename(fake.root / "my_TRAINING_set")
    task = hwdb_decode(source=str(fake.root))
    assert build(task)
    assert task.output().manifest()["records"]["test"] == small_fake(tmp_path / "again", test_only_chars="").counts[
        "test"]


def test_source_archive_of_both_folders_is_extracted_and_cleaned_up(tmp_path: Path, luigi_config: object) -> None:
    fake = small_fake(tmp_path / "src")
    archive = tmp_path / "hwdb.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(fake.root.rglob("*.gnt")):
            zipped.write(path, f"HWDB1.1/{path.relative_to(fake.root).as_posix()}")
    task = hwdb_decode(source=str(archive), checksum=sha256(archive), image_size=16)
    assert build(task)
    manifest = task.output().manifest()
    assert manifest["records"] == {"train": fake.counts["train"], "test": fake.counts["test"] - 3}
    assert not any(name.startswith(".extract") for name in manifest["files"])
    assert not (task.artifact_dir / ".extract").exists()


def test_running_inside_the_data_folder(tmp_path: Path) -> None:
    """``cd DATA && tfpipe run hwdb --source .``: the artifact root (./artifacts) is inside the source, and never
    part of its fingerprint, so the run finishes and a rerun has nothing to do."""
    import subprocess
    import sys

    from tests.conftest import REPO

    fake = small_fake(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pipelines.cli", "run", "hwdb", "--source", ".", "--until", "decode"]
    first = subprocess.run(command, cwd=fake.root, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    [decoded] = stage_dirs(fake.root / "artifacts", "decode")
    assert json.loads((decoded / "MANIFEST.json").read_text())["records"]["train"] == fake.counts["train"]
    status = [sys.executable, "-m", "pipelines.cli", "status", "hwdb", "--source", ".", "--until", "decode"]
    again = subprocess.run(status, cwd=fake.root, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout + again.stderr


# ---- (b) malformed input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "test"])
def test_truncated_gnt_fails_the_task_and_leaves_no_artifact(
    split: str, tmp_path: Path, luigi_config: object
) -> None:
    fake = small_fake(tmp_path / "src")
    broken = fake.train_files[1] if split == "train" else fake.test_files[0]
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) - 37])  # cut inside the last bitmap
    task = hwdb_decode(source=str(fake.root))
    assert build(*task.requires().values())
    with pytest.raises(GntFormatError, match=rf"{broken.name}.*truncated bitmap") as caught:
        task.run()
    assert caught.value.path == str(broken)
    assert not build(task)  # under Luigi too: the task fails
    assert not task.complete()
    root = tmp_path / "artifacts"
    assert stage_dirs(root, "decode", "DecodeHwdb") == []
    assert list((root / "decode").iterdir()) == []  # no temporary directory left behind


# ---- (c) end to end ------------------------------------------------------------------------------------------
def test_until_tfrecords_writes_index_folders(tmp_path: Path, luigi_config: object, capsys) -> None:
    fake = small_fake(tmp_path / "src")
    root = tmp_path / "artifacts"
    args = ["--source", str(fake.root), "--artifacts", str(root), "--until", "tfrecords",
            "--set", "DecodeHwdb.image_size=20"]
    assert cli.main(["run", "hwdb", *args]) == 0
    [image_dirs] = stage_dirs(root, "imagedirs")
    assert sorted(p.name for p in (image_dirs / "test").iterdir()) == [f"{i:05d}" for i in range(12)]
    assert len(list((image_dirs / "test").glob("*/*.png"))) == fake.counts["test"] - 3
    [shards] = stage_dirs(root, "tfrecords")
    info = json.loads((shards / "tfpipe_info.json").read_text())
    assert info["num_classes"] == 12 and info["image_shape"] == [20, 20, 1]
    assert (shards / "labels.txt").read_text(encoding="utf-8").startswith(f"0:{sorted(fake.train_chars)[0]}\n")
    capsys.readouterr()
    assert cli.main(["status", "hwdb", *args]) == 0
    assert "up to date: every stage is done" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")
def test_end_to_end_trains_a_useful_model_and_predicts_characters(
    tmp_path: Path, luigi_config: object, capsys
) -> None:
    pytest.importorskip("tensorflow")
    chars = DEFAULT_CHARS[:25]
    fake = write_fake_hwdb(tmp_path / "src", chars=chars, train_files=3, per_char_per_file=6,
                           test_only_chars=TEST_ONLY, seed=11)
    root = tmp_path / "artifacts"
    started = time.monotonic()
    code = cli.main(["run", "hwdb", "--source", str(fake.root), "--artifacts", str(root),
                     "--set", "DecodeHwdb.image_size=32", "--set", "Train.epochs=4", "--set", "Train.batch_size=32"])
    seconds = time.monotonic() - started
    assert code == 0
    [evaluation] = stage_dirs(root, "evaluate")
    metrics = json.loads((evaluation / "metrics.json").read_text())
    chance = 1 / len(chars)
    with capsys.disabled():  # shown with -s: what the fake set reaches, for tuning this test
        print(f"\nhwdb e2e: top-1 {metrics['top1_accuracy']:.3f} (chance {chance:.3f}), {seconds:.0f} s")
    assert metrics["examples"] == fake.counts["test"] - 3
    assert metrics["top1_accuracy"] > 5 * chance
    [frozen] = stage_dirs(root, "freeze")
    assert (frozen / "saved_model" / "saved_model.pb").is_file() and (frozen / "frozen_graph.pb").is_file()
    [image_dirs] = stage_dirs(root, "imagedirs")
    classes = sorted(chars)
    pngs = [sorted((image_dirs / "test" / f"{i:05d}").glob("*.png"))[0] for i in range(0, 25, 3)]
    capsys.readouterr()
    assert cli.main(["predict", str(frozen), *map(str, pngs)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(pngs)
    top1 = [line.split(": ", 1)[1].split(" (")[0] for line in lines]
    assert set(top1) <= set(classes)  # labels are the characters themselves
    truth = [classes[int(p.parent.name)] for p in pngs]
    assert sum(a == b for a, b in zip(top1, truth, strict=True)) >= len(pngs) // 2


# ---- (d) the official archives over HTTP --------------------------------------------------------------------
@pytest.fixture
def official_zips(tmp_path: Path) -> tuple[Path, FakeHwdb]:
    fake = small_fake(tmp_path / "src")
    www = tmp_path / "www"
    zip_folder(fake.train_dir, www / "HWDB1.1trn_gnt.zip")
    zip_folder(fake.test_dir, www / "HWDB1.1tst_gnt.zip")
    return www, fake


def official_pins(www: Path) -> list[str]:
    return ["--checksum", f"train={sha256(www / 'HWDB1.1trn_gnt.zip')}",
            "--checksum", f"test={sha256(www / 'HWDB1.1tst_gnt.zip')}"]


@pytest.fixture
def hwdb_mirror(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - returns the installer
    """The registry's hwdb entry with its official URLs moved to a loopback server (same file names)."""

    def use(base_url: str) -> None:
        entry = get_dataset("hwdb")
        sources = tuple(dataclasses.replace(s, url=base_url + s.url.rsplit("/", 1)[1]) for s in entry.sources)
        monkeypatch.setitem(DATASETS, "hwdb", dataclasses.replace(entry, sources=sources))

    return use


def test_official_urls_pinned_by_sha256_decode(official_zips, hwdb_mirror, tmp_path: Path, luigi_config) -> None:
    www, fake = official_zips
    root = tmp_path / "artifacts"
    with LoopbackServer(www) as server:
        hwdb_mirror(server.url)
        code = cli.main(["run", "hwdb", "--artifacts", str(root), "--until", "decode", *official_pins(www)])
        requested = sorted(r.path for r in server.requests if r.method == "GET")
    assert code == 0
    assert requested == ["/HWDB1.1trn_gnt.zip", "/HWDB1.1tst_gnt.zip"]
    downloads = stage_dirs(root, "download", "Download")
    assert len(downloads) == 2  # two Downloads of one decode stage: distinct keys, distinct artifacts
    [decoded] = stage_dirs(root, "decode")
    manifest = json.loads((decoded / "MANIFEST.json").read_text())
    assert manifest["records"] == {"train": fake.counts["train"], "test": fake.counts["test"] - 3}
    assert set(manifest["upstream"]) == {"train", "test"}  # upstream keys named by role
    assert sorted(manifest["upstream"].values()) == sorted(d.name.split("-")[1] for d in downloads)
    assert not any(".extract" in name for name in manifest["files"])


def test_unpinned_official_url_is_refused_with_advice(tmp_path: Path, luigi_config: object, capsys) -> None:
    assert cli.main(["status", "hwdb", "--artifacts", str(tmp_path / "a")]) == 2
    error = capsys.readouterr().err
    assert "HWDB1.1trn_gnt.zip" in error and "--checksum train=sha256:" in error
    code = cli.main(["status", "hwdb", "--artifacts", str(tmp_path / "a"), "--checksum", "train=sha256:" + "1" * 64])
    assert code == 2 and "--checksum test=sha256:" in capsys.readouterr().err
    assert cli.main(["status", "hwdb", "--artifacts", str(tmp_path / "a"), "--checksum", "sha256:" + "1" * 64]) == 2
    assert "pin each by role" in capsys.readouterr().err
    assert cli.main(["run", "hwdb", "--artifacts", str(tmp_path / "a"), "--until", "decode"]) != 0
    assert not (tmp_path / "a" / "decode").exists()


def test_unpinned_source_url_is_refused(tmp_path: Path, luigi_config: object, capsys) -> None:
    code = cli.main(["status", "hwdb", "--source", "http://127.0.0.1:9/hwdb.zip", "--artifacts", str(tmp_path)])
    assert code == 2 and "--checksum sha256:<hex>" in capsys.readouterr().err


def test_each_archive_checksum_is_in_the_decode_key(luigi_config: object) -> None:
    def key(train: str = "a", test: str = "b") -> str:
        return hwdb_decode(checksum=f"train=sha256:{train * 64},test=sha256:{test * 64}").artifact_key

    assert key() != key(test="c")
    assert key() != key(train="c")
    assert key() == key()
    assert key("a", "b") != key("b", "a")  # the roles are part of the key, not just the set of digests


# ---- .alz inside the train zip -------------------------------------------------------------------------------
def alz_zips(tmp_path: Path, fake: FakeHwdb) -> tuple[Path, Path]:
    """A train zip wrapping ``HWDB1.1trn_gnt.alz`` (dummy bytes), as the official one does, and a test zip."""
    wrapped = tmp_path / "wrapped"
    wrapped.mkdir()
    (wrapped / "HWDB1.1trn_gnt.alz").write_bytes(b"ALZ\x01" + bytes(64))
    train_zip = tmp_path / "www" / "HWDB1.1trn_gnt.zip"
    train_zip.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(train_zip, "w") as zipped:
        zipped.write(wrapped / "HWDB1.1trn_gnt.alz", "HWDB1.1trn_gnt.alz")
        zipped.writestr("HWDB1.1trn_gnt.a00", b"second volume")
    return train_zip, zip_folder(fake.test_dir, tmp_path / "www" / "HWDB1.1tst_gnt.zip")


def official_decode(train_zip: Path, test_zip: Path) -> DecodeHwdb:
    """DecodeHwdb over the two official zips (local copies, pinned), as the registry's sources build it."""
    return DecodeHwdb(upstream={"train": Download(source=str(train_zip), checksum=sha256(train_zip)),
                                "test": Download(source=str(test_zip), checksum=sha256(test_zip))})


def test_alz_without_unalz_says_how_to_extract_by_hand(
    tmp_path: Path, luigi_config: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = small_fake(tmp_path / "src")
    task = official_decode(*alz_zips(tmp_path, fake))
    monkeypatch.setattr("tasks.sources.archive.shutil.which", lambda name: None)
    assert build(*task.requires().values())
    with pytest.raises(ValueError, match=r"apt-get install unalz && unalz HWDB1.1trn_gnt.alz") as caught:
        task.run()
    assert "tfpipe run hwdb --source DIR" in str(caught.value)
    assert list((tmp_path / "artifacts" / "decode").iterdir()) == []


def fake_unalz(bin_dir: Path) -> Path:
    """A stand-in ``unalz ARCHIVE DEST`` that copies ``$FAKE_UNALZ_CONTENT`` into DEST."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "unalz"
    script.write_text('#!/bin/sh\nset -e\ncp -R "$FAKE_UNALZ_CONTENT"/. "$2"/\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_alz_is_extracted_with_unalz_and_checked(
    tmp_path: Path, luigi_config: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = small_fake(tmp_path / "src")
    train_zip, test_zip = alz_zips(tmp_path, fake)
    fake_unalz(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    content = tmp_path / "alz-content"
    (content / "sub").mkdir(parents=True)
    for path in fake.train_files:
        (content / "sub" / path.name).write_bytes(path.read_bytes())
    monkeypatch.setenv("FAKE_UNALZ_CONTENT", str(content))
    decode = official_decode(train_zip, test_zip)
    assert build(decode)
    assert decode.output().manifest()["records"]["train"] == fake.counts["train"]
    assert not list(decode.artifact_dir.rglob("*.alz")) and not list(decode.artifact_dir.rglob("*.gnt"))

    (content / "escape").symlink_to(tmp_path / "src")  # an archive that unpacks a link is refused
    monkeypatch.setattr(DecodeHwdb, "version", DecodeHwdb.version + 1)  # a new key: build it again
    from luigi.task_register import Register

    Register.clear_instance_cache()  # else Luigi hands back the instance above, with its key cached
    evil = official_decode(train_zip, test_zip)
    with pytest.raises(ArchiveError, match="symbolic link"):
        evil.run()


@pytest.mark.parametrize(("inside", "message"), [
    ("no test folder", r"hwdb\.zip: no test folder of \.gnt files"),
    ("an empty test folder", r"hwdb\.zip member HWDB1\.1/HWDB1\.1tst_gnt: no \.gnt files"),
])
def test_an_archive_missing_what_decoding_needs_is_named_not_its_extraction(inside: str, message: str,
                                                                            tmp_path: Path,
                                                                            luigi_config: object) -> None:
    fake = small_fake(tmp_path / "src")
    archive = tmp_path / "hwdb.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted((fake.root / TRAIN_DIR).rglob("*.gnt")):
            zipped.write(path, f"HWDB1.1/{path.relative_to(fake.root).as_posix()}")
        if inside == "an empty test folder":
            zipped.writestr(f"HWDB1.1/{TEST_DIR}/readme.txt", "no samples here")
    task = hwdb_decode(source=str(archive), checksum=sha256(archive), image_size=16)
    assert build(*task.requires().values())
    with pytest.raises(ValueError, match=message) as refused:
        task.run()
    assert ".extract" not in str(refused.value) and ".tmp-" not in str(refused.value)
