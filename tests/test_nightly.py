"""A simulated nightly sequence with a backbone: run 1 trains and publishes; run 2 on the unchanged folder does
nothing; images added -> run 3 computes features only for them and publishes if not worse; a deliberately
worse model is refused and `current` stays; `gc` during a run removes nothing the run uses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines import cli
from tests.conftest import REPO
from tests.fakes.images import write_class_folder
from tests.test_bottleneck_pipeline import tiny_backbone

BASE = ["--set", "DecodeImages.image_size=32", "--set", "Train.batch_size=16", "--set", "Train.patience=20",
        "--set", "Train.learning_rate=0.01"]


def newest(root: Path, stage: str) -> dict:
    dirs = [p for p in (root / stage).glob("*-*") if not p.name.startswith(".")]
    return json.loads((max(dirs, key=lambda d: (d / "MANIFEST.json").stat().st_mtime) / "MANIFEST.json").read_text())


@pytest.mark.slow  # ~50 s: four runs with a backbone. Each step stays in the default suite on its own: the first
# publication, the no-op rerun and the refused model in tests/test_publish.py, features computed only for added
# images in tests/test_bottleneck_pipeline.py, the run history in tests/store/test_gc_history.py
def test_nightly_sequence(tmp_path: Path, luigi_config, capsys) -> None:
    photos = tmp_path / "photos"
    write_class_folder(photos, {"disc": 30, "square": 30, "triangle": 30}, size=(40, 40), seed=5)
    backbone = tiny_backbone(tmp_path / "backbone.keras")
    root = tmp_path / "artifacts"
    nightly = ["run", "images", "--source", str(photos), "--artifacts", str(root), "--backbone", str(backbone),
               "--publish", *BASE]
    current = root / "published" / "images" / "current"

    assert cli.main([*nightly, "--set", "Train.epochs=40"]) == 0  # night 1
    assert os.readlink(current) == "1"
    capsys.readouterr()
    assert cli.main([*nightly, "--set", "Train.epochs=40"]) == 0  # night 2: nothing changed
    assert "up to date" in capsys.readouterr().out and os.readlink(current) == "1"

    write_class_folder(tmp_path / "more", {"disc": 4}, size=(40, 40), seed=9)
    for path in (tmp_path / "more" / "disc").iterdir():
        shutil.copy(path, photos / "disc" / f"new_{path.name}")
    code = cli.main([*nightly, "--set", "Train.epochs=40", "--set", "Publish.tolerance=0.05"])  # night 3
    assert code in (0, 5)
    assert newest(root, "bottleneck")["features_computed"] == 4  # only the new images
    assert os.readlink(current) == ("2" if code == 0 else "1")
    kept = os.readlink(current)

    code = cli.main([*nightly, "--set", "Train.epochs=1", "--set", "Train.learning_rate=1e-7"])  # a worse model
    assert code == 5 and os.readlink(current) == kept
    assert newest(root, "publish")["published"] is False

    capsys.readouterr()
    assert cli.main(["history", "images", "--artifacts", str(root), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["exit_code"] for r in runs][:2] == [0, 0] and runs[1]["stages_ran"] == [] and runs[-1]["exit_code"] == 5


@pytest.mark.slow  # 28 s: a whole pipeline run with gc beside it
def test_gc_during_a_run_removes_nothing_it_uses(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    write_class_folder(photos, {"a": 40, "b": 40}, size=(40, 40), seed=6)
    root = tmp_path / "artifacts"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    tfpipe = [sys.executable, "-m", "pipelines.cli"]
    first = [*tfpipe, "run", "images", "--source", str(photos), "--artifacts", str(root), "--until", "tfrecords",
             *BASE]
    assert subprocess.run(first, env=env, cwd=REPO, capture_output=True, timeout=600).returncode == 0
    # Nothing recorded keeps these artifacts except the run below, which reads them while it trains.
    (root / "runs").rename(root / "runs-aside")
    training = subprocess.Popen([*first[:-len(BASE) - 2], *BASE, "--set", "Train.epochs=6"], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((root / "train").glob(".tmp-*")):
        time.sleep(0.05)
    gc = subprocess.run([*tfpipe, "gc", "--keep", "1", "--artifacts", str(root)], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300)
    assert gc.returncode == 0, gc.stderr
    _, err = training.communicate(timeout=600)
    assert training.returncode == 0, err[-3000:]
    for stage in ("download", "decode", "imagedirs", "tfrecords", "datacheck", "train", "evaluate", "freeze"):
        assert [p for p in (root / stage).glob("*-*") if not p.name.startswith(".")], stage
