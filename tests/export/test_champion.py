"""Champion/challenger at publish with real models (tasks/export/champion.py, publish_task.py): tiny Keras models
whose predictions are known by construction, exported as real freeze artifacts, published by the real Publish
task on a local root and on a bucket root. No pipeline runs (tests/test_publish.py has the end-to-end case).

The images are 8x8 grey squares of one level (plus a one-pixel nudge that makes each image unique); a "band
model" averages the pixels and cuts the line [0, 1] at its thresholds, one class per band (a softmax over
linear functions of the mean). The test split (classes black, grey, silver, white, snow):

    black  6 at level  26 (0.10) + 2 at 77 (0.30)     silver 8 at 160 (0.63) + 3 at 185 (0.73)
    grey   8 at 96 (0.38)                             white  8 at 230 (0.90)      snow 3 at 250 (0.98)

The champion (no snow class) cuts at 0.25/0.5/0.75: it gets the two black 0.30s wrong (grey). Two of the
silver 160s are in its train split, so they are left out; the snows are a class it does not know. The worse
challenger (0.32/0.35/0.95/0.97) gets every grey and every white wrong: b = 16, c = 2. The noisy one
(0.32/0.5/0.70/0.97) gets the three silver 185s wrong: b = 3, c = 2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi
import numpy as np
import pytest

from tasks.modelcard.schema import validate_model_card
from tasks.store.task import ArtifactTask

NAMES = ["black", "grey", "silver", "white", "snow"]
SIDE = 8
TEST_LEVELS = {"black": [26] * 6 + [77] * 2, "grey": [96] * 8, "silver": [160] * 8 + [185] * 3,
               "white": [230] * 8, "snow": [250] * 3}
TRAIN_LEVELS = {"black": [20, 40], "grey": [110, 120], "silver": [150, 170], "white": [220, 240], "snow": [252]}
CHAMPION = (0.25, 0.5, 0.75)
WORSE = (0.32, 0.35, 0.95, 0.97)
NOISY = (0.32, 0.5, 0.70, 0.97)
LEAKED = 2  # silver test images (level 160) also in the champion's train split


class Given(ArtifactTask):
    """A prepared folder as an artifact: what Publish reads under a role."""

    stage = "given"
    folder = luigi.Parameter()

    def build(self, out_dir: Path) -> None:
        shutil.copytree(self.folder, out_dir, dirs_exist_ok=True)


# ---- data and models ----------------------------------------------------------------------------------------
def square(level: int, nudge: int) -> np.ndarray:
    image = np.full((SIDE, SIDE, 1), level, dtype=np.uint8)
    image[0, 0, 0] = level + nudge  # unique pixels (content key); the mean moves by < 0.001
    return image


def split_of(levels: dict[str, list[int]], names: list[str], prefix: str) -> list[tuple[str, np.ndarray, int]]:
    """(key, image, label) for every level, nudged by its place among equal levels of the class."""
    rows = []
    for name, values in levels.items():
        for nudge, level in enumerate(values):
            rows.append((f"{prefix}/{name}/{nudge}", square(level, nudge), names.index(name)))
    return rows


def write_examples(folder: Path, splits: dict[str, list[tuple[str, np.ndarray, int]]], names: list[str]) -> Path:
    """An examples artifact's files (TFRecord shards, labels, tfpipe's description) as the TFRecords stage writes."""
    from tasks.data.shards import ShardSpec, save_dataset_info, write_split_shards
    from tasks.formats.dataset_info import DatasetInfo, SplitInfo
    from tasks.formats.examples import encode_keys, pixel_digests
    from tasks.formats.files import LABELS_FILE
    from tasks.formats.tfrecord import write_labels_txt

    folder.mkdir(parents=True)
    infos = {}
    for split, rows in splits.items():
        images = np.stack([image for _, image, _ in rows])
        labels = np.array([label for _, _, label in rows], dtype=np.int64)
        files = write_split_shards(folder, split, images, labels, encode_keys([key for key, _, _ in rows]),
                                   pixel_digests(images), np.arange(len(rows)), ShardSpec("bands", num_shards=1))
        infos[split] = SplitInfo(len(rows), tuple(files))
    save_dataset_info(folder, DatasetInfo("bands", (SIDE, SIDE, 1), len(names), splits=infos))
    write_labels_txt(folder / LABELS_FILE, names)
    return folder


def band_model(thresholds: tuple[float, ...]) -> Any:
    """Classes by band of the mean pixel: class k wins on [t_k, t_k+1) (scores 100 (k m - t_1 - ... - t_k))."""
    import keras

    inputs = keras.Input((SIDE, SIDE, 1))
    dense = keras.layers.Dense(len(thresholds) + 1, activation="softmax")
    outputs = dense(keras.layers.GlobalAveragePooling2D()(inputs))
    model = keras.Model(inputs, outputs)
    kernel = 100.0 * np.arange(len(thresholds) + 1, dtype=np.float32)[None, :]
    bias = -100.0 * np.concatenate([[0.0], np.cumsum(thresholds)]).astype(np.float32)
    dense.set_weights([kernel, bias])
    return model


def freeze(folder: Path, thresholds: tuple[float, ...]) -> Path:
    """A freeze artifact's files (SavedModel, frozen graph, labels) of a band model."""
    from tasks.export.freeze import export_serving_model

    names = NAMES[:len(thresholds) + 1]
    export_serving_model(band_model(thresholds), folder, image_shape=(SIDE, SIDE, 1), class_names=names)
    return folder


