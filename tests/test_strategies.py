"""Train's strategies: mirrored over two logical CPU devices really trains (in a fresh process, as TensorFlow
allows splitting the CPU only before it starts); the strategies Keras 3's fit cannot use are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipelines import cli
from tests.conftest import REPO


def test_mirrored_over_two_logical_cpus_trains(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "pipelines.cli", "run", "captcha", "--until", "train", "--artifacts", str(root),
               "--set", "GenerateCaptchas.count=400", "--set", "Train.epochs=1", "--set", "Train.batch_size=16",
               "--set", "Train.strategy=mirrored", "--set", "Train.cpu_devices=2"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [trained] = [p for p in (root / "train").glob("Train-*")]
    manifest = json.loads((trained / "MANIFEST.json").read_text())
    assert manifest["num_replicas_in_sync"] == 2 and manifest["epochs_completed"] == 1


def test_an_unknown_strategy_is_refused_with_the_choices(tmp_path: Path, luigi_config, capsys) -> None:
    code = cli.main(["run", "captcha", "--artifacts", str(tmp_path / "a"), "--set", "Train.strategy=tpu"])
    assert code == 2
    assert "unknown strategy 'tpu'; choose one of default, mirrored, multi_worker, parameter_server" in \
        capsys.readouterr().err
