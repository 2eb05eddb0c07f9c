"""`tfpipe history` lists every recorded run; `tfpipe gc --keep N` frees what no kept run, published version or
running run needs, and `--dry-run` changes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipelines import cli
from tests.fakes.images import write_class_folder

TINY = ["--set", "DecodeImages.image_size=32", "--set", "Train.batch_size=16"]


def stage_dirs(root: Path, stage: str) -> list[Path]:
    return sorted(p for p in (root / stage).glob("*-*") if not p.name.startswith("."))


def run(photos: Path, root: Path, epochs: int, *extra: str) -> int:
    return cli.main(["run", "images", "--source", str(photos), "--artifacts", str(root), *TINY,
                     "--set", f"Train.epochs={epochs}", *extra])


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - yields (photos, root, freezes)
    from tests.conftest import isolated_luigi_config

    base = tmp_path_factory.mktemp("gc")
    photos = base / "photos"
    write_class_folder(photos, {"disc": 25, "square": 25}, size=(40, 40), seed=4)
    root = base / "artifacts"
    with isolated_luigi_config(root):
        freezes = []
        for epochs, extra in ((2, ("--publish",)), (3, ()), (4, ())):
            before = set(stage_dirs(root, "freeze"))
            assert run(photos, root, epochs, *extra) == 0
            [new] = set(stage_dirs(root, "freeze")) - before
            freezes.append(new)
        yield photos, root, freezes


def test_history_lists_every_run_with_its_metric_and_publication(three_runs, capsys) -> None:
    _, root, _ = three_runs
    capsys.readouterr()
    assert cli.main(["history", "images", "--artifacts", str(root), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert len(runs) == 3
    assert runs[0]["published"] is True and runs[0]["published_version"] == 1
    assert "train" in runs[1]["stages_ran"] and "decode" not in runs[1]["stages_ran"]
    assert all(0.0 <= r["metrics"]["top1_accuracy"] <= 1.0 for r in runs)
    assert all(r["source"] and r["source"] == runs[0]["source"] for r in runs)
    assert cli.main(["history", "images", "--artifacts", str(root)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 4 and "v1" in table[1]


def test_gc_on_a_moved_root_keeps_what_its_records_name(three_runs, tmp_path: Path, capsys) -> None:
    """Run log and publish records hold absolute folders: on a root moved (or mounted) elsewhere, gc finds
    them by key, and removes only what it would have removed in place."""
    import shutil

    _, root, (published, middle, last) = three_runs
    moved = tmp_path / "moved"
    shutil.copytree(root, moved, symlinks=True)
    capsys.readouterr()
    assert cli.main(["gc", "--keep", "1", "--dry-run", "--artifacts", str(moved)]) == 0
    dry = capsys.readouterr().out
    assert str((moved / "freeze" / middle.name).resolve()) in dry, "the middle run is not kept"
    for kept in (published, last):
        assert str((moved / "freeze" / kept.name).resolve()) not in dry, f"{kept.name} is named by a record"


def test_gc_keeps_the_last_runs_published_versions_and_leases(three_runs, capsys) -> None:
    from tasks.store.runlog import lease
    from tests.conftest import isolated_luigi_config

    photos, root, (published, middle, last) = three_runs
    middle_train = Path(json.loads((middle / "MANIFEST.json").read_text())["upstream"]["model"])
    [middle_train] = [d for d in stage_dirs(root, "train") if d.name.endswith(str(middle_train))]
    everything = {p for stage in ("train", "evaluate", "freeze") for p in stage_dirs(root, stage)}
    capsys.readouterr()
    assert cli.main(["gc", "--keep", "1", "--dry-run", "--artifacts", str(root)]) == 0
    dry = capsys.readouterr().out
    assert "would remove" in dry and str(middle.resolve()) in dry
    assert {p for stage in ("train", "evaluate", "freeze") for p in stage_dirs(root, stage)} == everything
    with lease(root, [middle_train]):  # a run in progress reads the middle run's model
        assert cli.main(["gc", "--keep", "1", "--artifacts", str(root)]) == 0
    assert middle_train.is_dir() and not middle.exists()  # leased: kept; not leased, not recent: removed
    assert published.is_dir() and last.is_dir()  # a published version's inputs, and the last run
    assert os.readlink(root / "published" / "images" / "current") == "1"
    with isolated_luigi_config(root):
        capsys.readouterr()
        assert run(photos, root, 4) == 0
    assert "up to date" in capsys.readouterr().out  # the kept run is whole
