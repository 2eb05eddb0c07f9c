"""The scheduling recipes work as written: the crontab line of docs/SCHEDULING.md, run through `sh -c`, does
what `tfpipe run` does (and a second night is "up to date"); Luigi's RangeDaily over DailyRetrain fills in
each day's record."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.fakes.images import write_class_folder


def crontab_command() -> str:
    text = (REPO / "docs" / "SCHEDULING.md").read_text()
    [line] = re.findall(r"<!-- crontab:[^\n]*-->\n    (.+)\n<!-- /crontab -->", text)
    fields = line.split(maxsplit=5)
    return fields[5]  # the command after the five time fields


def test_the_crontab_line_runs_the_pipeline_and_then_finds_it_up_to_date(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    write_class_folder(photos, {"a": 20, "b": 20}, size=(40, 40), seed=1)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    command = (crontab_command().replace("/srv/tfpipe", str(REPO)).replace("/data/photos", str(photos))
               .replace("/srv/artifacts", str(artifacts)))
    command = command.replace("--publish", "--publish --set DecodeImages.image_size=32 --set Train.epochs=8 "
                                           "--set Train.batch_size=8")  # a model that learns: the gate refuses others
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    if not (REPO / ".venv" / "bin" / "tfpipe").exists():
        command = command.replace(".venv/bin/tfpipe", f"{sys.executable} -m pipelines.cli")
    first = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, (artifacts / "nightly.log").read_text()[-3000:]
    assert os.readlink(artifacts / "published" / "images" / "current") == "1"
    second = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0
    assert "up to date" in (artifacts / "nightly.log").read_text().splitlines()[-1]


def test_range_daily_over_daily_retrain(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    luigi_bin = Path(sys.executable).with_name("luigi")
    command = [str(luigi_bin), "--module", "pipelines.schedule", "RangeDaily", "--of", "DailyRetrain",
               "--start", "2026-11-28", "--stop", "2026-11-30", "--DailyRetrain-dataset", "captcha",
               "--DailyRetrain-until", "decode", "--GenerateCaptchas-count", "20",
               "--ArtifactStore-root", str(root), "--local-scheduler"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    days = sorted(p.name for p in (root / "daily" / "captcha").iterdir())
    assert days == ["2026-11-28.json", "2026-11-29.json"]
    record = json.loads((root / "daily" / "captcha" / "2026-11-28.json").read_text())
    assert Path(record["artifacts"]["decode"]).is_dir()
    assert len(list((root / "decode").glob("DecodeCaptcha-*"))) == 1  # both days share the cached stages
