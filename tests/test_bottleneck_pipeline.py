"""Bottleneck features: the optional stage switched on by `--backbone`, its per-image cache, a head trained on
cached features, backbone + head frozen as one model, and one pipeline's freeze directory as another's
backbone. Backbones are tiny models built here (no pretrained weights can be downloaded on these machines)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines import cli
from tests.conftest import FIXTURES, REPO
from tests.fakes.images import write_class_folder

SIZE = ["--set", "DecodeImages.image_size=32"]
TINY_TRAIN = ["--set", "Train.epochs=3", "--set", "Train.batch_size=16"]


def stage_dirs(root: Path, stage: str) -> list[Path]:
    return sorted(p for p in (root / stage).glob("*-*") if not p.name.startswith("."))


def manifest_of(path: Path) -> dict:
    return json.loads((path / "MANIFEST.json").read_text())


def tiny_backbone(path: Path, seed: int = 0) -> Path:
    """A small trained-looking CNN saved as .keras: its feature is the input of its last Dense layer (8 wide)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(8, activation="relu", name="penultimate")(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="old_head")(x)
    keras.Model(inputs, outputs).save(path)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    write_class_folder(folder, {"disc": 30, "square": 30, "triangle": 30}, size=(48, 36), seed=3)
    return folder


def run_until(stage: str, photos: Path, root: Path, backbone: Path, *extra: str) -> int:
    return cli.main(["run", "images", "--source", str(photos), "--artifacts", str(root), "--backbone", str(backbone),
                     "--until", stage, *SIZE, *extra])


def test_features_equal_the_backbones_own_outputs(photos: Path, tmp_path: Path, luigi_config) -> None:
    import keras

    from tasks.data.shards import load_split_arrays

    backbone = tiny_backbone(tmp_path / "backbone.keras")
    root = tmp_path / "artifacts"
    assert run_until("bottleneck", photos, root, backbone) == 0
    [features_dir] = stage_dirs(root, "bottleneck")
    [shards] = stage_dirs(root, "tfrecords")
    model = keras.models.load_model(backbone)
    penultimate = keras.Model(model.input, model.get_layer("penultimate").output)
    for split in ("train", "validation", "test"):
        features = np.load(features_dir / f"{split}.features.npy")
        images, labels = load_split_arrays(shards, split)
        assert features.shape == (len(images), 8)
        np.testing.assert_allclose(features, penultimate.predict(images.astype(np.float32) / 255.0, verbose=0),
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.load(features_dir / f"{split}.labels.npy"), labels)
    manifest = manifest_of(features_dir)
    assert manifest["features_computed"] == 90 and manifest["features_reused"] == 0
    assert "backbone" in " ".join(manifest["upstream"])  # the backbone's digest is part of the key


def test_added_images_are_the_only_ones_computed_and_a_new_backbone_computes_all(
        photos: Path, tmp_path: Path, luigi_config, capsys) -> None:
    backbone = tiny_backbone(tmp_path / "backbone.keras")
    root = tmp_path / "artifacts"
    assert run_until("bottleneck", photos, root, backbone) == 0
    first = set(stage_dirs(root, "bottleneck"))
    write_class_folder(tmp_path / "more", {"disc": 5}, size=(48, 36), seed=11)
    for path in (tmp_path / "more" / "disc").iterdir():
        shutil.copy(path, photos / "disc" / f"new_{path.name}")
    capsys.readouterr()
    assert run_until("bottleneck", photos, root, backbone) == 0
    assert "features: 5 computed, 90 reused from the cache" in capsys.readouterr().out
    # The rerun's artifact is the new directory (finished_at has whole seconds: both runs can share one).
    [newest] = set(stage_dirs(root, "bottleneck")) - first
    assert manifest_of(newest)["features_computed"] == 5
    tiny_backbone(backbone, seed=1)  # same name, other weights: another digest, another cache namespace
    assert run_until("bottleneck", photos, root, backbone) == 0
    assert len(stage_dirs(root, "bottleneck")) == 3
    assert max(manifest_of(d)["features_computed"] for d in stage_dirs(root, "bottleneck")) == 95


