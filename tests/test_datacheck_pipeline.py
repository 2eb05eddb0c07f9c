"""The data check in whole runs, on real scans (scikit-learn's digits as a class-per-folder PNG directory): a leak
stops the run before Train and names the files; ``on_leak=drop`` trains on the rest; a label conflict and a blank
image are found; a class removed in the next nightly run is named as drift, and ``on_drift=fail`` stops the run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import cli
from tasks.datacheck.files import DATA_REPORT_FILE, DATACHECK_FILE
from tasks.datasets.images.task import test_split_of as split_of_path
from tests.conftest import isolated_luigi_config

TEST_FRACTION = 0.25
SETTINGS = ("--set", "DecodeImages.image_size=32", "--set", f"DecodeImages.test_fraction={TEST_FRACTION}")


def write_digits(root: Path, per_class: int = 30, classes: int = 4) -> Path:
    """The first ``per_class`` scans of each of ``classes`` digits, 4x enlarged to 32x32 grey PNGs."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in range(classes):
        folder = root / f"digit{label}"
        folder.mkdir(parents=True)
        for n, image in enumerate(digits.images[digits.target == label][:per_class]):
            pixels = np.kron(image * (255 / 16), np.ones((4, 4))).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"scan{n:03d}.png")
    return root


def copy_into_train(photos: Path, count: int) -> list[str]:
    """Copy ``count`` test images under new names that the split assigns to train; their new relative paths."""
    copies = []
    for path in sorted(photos.rglob("*.png")):
        relpath = path.relative_to(photos).as_posix()
        if split_of_path(relpath, TEST_FRACTION) != "test":
            continue
        for attempt in range(100):
            new = f"{path.parent.name}/copy{attempt}_{path.name}"
            if split_of_path(new, TEST_FRACTION) == "train":
                shutil.copy(path, photos / new)
                copies.append(new)
                break
        if len(copies) == count:
            return copies
    raise AssertionError(f"only {len(copies)} test images to copy")


def run(root: Path, photos: Path, *extra: str) -> int:
    with isolated_luigi_config(root):
        return cli.main(["run", "images", "--source", str(photos), "--artifacts", str(root), *SETTINGS, *extra])


