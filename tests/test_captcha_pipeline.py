"""The captcha pipeline on tiny data: every stage, no-op rerun, predict, freeze equivalence, staleness,
NaN failure, and a killed training that resumes from its checkpoint."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines import cli
from tests.conftest import CAPTCHA_TINY, REPO, isolated_luigi_config

TINY = list(CAPTCHA_TINY)  # 160 captchas, two epochs, batches of 32
STAGES = ("generate", "decode", "imagedirs", "tfrecords", "datacheck", "train", "evaluate", "freeze")


def artifact_dirs(root: Path, stage: str) -> list[Path]:
    return sorted(p for p in (root / stage).glob("*-*") if not p.name.startswith("."))


def only(root: Path, stage: str) -> Path:
    [path] = artifact_dirs(root, stage)
    return path


@pytest.fixture(scope="module")
def tiny_run(captcha_tiny_run: tuple[Path, object]):
    """The session's ``tfpipe run captcha`` with TINY (tests/conftest.py), under the project's luigi.cfg."""
    root, _ = captcha_tiny_run
    with isolated_luigi_config(root):
        yield root


def test_every_stage_leaves_its_outputs_and_manifest(tiny_run: Path) -> None:
    from tasks.store import artifacts as store

    for stage in STAGES:
        path = only(tiny_run, stage)
        manifest = json.loads((path / "MANIFEST.json").read_text())
        assert store.is_valid_artifact(path, manifest["key"]), stage
        assert store.verify_artifact(path) == [], stage
    generated = only(tiny_run, "generate")
    with open(generated / "labels.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["index", "label"] and len(rows) == 161
    assert all(re.fullmatch(r"[A-Z]{4}", label) for _, label in rows[1:])
    assert len(list((generated / "images").glob("*.png"))) == 160
    image_dirs = only(tiny_run, "imagedirs")
    assert (image_dirs / "train" / "labels.csv").exists() and list((image_dirs / "validation").glob("*.png"))
    info = json.loads((only(tiny_run, "tfrecords") / "tfpipe_info.json").read_text())
    assert info["num_heads"] == 4 and info["image_shape"] == [60, 160, 1]
    assert sum(s["count"] for s in info["splits"].values()) == 160
    trained = only(tiny_run, "train")
    history = (trained / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch") and len(history) == 3
    assert (trained / "model.keras").stat().st_size > 0 and (trained / "training_curves.png").stat().st_size > 0
    assert list((trained / "tensorboard").rglob("events.out.tfevents.*"))
    evaluated = only(tiny_run, "evaluate")
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert 0.0 <= metrics["sequence_accuracy"] <= metrics["char_accuracy"] <= 1.0
    assert metrics["examples"] == info["splits"]["test"]["count"]
    for picture in ("confusion_matrix.png", "misclassified.png"):
        assert (evaluated / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (evaluated / "report.html").read_text()
    frozen = only(tiny_run, "freeze")
    assert (frozen / "saved_model" / "saved_model.pb").exists() and (frozen / "frozen_graph.pb").exists()
    assert (frozen / "labels.txt").read_text().startswith("0:A\n1:B\n")
    freeze_manifest = json.loads((frozen / "MANIFEST.json").read_text())
    assert freeze_manifest["max_abs_diff"] <= 1e-5 and freeze_manifest["verified_images"] > 0


def test_finished_pipeline_reruns_as_no_op(tiny_run: Path, capsys: pytest.CaptureFixture) -> None:
    stamps = {p: (p / "MANIFEST.json").stat().st_mtime_ns for s in STAGES for p in artifact_dirs(tiny_run, s)}
    capsys.readouterr()
    with isolated_luigi_config(tiny_run):
        assert cli.main(["run", "captcha", "--artifacts", str(tiny_run), *TINY]) == 0
    assert {p: (p / "MANIFEST.json").stat().st_mtime_ns for p in stamps} == stamps
    assert sum(len(artifact_dirs(tiny_run, s)) for s in STAGES) == len(STAGES)
    [line] = capsys.readouterr().out.strip().splitlines()  # one line, naming what the run ends with
    assert line.startswith("tfpipe: captcha up to date: all 8 stages done")
    printed = dict(part.split(": ", 1) for part in line.split(" (", 1)[1].rstrip(")").split(", "))
    assert Path(printed["report"]) == (only(tiny_run, "evaluate") / "report.html").resolve()
    assert Path(printed["model"]) == only(tiny_run, "freeze").resolve()


def test_the_frozen_model_names_its_report_relative_to_itself(tiny_run: Path) -> None:
    frozen = only(tiny_run, "freeze")
    report = json.loads((frozen / "MANIFEST.json").read_text())["report_html"]
    assert not Path(report).is_absolute()  # survives moving the artifact root, works with a relative one
    assert (frozen / report).resolve() == (only(tiny_run, "evaluate") / "report.html").resolve()


def keras_texts(model_path: Path, pngs: list[Path]) -> list[str]:
    import keras
    from PIL import Image

    model = keras.models.load_model(model_path, compile=False)
    batch = np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.float32)[..., None] / 255.0 for p in pngs])
    indices = np.asarray(model.predict_on_batch(batch)).argmax(-1)
    return ["".join(chr(ord("A") + int(i)) for i in row) for row in indices]


def test_predict_prints_what_the_keras_model_predicts(tiny_run: Path, capsys: pytest.CaptureFixture) -> None:
    pngs = sorted((only(tiny_run, "imagedirs") / "test").glob("*.png"))[:5]
    assert cli.main(["predict", str(only(tiny_run, "freeze")), *map(str, pngs)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    printed = [re.search(r": ([A-Z]{4})\b", line).group(1) for line in out]
    assert printed == keras_texts(only(tiny_run, "train") / "model.keras", pngs)


def test_frozen_graph_and_saved_model_match_keras(tiny_run: Path) -> None:
    import keras

    from tasks.export.freeze import verify_exported

    pngs = sorted((only(tiny_run, "imagedirs") / "test").glob("*.png"))[:8]
    model = keras.models.load_model(only(tiny_run, "train") / "model.keras", compile=False)
    diff = verify_exported(only(tiny_run, "freeze"), model, [p.read_bytes() for p in pngs],
                           image_shape=(60, 160, 1))
    assert diff <= 1e-5


@pytest.mark.slow  # trains, evaluates and freezes again. In the default suite: a changed Train parameter reruns
# train but not decode (tests/store/test_gc_history.py::test_history_lists_every_run_with_its_metric_and_publication),
# a changed parameter reruns only the later stages (tests/test_cifar_pipeline.py::
# test_changed_validation_fraction_reruns_only_later_stages)
def test_changing_epochs_reruns_train_evaluate_freeze_only(tiny_run: Path, tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    shutil.copytree(tiny_run, root)  # the session's run stays as it is
    before = {s: artifact_dirs(root, s) for s in STAGES}
    args = ["--set" if a == "--set" else a for a in TINY]
    args[args.index("Train.epochs=2")] = "Train.epochs=3"
    with isolated_luigi_config(root):
        assert cli.main(["run", "captcha", "--artifacts", str(root), *args]) == 0
    after = {s: artifact_dirs(root, s) for s in STAGES}
    for stage in ("generate", "decode", "imagedirs", "tfrecords"):
        assert after[stage] == before[stage], stage
    for stage in ("train", "evaluate", "freeze"):
        assert len(after[stage]) == 2, stage


def test_nan_loss_fails_train_and_leaves_no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    from tasks.training import fit as training

    real_make_dataset = training.make_dataset

    def poisoned(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        dataset = real_make_dataset(*args, **kwargs)
        if not kwargs.get("training"):
            return dataset
        return dataset.enumerate().map(
            lambda i, batch: (tf.where(i == 1, batch[0] * np.nan, batch[0]), batch[1]))

    monkeypatch.setattr(training, "make_dataset", poisoned)
    root = tmp_path / "artifacts"
    with isolated_luigi_config(root):
        code = cli.main(["run", "captcha", "--artifacts", str(root), *TINY])
    assert code == 30  # [retcode] task_failed
    assert artifact_dirs(root, "tfrecords")
    for stage in ("train", "evaluate", "freeze"):
        assert artifact_dirs(root, stage) == [], stage


@pytest.mark.slow  # 40 s; fit's resume is also tested on its own in tests/training/test_custom_loop.py
def test_killed_training_resumes_from_its_last_epoch(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    args = [sys.executable, "-m", "pipelines.cli", "run", "captcha", "--until", "train", "--artifacts", str(root),
            "--set", "GenerateCaptchas.count=160", "--set", "Train.epochs=5", "--set", "Train.batch_size=32",
            "--set", "Train.patience=10"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(args, cwd=REPO, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    history = None
    while time.time() < deadline and process.poll() is None:
        found = list((root / "train" / ".work").glob("*/history.csv"))
        if found and len(found[0].read_text().splitlines()) >= 3:  # header + two finished epochs
            history = found[0]
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert history is not None, "training should have been killed after its second epoch"
    assert artifact_dirs(root, "train") == []
    epochs_before = len(history.read_text().splitlines()) - 1
    assert epochs_before < 5
    rerun = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Epoch 1/5" not in rerun.stdout and f"Epoch {epochs_before + 1}/5" in rerun.stdout
    trained = only(root, "train")
    with open(trained / "history.csv") as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    assert epochs == [0, 1, 2, 3, 4]
    assert json.loads((trained / "MANIFEST.json").read_text())["epochs_completed"] == 5


def test_predict_names_each_bad_file_in_one_line_and_skips_them_when_asked(
        tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = sorted((artifact_dirs(tiny_run, "imagedirs")[0] / "test").glob("*.png"))[:2]
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good[0].read_bytes()[:60])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    files = [str(good[0]), str(truncated), str(empty), str(good[1])]
    frozen = str(artifact_dirs(tiny_run, "freeze")[0])  # any of the module's frozen models
    capsys.readouterr()
    assert cli.main(["predict", frozen, *files]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing predicted unless asked
    errors = captured.err.strip().splitlines()
    assert errors[0].startswith(f"tfpipe: {truncated}: ") and errors[1].startswith(f"tfpipe: {empty}: ")
    assert "--skip-bad" in errors[2] and len(errors) == 3
    assert "Traceback" not in captured.err and "node" not in captured.err.lower()
    assert cli.main(["predict", frozen, *files, "--skip-bad"]) == 2
    captured = capsys.readouterr()
    predicted = captured.out.strip().splitlines()
    assert [line.split(": ")[0] for line in predicted] == [str(good[0]), str(good[1])]
    assert len(captured.err.strip().splitlines()) == 2


@pytest.mark.parametrize("until", ["generate", "download"])
def test_until_takes_the_first_stage_by_either_name(tmp_path: Path, until: str, capsys) -> None:
    root = tmp_path / "artifacts"
    with isolated_luigi_config(root):
        assert cli.main(["run", "captcha", "--until", until, "--artifacts", str(root),
                         "--set", "GenerateCaptchas.count=8"]) == 0
        assert len(artifact_dirs(root, "generate")) == 1 and not artifact_dirs(root, "decode")
        capsys.readouterr()
        assert cli.main(["status", "captcha", "--artifacts", str(root), "--set", "GenerateCaptchas.count=8"]) == 0
    assert re.search(r"^done\s+generate\s+GenerateCaptchas", capsys.readouterr().out, re.MULTILINE)