def test_two_processes_extracting_into_one_cache_leave_valid_entries(photos: Path, tmp_path: Path) -> None:
    from tasks.features.cache import FeatureCache, cache_root

    backbone = tiny_backbone(tmp_path / "backbone.keras")
    root = tmp_path / "artifacts"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "pipelines.cli", "run", "images", "--source", str(photos), "--artifacts",
               str(root), "--backbone", str(backbone), "--until", "bottleneck", *SIZE]
    first = subprocess.run([*command[:-2], "--until", "tfrecords", *SIZE], env=env, cwd=REPO, capture_output=True,
                           text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    racers = [subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    results = [racer.communicate(timeout=600) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], [err[-2000:] for _, err in results]
    [features_dir] = stage_dirs(root, "bottleneck")
    namespaces = list(cache_root(root).iterdir())
    assert namespaces and not list(cache_root(root).rglob(".*.tmp"))
    for directory in namespaces:
        cache = FeatureCache(directory)
        for pack in cache.packs():  # every complete pack loads, and agrees with the artifact
            keys = np.load(directory / f"{pack}.keys.npy")
            rows = np.load(directory / f"{pack}.features.npy")
            assert len(keys) == len(rows) and np.isfinite(rows).all()
    found, cached = FeatureCache(namespaces[0]).lookup(np.load(features_dir / "test.keys.npy"))
    assert found.all()
    np.testing.assert_allclose(cached, np.load(features_dir / "test.features.npy"), rtol=1e-6)


def test_head_on_features_freezes_with_the_backbone_and_predicts(photos: Path, tmp_path: Path, luigi_config,
                                                                 capsys) -> None:
    backbone = tiny_backbone(tmp_path / "backbone.keras")
    root = tmp_path / "artifacts"
    assert run_until("freeze", photos, root, backbone, *TINY_TRAIN, "--set", "Bottleneck.feature_views=2") == 0
    [features_dir] = stage_dirs(root, "bottleneck")
    assert (features_dir / "train.view2.features.npy").is_file()
    [trained] = stage_dirs(root, "train")
    assert (trained / "head.keras").is_file() and manifest_of(trained)["upstream"].keys() >= {"features", "examples"}
    [frozen] = stage_dirs(root, "freeze")
    frozen_manifest = manifest_of(frozen)
    assert frozen_manifest["max_abs_diff"] <= 1e-5 and frozen_manifest["verified_images"] > 0
    jpegs = sorted((FIXTURES / "imagefolder_hf_beans_dummy" / "train").glob("*/*.jpg")) or sorted(
        (photos / "disc").glob("*.jpg"))[:3]
    capsys.readouterr()
    assert cli.main(["predict", str(frozen), *map(str, jpegs)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(jpegs) and all(any(c in line for c in ("disc", "square", "triangle")) for line in lines)


@pytest.mark.slow  # two whole pipelines (~18 s). In the default suite: a freeze directory as a backbone, with a head,
# saved and exported (tests/models/test_backbones.py::test_backbone_with_a_head_saves_loads_and_exports[freeze-*],
# test_freeze_directory_features_use_its_image_shape), and this pipeline end to end with a backbone (head_on_features)
def test_a_freeze_directory_is_another_pipelines_backbone(photos: Path, tmp_path: Path, luigi_config) -> None:
    first_root = tmp_path / "first"
    assert cli.main(["run", "images", "--source", str(photos), "--artifacts", str(first_root), *SIZE, *TINY_TRAIN,
                     "--set", "Train.model=small_cnn"]) == 0
    [donor] = stage_dirs(first_root, "freeze")
    other = tmp_path / "other"
    write_class_folder(other, {"a": 20, "b": 20}, size=(40, 40), seed=8)
    root = tmp_path / "second"
    assert cli.main(["run", "images", "--source", str(other), "--artifacts", str(root), "--backbone", str(donor),
                     *SIZE, *TINY_TRAIN]) == 0
    [features_dir] = stage_dirs(root, "bottleneck")
    width = json.loads((features_dir / "features.json").read_text())["feature_dim"]
    assert width == np.load(features_dir / "train.features.npy").shape[1] > 0
    metrics = json.loads((stage_dirs(root, "evaluate")[0] / "metrics.json").read_text())
    assert metrics["examples"] > 0
    assert manifest_of(stage_dirs(root, "freeze")[0])["max_abs_diff"] <= 1e-5


@pytest.mark.slow  # the pipeline again with another backbone kind. In the default suite: a graph backbone with a
# head, saved and exported (tests/models/test_backbones.py::test_backbone_with_a_head_saves_loads_and_exports[graph-*],
# test_graph_features_are_the_graphs_own_on_the_same_jpeg_bytes), and this pipeline end to end (head_on_features)
def test_the_seeds_frozen_graph_form_end_to_end(photos: Path, tmp_path: Path, luigi_config) -> None:
    """A .pb with the 2015 Inception-v3 tensor names (DecodeJpeg/contents:0 -> pool_3/_reshape:0) and legacy
    BatchNormWithGlobalNormalization nodes: features, head, one frozen model."""
    from tests.fakes.backbones import inception_like_graph_def, write_graph

    graph = write_graph(tmp_path / "classify_image_graph_def.pb", inception_like_graph_def(width=16))
    root = tmp_path / "artifacts"
    assert run_until("freeze", photos, root, graph, *TINY_TRAIN) == 0
    [features_dir] = stage_dirs(root, "bottleneck")
    assert np.load(features_dir / "train.features.npy").shape[1] == 16
    assert manifest_of(stage_dirs(root, "freeze")[0])["max_abs_diff"] <= 1e-5


@pytest.mark.slow  # the stage again with another backbone kind. In the default suite: a Keras application's
# features (tests/models/test_backbones.py::test_keras_application_features_are_the_applications_own), with a
# weights file and a head, exported (test_backbone_with_a_head_saves_loads_and_exports[keras-*])
def test_a_keras_application_with_a_weights_file(photos: Path, tmp_path: Path, luigi_config) -> None:
    from tests.fakes.backbones import save_application_weights

    weights = save_application_weights(tmp_path / "mobilenet.weights.h5", "MobileNetV3Small")
    root = tmp_path / "artifacts"
    assert run_until("bottleneck", photos, root, Path("keras:MobileNetV3Small"),
                     "--set", f"Bottleneck.backbone_weights={weights}") == 0
    [features_dir] = stage_dirs(root, "bottleneck")
    assert np.load(features_dir / "test.features.npy").shape[1] == 576


def test_fine_tuning_unfreezes_the_top_layers_after_the_head(photos: Path, tmp_path: Path, luigi_config) -> None:
    import csv

    import keras

    backbone = tiny_backbone(tmp_path / "backbone.keras")
    root = tmp_path / "artifacts"
    assert run_until("train", photos, root, backbone, "--set", "Train.epochs=2", "--set", "Train.batch_size=16",
                     "--set", "Train.fine_tune_layers=2", "--set", "Train.fine_tune_epochs=2",
                     "--set", "Train.patience=10") == 0
    [trained] = stage_dirs(root, "train")
    with open(trained / "history.csv", newline="") as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == [0, 1, 2, 3]  # head, then fine-tuning
    tuned = keras.models.load_model(trained / "model.keras")
    original = keras.models.load_model(backbone)
    conv = original.get_layer("conv").get_weights()[0]
    tuned_conv = next(w for w in tuned.weights if w.shape == conv.shape).numpy()
    assert not np.allclose(tuned_conv, conv)  # the backbone moved: it was trained end to end


@pytest.mark.slow  # four processes (~13 s). In the default suite: a pack a kill cut short does not count
# (tests/features/test_feature_cache.py::test_a_pack_without_its_keys_file_does_not_count), two extractions into
# one cache leave valid entries (test_two_processes_extracting_into_one_cache_leave_valid_entries), and a killed
# stage's rerun equals an uninterrupted one (tests/reliability/test_faults.py)
def test_kill_9_during_extraction_then_a_rerun_gives_the_same_features(tmp_path: Path) -> None:
    import signal
    import time

    folder = tmp_path / "many"
    write_class_folder(folder, {"a": 300, "b": 300}, size=(40, 30), seed=6)
    backbone = tiny_backbone(tmp_path / "backbone.keras")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}

    def command(root: Path) -> list[str]:
        return [sys.executable, "-m", "pipelines.cli", "run", "images", "--source", str(folder), "--artifacts",
                str(root), "--backbone", str(backbone), "--until", "bottleneck", *SIZE,
                "--set", "Bottleneck.batch_size=8"]

    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert subprocess.run(command(clean), env=env, cwd=REPO, capture_output=True, timeout=600).returncode == 0
    prepared = [*command(killed)[:-6], "--until", "tfrecords", *SIZE]
    assert subprocess.run(prepared, env=env, cwd=REPO, capture_output=True, timeout=600).returncode == 0
    process = subprocess.Popen(command(killed), env=env, cwd=REPO, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and not list((killed / "bottleneck").glob(".tmp-*")):
        time.sleep(0.01)
    time.sleep(0.3)  # inside the build: loading the backbone or extracting
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert stage_dirs(killed, "bottleneck") == []  # nothing counts as done
    assert subprocess.run(command(killed), env=env, cwd=REPO, capture_output=True, timeout=600).returncode == 0
    [a], [b] = stage_dirs(clean, "bottleneck"), stage_dirs(killed, "bottleneck")
    assert a.name == b.name
    for split in ("train", "validation", "test"):
        np.testing.assert_allclose(np.load(b / f"{split}.features.npy"), np.load(a / f"{split}.features.npy"),
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(np.load(b / f"{split}.keys.npy"), np.load(a / f"{split}.keys.npy"))


def rescaling_backbone(path: Path) -> Path:
    """keras-io's convention: a model beginning with ``Rescaling(1/255)``, i.e. taking 0-255 pixels."""
    import keras

    from tests.fakes.backbones import preprocessing_classifier

    preprocessing_classifier(keras.layers.Rescaling(1 / 255), (32, 32, 3)).save(path)
    return path


@pytest.mark.slow  # the pipeline again with a 15-epoch head. In the default suite: the range detected and fed, the
# composed model keeping it (tests/models/test_input_range.py::
# test_the_backbone_feeds_the_detected_range_and_the_composed_model_keeps_it), this backbone's features fed 0-255
# by the stage (test_the_same_backbone_fed_0_1_fails_on_constant_features), the pipeline end to end (head_on_features)
def test_a_backbone_that_rescales_its_own_pixels_is_fed_0_255_and_its_head_learns(
        photos: Path, tmp_path: Path, luigi_config) -> None:
    from tasks.features.extract import MIN_FEATURE_SPREAD, feature_spread

    backbone = rescaling_backbone(tmp_path / "rescaling.keras")
    root = tmp_path / "artifacts"
    assert run_until("freeze", photos, root, backbone, "--set", "Train.epochs=15", "--set", "Train.batch_size=16",
                     "--set", "Train.learning_rate=0.03", "--set", "Train.patience=15") == 0
    [features_dir] = stage_dirs(root, "bottleneck")
    assert feature_spread(np.load(features_dir / "train.features.npy")) > 100 * MIN_FEATURE_SPREAD
    description = json.loads((features_dir / "features.json").read_text())
    assert description["input_range"] == "0-255" and "Rescaling" in description["input_range_reason"]
    assert manifest_of(features_dir)["input_range"] == "0-255"
    # Evaluate and freeze run the composed model on [0, 1] images: it scales them inside, as the features saw.
    metrics = json.loads((stage_dirs(root, "evaluate")[0] / "metrics.json").read_text())
    assert metrics["top1_accuracy"] > 0.6, metrics  # three classes: chance is 1/3
    assert manifest_of(stage_dirs(root, "freeze")[0])["max_abs_diff"] <= 1e-5


def test_the_same_backbone_fed_0_1_fails_on_constant_features(photos: Path, tmp_path: Path, luigi_config,
                                                               capsys) -> None:
    backbone = rescaling_backbone(tmp_path / "rescaling.keras")
    root = tmp_path / "artifacts"
    capsys.readouterr()
    assert run_until("bottleneck", photos, root, backbone, "--set", "Bottleneck.input_range=0-1") != 0
    output = capsys.readouterr()
    assert re.search(rf"features of {re.escape(str(backbone))} are nearly constant across \d+ images "
                     r"\(spread \de[+-]\d\d < 1e-03\): the backbone likely expects another input range than the 0-1 it "
                     r"was fed; set Bottleneck\.input_range=0-1\|0-255\|-1-1", output.out + output.err)
    assert stage_dirs(root, "bottleneck") == []  # no artifact, not even a partial one
    # The constant features are cached where tfpipe always cached [0, 1]-fed ones; fed 0-255 (auto), the same
    # backbone keys its features apart and reuses none of them. (--set stays in this process's Luigi config.)
    assert run_until("bottleneck", photos, root, backbone, "--set", "Bottleneck.input_range=auto") == 0
    [features_dir] = stage_dirs(root, "bottleneck")
    assert manifest_of(features_dir)["features_computed"] == 90 and manifest_of(features_dir)["features_reused"] == 0


def test_a_bad_input_range_is_refused_with_one_line(photos: Path, tmp_path: Path, luigi_config, capsys) -> None:
    backbone = rescaling_backbone(tmp_path / "rescaling.keras")
    assert run_until("bottleneck", photos, tmp_path / "artifacts", backbone,
                     "--set", "Bottleneck.input_range=0-100") == 2
    error = capsys.readouterr().err.strip()
    assert error == ("tfpipe: error: --set Bottleneck.input_range=0-100: not a valid value for Bottleneck.input_range: "
                     "input range must be one of auto, 0-1, 0-255, -1-1 (the pixel range the backbone takes), "
                     "got '0-100'")