def test_a_leak_stops_the_run_before_train_naming_every_copy(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    photos = write_digits(tmp_path / "photos", per_class=40)
    copies = copy_into_train(photos, 30)
    root = tmp_path / "artifacts"
    code = run(root, photos)
    err = capsys.readouterr().err
    assert code != 0
    assert "30 images leak across splits (30 train/test)" in err
    assert "Traceback" not in err
    assert not (root / "datacheck").exists() or not any((root / "datacheck").iterdir())  # nothing committed
    assert not (root / "train").exists()  # stopped before training
    kept = json.loads(next((root / "reports" / "datacheck").glob(f"*/{DATACHECK_FILE}")).read_text())
    leaked = {m["key"] for group in kept["findings"]["leak"]["items"] for m in group["members"]}
    assert set(copies) <= leaked  # every copy named, not only the first
    assert kept["findings"]["leak"]["count"] == 30 and kept["passed"] is False


def test_on_leak_drop_hands_on_shards_without_the_test_copies(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tasks.data.shards import iter_shard_examples, load_dataset_info

    photos = write_digits(tmp_path / "photos", per_class=40)
    copies = copy_into_train(photos, 30)
    root = tmp_path / "artifacts"
    assert run(root, photos, "--set", "DataCheck.on_leak=drop", "--until", "datacheck") == 0
    assert "dropped 30 examples from test" in capsys.readouterr().out
    checked = next((root / "datacheck").glob("DataCheck-*"))
    shards = next((root / "tfrecords").glob("TFRecords-*"))
    before = {s: {k for *_, k in iter_shard_examples(shards, s)} for s in ("train", "validation", "test")}
    after = {s: {k for *_, k in iter_shard_examples(checked, s)} for s in ("train", "validation", "test")}
    assert after["train"] == before["train"] and after["validation"] == before["validation"]
    assert len(after["test"]) == len(before["test"]) - 30 and after["test"] < before["test"]
    assert {c.encode() for c in copies} <= after["train"]  # the train copies stay
    assert load_dataset_info(checked).count("test") == len(after["test"])
    assert (checked / "labels.txt").stat().st_ino == (shards / "labels.txt").stat().st_ino  # handed on, linked


@pytest.mark.slow  # default-suite cover: test_on_leak_drop_hands_on_shards_without_the_test_copies
def test_on_leak_drop_removes_the_test_copies_and_the_rest_trains(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    photos = write_digits(tmp_path / "photos", per_class=40)
    copy_into_train(photos, 30)
    root = tmp_path / "artifacts"
    code = run(root, photos, "--set", "DataCheck.on_leak=drop", "--set", "Train.epochs=2", "--until", "evaluate")
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    artifact = next((root / "datacheck").glob("DataCheck-*"))
    report = json.loads((artifact / DATACHECK_FILE).read_text())
    assert report["findings"]["leak"]["dropped"] == 30
    manifest = json.loads((artifact / "MANIFEST.json").read_text())
    tfrecords = json.loads(next((root / "tfrecords").glob("*/MANIFEST.json")).read_text())
    assert manifest["records"]["test"] == tfrecords["records"]["test"] - 30
    assert manifest["records"]["train"] == tfrecords["records"]["train"]
    metrics = json.loads(next((root / "evaluate").glob("*/metrics.json")).read_text())
    assert metrics["examples"] == manifest["records"]["test"]  # evaluated on the checked test split
    assert "dropped 30 examples from test" in out.out


def test_a_label_conflict_and_a_blank_image_are_found(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    photos = write_digits(tmp_path / "photos", per_class=20)
    shutil.copy(photos / "digit1" / "scan003.png", photos / "digit2" / "also_a_two.png")
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(photos / "digit0" / "blank.png")
    root = tmp_path / "artifacts"
    assert run(root, photos, "--until", "datacheck") != 0  # a conflict fails by default
    err = capsys.readouterr().err
    assert "appear under two or more labels" in err and "digit1/scan003.png" in err and "also_a_two.png" in err
    code = run(root, photos, "--until", "datacheck", "--set", "DataCheck.on_conflict=warn", "--set",
               "DataCheck.on_leak=warn")
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert "constant or nearly blank" in captured.err and "digit0/blank.png" in captured.err
    assert "two or more labels" in captured.err
    report = json.loads(next((root / "datacheck").glob(f"*/{DATACHECK_FILE}")).read_text())
    assert report["findings"]["degenerate"]["count"] == 1
    assert report["findings"]["conflict"]["items"][0]["labels"] == ["digit1", "digit2"]


def test_a_class_removed_in_the_next_nightly_run_is_named_as_drift(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    photos = write_digits(tmp_path / "photos", per_class=20)
    root = tmp_path / "artifacts"
    assert run(root, photos, "--until", "datacheck") == 0
    assert run(root, photos, "--until", "datacheck") == 0  # unchanged: a no-op, and no drift
    assert "drift" not in capsys.readouterr().err
    shutil.rmtree(photos / "digit3")
    assert run(root, photos, "--until", "datacheck", "--set", "DataCheck.on_drift=fail") != 0
    assert "vanished classes digit3" in capsys.readouterr().err
    # A run the drift stopped is no baseline: the next one is still compared with the last good run.
    assert run(root, photos, "--until", "datacheck") == 0  # drift warns by default
    assert "vanished classes digit3" in capsys.readouterr().err
    with isolated_luigi_config(root):
        assert cli.main(["history", "images", "--artifacts", str(root), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [bool(r.get("drift", {}).get("warnings")) for r in runs] == [False, False, True, True]
    assert [r["exit_code"] != 0 for r in runs] == [False, False, True, False]
    assert any("vanished classes digit3" in w for w in runs[3]["data_warnings"])
    report = Path(runs[3]["drift"]["report"])
    assert report.is_file() and "Drift against the previous run" in report.read_text()


def test_the_data_report_is_written_with_its_pictures(tmp_path: Path) -> None:
    photos = write_digits(tmp_path / "photos", per_class=20)
    root = tmp_path / "artifacts"
    assert run(root, photos, "--until", "datacheck") == 0
    artifact = next((root / "datacheck").glob("DataCheck-*"))
    html = (artifact / DATA_REPORT_FILE).read_text()
    assert html.count("data:image/png;base64,") >= 2  # histogram and samples