def evaluation(folder: Path, value: float) -> Path:
    from tasks.evaluation.files import METRICS_FILE

    folder.mkdir(parents=True)
    (folder / METRICS_FILE).write_text(json.dumps({"top1_accuracy": value, "split": "test",
                                                   "health": {"learned": True, "warnings": []}}))
    return folder


def keys_of(rows: list[tuple[str, np.ndarray, int]], name: str, levels: set[int]) -> set[str]:
    return {key for key, image, label in rows if NAMES[label] == name and int(image[1, 1, 0]) in levels}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The champion's examples (its train split holds two of the challenger's test images), the challenger's, and
    the three freeze artifacts."""
    base = tmp_path_factory.mktemp("bands")
    test = split_of(TEST_LEVELS, NAMES, "test")
    leaked = [row for row in test if NAMES[row[2]] == "silver"][:LEAKED]
    champion_train = split_of({k: v for k, v in TRAIN_LEVELS.items() if k != "snow"}, NAMES[:4], "old") + leaked
    return {
        "test": test, "leaked": {key for key, _, _ in leaked},
        "champion_train": champion_train, "train": split_of(TRAIN_LEVELS, NAMES, "train"),
        "champion_examples": write_examples(base / "champion-examples", {
            "train": champion_train, "test": split_of({"grey": [90, 100]}, NAMES[:4], "old-test")}, NAMES[:4]),
        "examples": write_examples(base / "examples", {"train": split_of(TRAIN_LEVELS, NAMES, "train"),
                                                       "test": test}, NAMES),
        "champion": freeze(base / "champion", CHAMPION),
        "worse": freeze(base / "worse", WORSE),
        "noisy": freeze(base / "noisy", NOISY),
        "evaluation": evaluation(base / "evaluation", 0.9),
    }


def publish(made: dict[str, Any], model: str, examples: str, **params: Any) -> dict[str, Any]:
    """Run the Publish stage of ``model`` read with ``examples`` on the configured root; its publish.json."""
    from tasks.export.publish_task import Publish

    task = Publish(upstream={"frozen": Given(folder=str(made[model])), "examples": Given(folder=str(made[examples])),
                             "evaluation": Given(folder=str(made["evaluation"]))}, dataset="bands", **params)
    for upstream in task.requires().values():
        if not upstream.complete():
            upstream.run()
    task.run()
    assert task.complete()
    return {**json.loads((task.artifact_dir / "publish.json").read_text()), "artifact": task.artifact_dir,
            "manifest": task.output().manifest()}


def digests(rows: list[tuple[str, np.ndarray, int]]) -> list[str]:
    import hashlib

    return sorted({hashlib.sha256(image.tobytes()).hexdigest() for _, image, _ in rows})


# ---- a local root -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def worse_refused(made: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The champion published as version 1 on a local root, then the worse challenger refused."""
    from tests.conftest import isolated_luigi_config

    root = tmp_path_factory.mktemp("local") / "artifacts"
    with isolated_luigi_config(root):
        first = publish(made, "champion", "champion_examples")
        second = publish(made, "worse", "examples")
        yield {"root": root, "first": first, "second": second}


def test_the_first_version_lists_the_train_split_it_learnt_from(worse_refused: dict[str, Any],
                                                                made: dict[str, Any]) -> None:
    first, version = worse_refused["first"], worse_refused["root"] / "published" / "bands" / "1"
    assert first["published"] is True and first["comparison"] is None
    assert (version / "trained_on_sha256.txt").read_text().split() == digests(made["champion_train"])
    assert (first["artifact"] / "publish_report.html").is_file()
    assert not (first["artifact"] / "flipped_examples.png").exists(), "nothing to compare: no flipped grid"


