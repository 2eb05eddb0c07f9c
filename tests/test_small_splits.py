"""Nothing fails silently (README, "Models worth trusting"), through the real CLI: splits smaller than a batch
train and evaluate over two mirrored replicas; an empty split is refused before training, in one line naming
it, its size and the fix; a task failing with an error that has no message still says what and where."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from pipelines import cli
from tests.fakes.idx import write_fake_mnist

# 419 training images: ImageDirs (validation_fraction 0.1) sends 40 to validation and 379 to train.
N_TRAIN, N_VALIDATION, N_TEST = 419, 40, 41
MIRRORED = ["--set", "Train.model=mlp", "--set", "Train.strategy=mirrored", "--set", "Train.cpu_devices=2",
            "--set", "Train.epochs=2"]


@pytest.fixture(scope="module")
def prebuilt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a Fashion-MNIST-format source, an artifact root with its stages up to TFRecords built)."""
    from tests.conftest import isolated_luigi_config

    base = tmp_path_factory.mktemp("small_splits")
    write_fake_mnist(base / "src", n_train=N_TRAIN, n_test=N_TEST, gzip=False, fashion=True, seed=5)
    with isolated_luigi_config(base / "artifacts"):
        assert cli.main(["run", "fashion_mnist", "--source", str(base / "src"), "--until", "tfrecords",
                         "--artifacts", str(base / "artifacts")]) == 0
    return base / "src", base / "artifacts"


def only(root: Path, stage: str) -> Path:
    [path] = sorted(p for p in (root / stage).glob("*-*") if not p.name.startswith("."))
    return path


def manifest(directory: Path) -> dict:
    return json.loads((directory / "MANIFEST.json").read_text())


