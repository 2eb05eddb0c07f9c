"""Publishing behind a gate: the first model is published as version 1 and `current`; an unchanged rerun does
nothing; a worse model is compared with the published one on the same test examples and refused (kept, its
artifact says why and holds the comparison, a distinct exit code) and `current` stays; `--name` publishes side by
side; `tfpipe predict` reads a published version and `current`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pipelines import cli
from tasks.modelcard.schema import validate_model_card
from tests.conftest import IMAGES_TINY

TRAIN = list(IMAGES_TINY)  # 32x32, a quarter held out for testing, batches of 16, patience 10


def stage_dirs(root: Path, stage: str) -> list[Path]:
    return sorted(p for p in (root / stage).glob("*-*") if not p.name.startswith("."))


@pytest.fixture(scope="module")
def published(images_published_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """(photos, root): a copy of the session's ``run images --publish`` with TRAIN and 5 epochs (tests/conftest.py),
    which these tests run again."""
    from tests.conftest import isolated_luigi_config

    photos, shared = images_published_run
    root = tmp_path_factory.mktemp("publish") / "artifacts"
    shutil.copytree(shared, root, symlinks=True)
    with isolated_luigi_config(root):
        yield photos, root


def test_the_first_model_is_version_1_and_current(published) -> None:
    _, root = published
    versions = root / "published" / "images"
    assert os.readlink(versions / "current") == "1"
    version = versions / "1"
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    assert (version / "labels.txt").is_file() and (version / "frozen_graph.pb").is_file()
    record = json.loads((version / "publish.json").read_text())
    assert record["metric"] == "top1_accuracy" and record["value"] > 0.6
    trained_on = (version / "trained_on_sha256.txt").read_text().split()
    assert len(trained_on) > 60 and trained_on == sorted(set(trained_on))
    assert all(len(digest) == 64 and int(digest, 16) >= 0 for digest in trained_on)
    card = json.loads((version / "model_card.json").read_text())
    validate_model_card(card)  # the Model Card Toolkit's schema, vendored in tasks/modelcard/
    assert card["model_details"]["name"] == "images" and card["model_details"]["version"]["name"] == "1"
    metrics = json.loads(next((root / "evaluate").glob("Evaluate-*/metrics.json")).read_text())
    listed = {m["type"]: m["value"] for m in card["quantitative_analysis"]["performance_metrics"]
              if m.get("slice") == "test split"}
    assert float(listed["top1_accuracy"]) == pytest.approx(metrics["top1_accuracy"], abs=1e-4)
    assert "disc" in (version / "model_card.html").read_text()


def test_an_unchanged_rerun_does_nothing(published, capsys) -> None:
    from tests.conftest import isolated_luigi_config

    photos, root = published
    with isolated_luigi_config(root):
        capsys.readouterr()
        assert cli.main(["run", "images", "--source", str(photos), "--artifacts", str(root), "--publish", *TRAIN,
                         "--set", "Train.epochs=5"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert sorted(p.name for p in (root / "published" / "images").iterdir() if not p.name.startswith(".")) == [
        "1", "current"]


def test_a_model_that_did_not_learn_is_refused_whatever_the_floor_and_current_stays(published, capsys) -> None:
    from tests.conftest import isolated_luigi_config

    photos, root = published
    with isolated_luigi_config(root):
        code = cli.main(["run", "images", "--source", str(photos), "--artifacts", str(root), "--publish", *TRAIN,
                         "--set", "Train.epochs=1", "--set", "Train.learning_rate=1e-9",
                         "--set", "Publish.floor=0.0", "--set", "Publish.tolerance=1.0"])
    assert code == 5  # [PublishGate] refused_exit_code
    captured = capsys.readouterr()
    assert "not published: the model did not learn" in captured.err + captured.out
    assert "tfpipe: warning: model health: did not learn" in captured.err
    assert os.readlink(root / "published" / "images" / "current") == "1"
    assert not (root / "published" / "images" / "2").exists()
    refused = [d for d in stage_dirs(root, "publish")
               if not json.loads((d / "MANIFEST.json").read_text())["published"]]
    assert len(refused) == 1
    decision = json.loads((refused[0] / "publish.json").read_text())
    assert decision["reason"].startswith("the model did not learn") and decision["current_version"] == 1
    # Compared with version 1 before the health rule refused it: on the whole test split (version 1 trained on
    # none of it), the new model's accuracy there is its evaluation's, through the serving model on the same pixels.
    comparison = decision["comparison"]
    evaluated = json.loads(next(d for d in stage_dirs(root, "evaluate")
                                if json.loads((d / "metrics.json").read_text())["health"]["learned"] is False
                                ).joinpath("metrics.json").read_text())
    assert comparison["champion_version"] == 1 and comparison["trained_on_known"] is True
    assert comparison["left_out"] == {"trained_on": 0, "unknown_class": 0}
    count = comparison["examples"]
    assert count == evaluated["examples"] > 20
    # One example either way at most: a near tie the SavedModel and Keras may break apart.
    assert comparison["challenger"] == pytest.approx(evaluated["top1_accuracy"], abs=1.01 / count)
    assert comparison["champion"] == pytest.approx(record_value(root), abs=1.01 / count)
    b, c = comparison["mcnemar"]["b"], comparison["mcnemar"]["c"]
    assert comparison["flipped"]["right_to_wrong"]["count"] == b and b > c
    assert (refused[0] / "publish_report.html").is_file() and (refused[0] / "flipped_examples.png").is_file()
    assert len(stage_dirs(root, "freeze")) == 2  # the refused model is kept
    history = [json.loads(line) for line in (root / "runs" / "images.jsonl").read_text().splitlines()]
    assert history[-1]["health"]["learned"] is False and history[-1]["published"] is False


def test_without_publish_a_model_that_did_not_learn_exits_0_and_says_so(published, capsys) -> None:
    from tests.conftest import isolated_luigi_config

    photos, root = published
    with isolated_luigi_config(root):
        capsys.readouterr()
        code = cli.main(["run", "images", "--source", str(photos), "--artifacts", str(root), *TRAIN,
                         "--set", "Train.epochs=1", "--set", "Train.learning_rate=1e-9",
                         "--set", "Train.shuffle_buffer=999"])  # the refused model's start, another key
        captured = capsys.readouterr()
        assert code == 0 and "tfpipe: warning: model health: did not learn" in captured.err
        assert cli.main(["history", "images"]) == 0
    assert "did not learn" in capsys.readouterr().out.splitlines()[-1]


def record_value(root: Path) -> float:
    return float(json.loads((root / "published" / "images" / "1" / "publish.json").read_text())["value"])


@pytest.mark.parametrize(("value", "b", "c", "health", "reason"), [
    (0.9, 0, 0, None, ""),
    (0.7, 10, 2, None, "significantly worse than version 1 on the same 100 test examples"),
    (0.79, 3, 1, None, ""),  # worse by noise
    (0.77, 5, 1, None, "is 0.0400 below version 1's"),  # p = 0.22, but more than the tolerance below
    (0.3, 0, 0, None, "below the floor 0.5000"),
    (0.9, 0, 0, {"learned": False, "warnings": ["did not learn: test top1_accuracy 0.9 ..."]},
     "the model did not learn: test top1_accuracy"),
])
def test_gate(value: float, b: int, c: int, health: dict | None, reason: str) -> None:
    from tasks.export.comparison import mcnemar_exact
    from tasks.export.publish_task import gate

    comparison = {"champion_version": 1, "metric": "top1_accuracy", "examples": 100, "champion": 0.81,
                  "challenger": 0.81 - (b - c) / 100, "mcnemar": {"b": b, "c": c, "p_value": mcnemar_exact(b, c)}}
    got = gate(value, comparison, tolerance=0.02, significance=0.05, floor=0.5, health=health)
    assert (reason in got) if reason else got == ""


def test_a_name_publishes_side_by_side_and_predict_reads_it(published, capsys) -> None:
    from tests.conftest import isolated_luigi_config

    photos, root = published
    with isolated_luigi_config(root):
        assert cli.main(["run", "images", "--source", str(photos), "--artifacts", str(root), "--publish",
                         "--name", "shapes-prod", *TRAIN, "--set", "Train.epochs=5"]) == 0
    assert os.readlink(root / "published" / "shapes-prod" / "current") == "1"
    jpegs = sorted((photos / "disc").glob("*.jpg"))[:2]
    for model in (root / "published" / "shapes-prod", root / "published" / "images" / "current",
                  root / "published" / "images" / "1"):
        capsys.readouterr()
        assert cli.main(["predict", str(model), *map(str, jpegs)]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 2 and all("disc" in line or "square" in line or "triangle" in line for line in lines)