def test_a_challenger_worse_on_two_classes_is_refused_with_its_comparison(worse_refused: dict[str, Any],
                                                                          made: dict[str, Any]) -> None:
    second = worse_refused["second"]
    assert second["published"] is False and second["current_version"] == 1
    assert second["reason"] == ("significantly worse than version 1 on the same 33 test examples: top1_accuracy "
                                "0.5152 vs 0.9394, McNemar b=16 c=2 p=0.00131 < 0.05")
    comparison = second["comparison"]
    assert comparison["left_out"] == {"trained_on": LEAKED, "unknown_class": 3} and comparison["trained_on_known"]
    assert comparison["examples"] == 33 and comparison["split"] == "test"
    assert comparison["champion"] == pytest.approx(31 / 33) and comparison["challenger"] == pytest.approx(17 / 33)
    assert comparison["mcnemar"] == {"b": 16, "c": 2, "p_value": pytest.approx(2 * (1 + 18 + 153) / 2**18)}
    deltas = {row["class"]: (row["count"], row["champion_recall"], row["challenger_recall"], row["delta"])
              for row in comparison["per_class"]}
    assert deltas == {"black": (8, 0.75, 1.0, 0.25), "grey": (8, 1.0, 0.0, -1.0), "silver": (9, 1.0, 1.0, 0.0),
                      "white": (8, 1.0, 0.0, -1.0)}
    worse = comparison["flipped"]["right_to_wrong"]
    assert worse["count"] == 16
    assert {row["key"] for row in worse["examples"]} == keys_of(made["test"], "grey", {96}) | keys_of(
        made["test"], "white", {230})
    assert all(row["champion"] == row["label"] and row["challenger"] == "silver" for row in worse["examples"])
    better = comparison["flipped"]["wrong_to_right"]
    assert {row["key"] for row in better["examples"]} == keys_of(made["test"], "black", {77})
    assert all((row["label"], row["champion"], row["challenger"]) == ("black", "grey", "black")
               for row in better["examples"])
    assert not made["leaked"] & {row["key"] for row in worse["examples"] + better["examples"]}
    manifest = second["manifest"]
    assert manifest["published"] is False and manifest["comparison"]["mcnemar"]["b"] == 16
    assert manifest["report_html"] == "publish_report.html"
    assert os.readlink(worse_refused["root"] / "published" / "bands" / "current") == "1"
    assert not (worse_refused["root"] / "published" / "bands" / "2").exists()