def history(directory: Path) -> list[dict[str, str]]:
    with open(directory / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def split_counts(root: Path) -> dict[str, int]:
    info = json.loads((only(root, "tfrecords") / "tfpipe_info.json").read_text())
    return {split: int(value["count"]) for split, value in info["splits"].items()}


@pytest.mark.slow  # Train and Evaluate through the CLI over two replicas. In the default suite: fit over two
# replicas with splits smaller than a batch and than the replicas (test_mirrored_fit_and_head_take_splits_...
# below, tests/training/test_custom_loop.py::test_splits_smaller_than_a_batch_train_and_validate), and one
# distributed strategy end to end (tests/test_distributed.py, multi_worker)
def test_mirrored_trains_and_evaluates_a_validation_split_smaller_than_the_batch(prebuilt, luigi_config,
                                                                                 tmp_path: Path) -> None:
    source, prebuilt_root = prebuilt
    assert split_counts(prebuilt_root) == {"train": N_TRAIN - N_VALIDATION, "validation": N_VALIDATION,
                                           "test": N_TEST}
    root = tmp_path / "artifacts"
    shutil.copytree(prebuilt_root, root)
    assert cli.main(["run", "fashion_mnist", "--source", str(source), "--artifacts", str(root), *MIRRORED,
                     "--set", "Train.batch_size=64", "--until", "evaluate"]) == 0
    trained = only(root, "train")
    assert manifest(trained)["num_replicas_in_sync"] == 2
    assert manifest(trained)["steps"] == 2 * ((N_TRAIN - N_VALIDATION) // 64)  # whole batches, 5 an epoch
    rows = history(trained)
    assert len(rows) == 2 and all(math.isfinite(float(row["val_loss"])) for row in rows)
    # Every one of the 40 validation images counted: the accuracy is a multiple of 1/40.
    assert all(float(row["val_accuracy"]) * N_VALIDATION == pytest.approx(round(float(row["val_accuracy"])
                                                                                 * N_VALIDATION)) for row in rows)
    metrics = json.loads((only(root, "evaluate") / "metrics.json").read_text())
    assert metrics["examples"] == N_TEST


@pytest.mark.slow  # Train through the CLI again; a training split smaller than a mirrored batch stays in the default
# suite through fit itself: test_mirrored_fit_and_head_take_splits_smaller_than_a_batch_and_than_the_replicas below
def test_mirrored_trains_a_training_split_smaller_than_the_batch(prebuilt, luigi_config, tmp_path: Path) -> None:
    source, prebuilt_root = prebuilt
    root = tmp_path / "artifacts"
    shutil.copytree(prebuilt_root, root)
    assert cli.main(["run", "fashion_mnist", "--source", str(source), "--artifacts", str(root), *MIRRORED,
                     "--set", "Train.batch_size=512", "--until", "train"]) == 0
    trained = only(root, "train")
    assert manifest(trained)["steps"] == 2  # one batch of the 378 images an epoch (379 rounded to the replicas)
    assert len(history(trained)) == 2


def test_an_empty_validation_split_is_refused_before_training_in_one_line(tmp_path: Path, luigi_config,
                                                                          capsys: pytest.CaptureFixture) -> None:
    write_fake_mnist(tmp_path / "src", n_train=12, n_test=6, gzip=False, fashion=True, seed=1)
    root = tmp_path / "artifacts"
    code = cli.main(["run", "fashion_mnist", "--source", str(tmp_path / "src"), "--artifacts", str(root),
                     "--set", "ImageDirs.validation_fraction=0.001", "--set", "Train.model=mlp",
                     "--until", "train"])
    assert code == 30  # [retcode] task_failed
    assert split_counts(root)["validation"] == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("tfpipe: ")]
    assert lines == ["tfpipe: Train failed: validation split is empty (0 of 12 images went to it): add images or "
                     "raise ImageDirs.validation_fraction"], err
    assert "Traceback" not in err
    assert not list((root / "train").glob("Train-*"))


def stop_without_a_message(self: object, out_dir: Path) -> dict:
    raise StopIteration


def test_a_task_failing_without_a_message_says_which_error_and_where(tmp_path: Path, luigi_config,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    from tasks.datasets.mnist.task import DecodeMnist

    write_fake_mnist(tmp_path / "src", n_train=12, n_test=6, gzip=False, fashion=True, seed=1)
    monkeypatch.setattr(DecodeMnist, "build", stop_without_a_message)
    code = cli.main(["run", "fashion_mnist", "--source", str(tmp_path / "src"), "--artifacts",
                     str(tmp_path / "artifacts"), "--until", "decode"])
    assert code == 30
    line = stop_without_a_message.__code__.co_firstlineno + 1
    lines = [text for text in capsys.readouterr().err.splitlines() if text.startswith("tfpipe: ")]
    assert lines == [f"tfpipe: DecodeMnist failed: StopIteration with no message, raised at "
                     f"tests/test_small_splits.py:{line} in stop_without_a_message"]


def mirrored_config(**changes: object) -> object:
    from tasks.training.fit import TrainConfig
    from tests.data.test_input_pipeline import SHAPE

    return TrainConfig(model="mlp", image_shape=SHAPE, num_classes=3, num_heads=1, epochs=2, batch_size=64,
                       steps_per_epoch=1, train_examples=7, strategy="mirrored", cpu_devices=2,
                       model_options={"hidden_units": [8], "dropout": 0.0}, **changes)


def fit_on_two_cpus(work: Path, report: object = None) -> dict[str, object]:
    """In a fresh process (logical CPUs exist only if made before TensorFlow starts), as Train runs it: ``fit``
    on TFRecords of 7 training images and 1 validation image, mirrored over two CPUs with a batch of 64."""
    from tasks.training.fit import fit
    from tests.data.test_input_pipeline import make_data, write_shards

    images, labels = make_data(8, seed=1)
    (work / "train").mkdir(parents=True)
    (work / "validation").mkdir()
    train = write_shards(work / "train", images[:7], labels[:7] % 3)
    validation = write_shards(work / "validation", images[7:], labels[7:] % 3, split="validation")
    stats: dict = {}
    fit(mirrored_config(), train, validation, work / "fit", stats=stats)
    return {"steps": stats["steps"], "history": history(work / "fit")}


def fit_head_on_two_cpus(work: Path, report: object = None) -> dict[str, object]:
    """``fit_head`` on features of 7 training and 3 validation images, as ``fit_on_two_cpus``."""
    import numpy as np

    from tasks.training.fit import fit_head

    rng = np.random.default_rng(0)
    features = rng.normal(size=(10, 5)).astype(np.float32)
    classes = rng.integers(0, 3, 10).astype(np.int32)
    fit_head(mirrored_config(), (features[:7], classes[:7]), (features[7:], classes[7:]), work / "head")
    return {"history": history(work / "head")}


@pytest.mark.parametrize(("training", "validation_images"), [(fit_on_two_cpus, 1), (fit_head_on_two_cpus, 3)])
def test_mirrored_fit_and_head_take_splits_smaller_than_a_batch_and_than_the_replicas(
        training: object, validation_images: int, tmp_path: Path) -> None:
    from tasks.runtime.fresh_process import run_in_fresh_process

    result = run_in_fresh_process(training, tmp_path)
    if "steps" in result:
        assert result["steps"] == 2  # one whole batch of 6 of the 7 images an epoch
    rows = result["history"]
    assert len(rows) == 2
    for row in rows:
        assert math.isfinite(float(row["val_loss"])), row
        correct = float(row["val_accuracy"]) * validation_images  # a split read twice over counts once
        assert correct == pytest.approx(round(correct), abs=1e-5), row