def test_the_report_renders_in_chromium(worse_refused: dict[str, Any], tmp_path: Path) -> None:
    artifact = worse_refused["second"]["artifact"]
    report = (artifact / "publish_report.html").read_text()
    assert "Not published: significantly worse than version 1" in report and "data:image/png;base64," in report
    for text in ("b: champion right, new model wrong", "0.00131", ">grey<", "-1.0000", "+0.2500"):
        assert text in report, text
    from tasks.runtime.figures import plt

    grid = plt.imread(artifact / "flipped_examples.png")
    assert grid.shape[0] > 300 and grid.std() > 0.05, "a grid of pictures, not a blank"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium (apt-get install -y chromium)")
    shot = tmp_path / "publish_report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,2200", (artifact / "publish_report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    picture = plt.imread(shot)
    assert picture.shape[:2] == (2200, 1200) and picture.std() > 0.05
    if os.environ.get("TFPIPE_KEEP_SCREENSHOTS"):  # to look at it: the folder to copy it to
        shutil.copy(shot, Path(os.environ["TFPIPE_KEEP_SCREENSHOTS"]) / shot.name)


def test_a_challenger_equal_within_noise_is_published_unless_a_tolerance_refuses_its_drop(
        made: dict[str, Any], tmp_path: Path) -> None:
    from tests.conftest import isolated_luigi_config

    with isolated_luigi_config(tmp_path / "artifacts"):
        publish(made, "champion", "champion_examples")
        strict = publish(made, "noisy", "examples", tolerance=0.01)
        assert strict["published"] is False
        assert strict["reason"] == ("top1_accuracy 0.9091 is 0.0303 below version 1's 0.9394 on the same 33 test "
                                    "examples (tolerance 0.01; McNemar p=1)")
        noisy = publish(made, "noisy", "examples")
    assert noisy["published"] is True and noisy["published_version"] == 2
    comparison = noisy["comparison"]
    assert comparison["mcnemar"] == {"b": 3, "c": 2, "p_value": 1.0}, "McNemar finds no difference"
    assert {row["key"] for row in comparison["flipped"]["right_to_wrong"]["examples"]} == keys_of(
        made["test"], "silver", {185})
    assert [row["delta"] for row in comparison["per_class"] if row["class"] == "silver"] == [pytest.approx(-3 / 9)]
    assert noisy["manifest"]["notices"] == ["published bands version 2 (top1_accuracy 0.9000; on the same 33 test "
                                            "examples 0.9091 vs version 1's 0.9394, McNemar p=1)"]
    versions = tmp_path / "artifacts" / "published" / "bands"
    assert os.readlink(versions / "current") == "2"
    assert (versions / "2" / "trained_on_sha256.txt").read_text().split() == digests(made["train"])
    assert (noisy["artifact"] / "flipped_examples.png").is_file()
    card = json.loads((versions / "2" / "model_card.json").read_text())
    validate_model_card(card)
    assert card["model_details"]["version"]["name"] == "2"
    assert "compared with version 1" in json.dumps(card["considerations"]).lower() and "b=3" in json.dumps(card)
    assert (versions / "2" / "model_card.html").is_file()


def test_a_champion_published_without_its_train_list_leaves_nothing_out_for_it(made: dict[str, Any],
                                                                             tmp_path: Path) -> None:
    from tests.conftest import isolated_luigi_config

    with isolated_luigi_config(tmp_path / "artifacts"):
        publish(made, "champion", "champion_examples")
        (tmp_path / "artifacts" / "published" / "bands" / "1" / "trained_on_sha256.txt").unlink()  # an older version
        worse = publish(made, "worse", "examples")
    comparison = worse["comparison"]
    assert comparison["trained_on_known"] is False and comparison["left_out"] == {"trained_on": 0, "unknown_class": 3}
    assert comparison["examples"] == 33 + LEAKED and worse["published"] is False


def test_bad_gate_settings_are_one_line_errors(made: dict[str, Any], tmp_path: Path) -> None:
    from tasks.export.publish_task import Publish
    from tests.conftest import isolated_luigi_config

    with isolated_luigi_config(tmp_path / "artifacts"):
        for params, message in (({"significance": 1.5}, "Publish.significance must be between 0 and 1, got 1.5"),
                                ({"tolerance": -0.1}, "Publish.tolerance must be >= 0 (or unset), got -0.1")):
            with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
                Publish(upstream={}, dataset="bands", **params).check_policy()


# ---- a bucket root --------------------------------------------------------------------------------------------
def test_on_a_bucket_the_champion_is_fetched_into_the_cache_and_compared(made: dict[str, Any],
                                                                         bucket_env: Any) -> None:
    from tasks.store.bucket import Bucket
    from tasks.store.opened import forget_opened
    from tasks.store.roots import default_cache_dir, parse_root
    from tests.conftest import isolated_luigi_config

    root = f"s3://{bucket_env.bucket}/p"
    with isolated_luigi_config(Path("unused")) as config:
        config.set("ArtifactStore", "root", root)
        forget_opened()
        first = publish(made, "champion", "champion_examples")
        worse = publish(made, "worse", "examples")
        noisy = publish(made, "noisy", "examples")
    assert first["published_version"] == 1 and worse["published"] is False and noisy["published_version"] == 2
    assert worse["comparison"]["left_out"] == {"trained_on": LEAKED, "unknown_class": 3}, \
        "the champion's train list came with it"
    assert worse["comparison"]["mcnemar"]["b"] == 16 and noisy["comparison"]["mcnemar"] == {"b": 3, "c": 2,
                                                                                           "p_value": 1.0}
    mirror = parse_root(root).mirror(default_cache_dir())
    assert (mirror / "published" / "bands" / "1" / "trained_on_sha256.txt").is_file(), "fetched into the cache"
    bucket = Bucket(parse_root(root))
    record = json.loads(bucket.read("published/bands/2/publish.json") or b"")
    assert {"trained_on_sha256.txt", "model_card.json", "model_card.html"} <= set(record["files"])
    card = json.loads(bucket.read("published/bands/2/model_card.json") or b"")
    assert card["model_details"]["version"]["name"] == "2" and "compared with version 1" in json.dumps(card).lower()
    assert (bucket.read("published/bands/2/trained_on_sha256.txt") or b"").decode().split() == digests(made["train"])
    assert json.loads(bucket.read("published/bands/current") or b"") == {"version": 2}
