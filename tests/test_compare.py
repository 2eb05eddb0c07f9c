"""`tfpipe compare A B`: two recorded runs (by id, or a unique prefix) or two evaluate artifacts side by side, and
the run ids `tfpipe history` prints.

Most cases run on a small root written here with the store's own writers (`write_manifest`, `append_run`):
three runs of a toy pipeline whose per-class numbers and class counts are chosen so the deltas can be worked
out by hand. One case reads the session's real captcha run (a copy of its root), one a bucket root.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipelines import cli
from pipelines.commands.compare.command import render
from tasks.evaluation.files import METRICS_FILE
from tasks.store.artifacts import ArtifactIdentity, artifact_key, write_manifest
from tasks.store.runlog import append_run

RUN_A, RUN_B, RUN_C = "20260101T000000-aaaaaa", "20260102T000000-bbbbbb", "20260102T120000-cccccc"
SOURCE_A, SOURCE_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
CLASSES = ["cat", "dog", "bird"]


@dataclass(frozen=True)
class ToyRun:
    """What one synthetic run is made of: its Train.epochs, per-class (recall, precision), train class counts."""

    run_id: str
    epochs: int
    per_class: dict[str, tuple[float, float]]
    train_counts: list[int]
    pixel_mean: float
    source: str
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        test_counts = [5, 5, 5]
        return {"classes": CLASSES, "datacheck": "", "warnings": self.warnings, "splits": {
            "train": {"examples": sum(self.train_counts), "class_counts": self.train_counts,
                      "pixels": {"mean": [self.pixel_mean], "std": [40.0]}},
            "test": {"examples": sum(test_counts), "class_counts": test_counts,
                     "pixels": {"mean": [self.pixel_mean], "std": [40.0]}}}}

    def metrics(self) -> dict[str, Any]:
        top1 = sum(recall for recall, _ in self.per_class.values()) / len(self.per_class)
        return {"top1_accuracy": top1, "top_k_accuracy": 1.0, "top_k": 3, "num_examples": 15, "num_classes": 3,
                "per_class": [{"class": name, "recall": recall, "precision": precision, "f1": 0.0, "support": 5}
                              for name, (recall, precision) in self.per_class.items()]}


A = ToyRun(RUN_A, 2, {"cat": (0.5, 0.8), "dog": (0.9, 0.6), "bird": (0.7, 0.7)}, [10, 10, 20], 120.0, SOURCE_A,
           ["class imbalance: bird has twice the examples"])
B = ToyRun(RUN_B, 5, {"cat": (0.75, 0.8), "dog": (0.6, 0.65), "bird": (0.7, 0.7)}, [10, 30, 10], 125.5, SOURCE_B)


def commit(root: Path, family: str, stage: str, params: dict[str, str], upstream: dict[str, str],
           extra: dict[str, Any], files: dict[str, str] | None = None) -> Path:
    """One finished artifact under ``root``, its manifest written by the store; keyed by its content too, so two
    toy runs that differ in it get two artifacts."""
    content = hashlib.sha256(json.dumps([extra, files], sort_keys=True).encode()).hexdigest()
    key = artifact_key(family, params, 1, {**upstream, "test:content": content})
    identity = ArtifactIdentity(family, stage, key, 1, params, upstream)
    folder = identity.directory(root)
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for name, text in (files or {}).items():
            (folder / name).write_text(text)
        write_manifest(folder, identity, extra)
    return folder


def key_of(folder: Path) -> str:
    return folder.name.rsplit("-", 1)[-1]


def run_artifacts(root: Path, run: ToyRun) -> list[Path]:
    """The run's artifacts: download, datacheck, train, evaluate, freeze (each found again if already there)."""
    download = commit(root, "FetchToy", "download", {"url": "https://example.org/toy.tar"},
                      {"source:data": run.source}, {})
    check = commit(root, "DataCheck", "datacheck", {"on_leak": "fail"}, {"examples": key_of(download)},
                   {"data_summary": run.summary(), "warnings": run.warnings})
    train = commit(root, "Train", "train", {"epochs": str(run.epochs), "batch_size": "32"},
                   {"examples": key_of(check)}, {})
    metrics = run.metrics()
    evaluate = commit(root, "Evaluate", "evaluate",
                      {"dataset": "toy", "dataset_metric": "top1_accuracy", "split": "test", "top_k": "3"},
                      {"model": key_of(train), "examples": key_of(check)},
                      {"metrics": {k: v for k, v in metrics.items() if k != "per_class"},
                       "health": {"learned": True, "warnings": []}},
                      files={METRICS_FILE: json.dumps(metrics)})
    freeze = commit(root, "Freeze", "freeze", {"tolerance": "1e-05"},
                    {"model": key_of(train), "evaluation": key_of(evaluate)}, {})
    return [download, check, train, evaluate, freeze]


def make_run(root: Path, run: ToyRun, run_id: str | None = None) -> None:
    """The run's artifacts and its line in runs/toy.jsonl, as `tfpipe run` records it."""
    folders = run_artifacts(root, run)
    append_run(root, "toy", {
        "run_id": run_id or run.run_id, "source_location": "/data/toy", "time": f"{run.run_id[:8]}T00:00:00+0000",
        "pipeline": "toy", "exit_code": 0, "source": [run.source], "stages_ran": [f.parent.name for f in folders],
        "artifacts": [str(f.resolve()) for f in folders],
        "metrics": {"top1_accuracy": run.metrics()["top1_accuracy"]},
        "health": {"learned": True, "warnings": []}, "data_summary": run.summary(), "data_warnings": run.warnings})


@pytest.fixture
def toy_root(tmp_path: Path, luigi_config: object) -> Path:
    """Runs A and B, then C: B again with nothing changed (the same artifacts, another id)."""
    root = tmp_path / "artifacts"
    make_run(root, A)
    make_run(root, B)
    make_run(root, B, run_id=RUN_C)
    return root


def compare(root: Path | str, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["compare", *args, "--artifacts", str(root)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def compare_json(root: Path | str, *args: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code, out, err = compare(root, *args, "--json", capsys=capsys)
    assert code == 0, err
    return dict(json.loads(out))


# ---- what the comparison says --------------------------------------------------------------------------------
def test_the_parameters_that_differ_are_shown_and_the_equal_ones_counted(toy_root: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = compare(toy_root, RUN_A, RUN_B, capsys=capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert any(line.split() == ["Train.epochs", "2", "5"] for line in lines), out
    # Every other parameter is equal in both runs: counted, not listed.
    assert "parameters: 1 differ, 8 equal; --all shows every one" in lines
    assert not any(line.split()[:1] == ["Train.batch_size"] for line in lines)
    assert "source fingerprints: differ" in lines
    [sources] = [line.split() for line in lines if line.split()[:1] == ["data"] and len(line.split()) == 3]
    assert sources[1].startswith(SOURCE_A[:20]) and sources[2].startswith(SOURCE_B[:20])  # long cells are cut
    code, out, _ = compare(toy_root, RUN_A, RUN_B, "--all", capsys=capsys)
    assert any(line.split() == ["Train.batch_size", "32", "32"] for line in out.splitlines()), out


def test_per_class_deltas_are_b_minus_a_with_the_largest_change_first(toy_root: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    result = compare_json(toy_root, RUN_A, RUN_B, capsys=capsys)
    rows = result["per_class"]["rows"]
    # dog: recall 0.9 -> 0.6, precision 0.6 -> 0.65; cat: recall 0.5 -> 0.75; bird unchanged.
    assert [row["class"] for row in rows] == ["dog", "cat", "bird"]
    dog, cat, bird = rows
    assert dog["recall_delta"] == pytest.approx(-0.3) and dog["precision_delta"] == pytest.approx(0.05)
    assert cat["recall_delta"] == pytest.approx(0.25) and cat["precision_delta"] == pytest.approx(0.0)
    assert (bird["recall_a"], bird["recall_b"], bird["recall_delta"]) == (0.7, 0.7, 0.0)
    metric = result["metrics"]["rows"][0]
    assert metric["metric"] == "top1_accuracy" and metric["dataset_metric"]
    assert metric["delta"] == pytest.approx((0.75 + 0.6 + 0.7 - 0.5 - 0.9 - 0.7) / 3)


def test_data_statistics_show_examples_moved_classes_pixels_and_warnings(toy_root: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = compare_json(toy_root, RUN_A, RUN_B, capsys=capsys)["data"]
    train = next(split for split in data["splits"] if split["split"] == "train")
    assert train["examples"] == {"a": 40, "b": 50, "delta": 10}
    # Shares of train: cat 10/40 -> 10/50, dog 10/40 -> 30/50, bird 20/40 -> 10/50.
    assert [(row["class"], round(row["delta"], 6)) for row in train["moved"]] == [
        ("dog", 0.35), ("bird", -0.3), ("cat", -0.05)]
    assert train["pixel_mean"] == {"a": [120.0], "b": [125.5]}
    test = next(split for split in data["splits"] if split["split"] == "test")
    assert test["moved"] == [] and test["examples"]["delta"] == 0
    assert data["warnings"] == {"a": A.warnings, "b": []}
    code, out, _ = compare(toy_root, RUN_A, RUN_B, capsys=capsys)
    assert "  moved most (train): dog 25.0% -> 60.0%; bird 50.0% -> 20.0%; cat 25.0% -> 20.0%" in out.splitlines()
    assert f"  A: warning: {A.warnings[0]}" in out.splitlines()


def test_artifact_keys_that_differ_are_listed(toy_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    artifacts = compare_json(toy_root, RUN_A, RUN_B, capsys=capsys)["artifacts"]
    assert [row["stage"] for row in artifacts["differ"]] == ["download", "datacheck", "train", "evaluate", "freeze"]
    same = compare_json(toy_root, RUN_B, RUN_C, capsys=capsys)
    assert same["artifacts"] == {"differ": [], "same": 5}
    assert same["parameters"]["differ"] == {} and same["sources"]["same"]
    assert all(row["recall_delta"] == 0 for row in same["per_class"]["rows"])


# ---- naming the runs -------------------------------------------------------------------------------------------
def test_a_unique_prefix_names_a_run(toy_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = compare_json(toy_root, "20260101", "20260102T12", capsys=capsys)
    assert (result["a"]["run_id"], result["b"]["run_id"]) == (RUN_A, RUN_C)
    assert result["a"]["name"] == "toy" and result["a"]["pipeline"] == "toy"


def test_an_unknown_run_id_is_one_line_naming_the_closest_ids(toy_root: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = compare(toy_root, RUN_A[:-1] + "b", RUN_B, capsys=capsys)
    assert code == 2 and out == ""
    [line] = err.splitlines()
    assert line.startswith(f"tfpipe: error: compare: no run id '{RUN_A[:-1]}b'")
    assert f"closest: {RUN_A} (toy)" in line and "Traceback" not in err


def test_an_ambiguous_prefix_is_one_line_naming_the_runs_it_starts(toy_root: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = compare(toy_root, RUN_A, "20260102", capsys=capsys)
    assert code == 2
    [line] = err.splitlines()
    assert "run id '20260102' is ambiguous" in line and RUN_B in line and RUN_C in line and RUN_A not in line


def test_a_folder_that_is_not_an_evaluate_artifact_is_refused(toy_root: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    train = next((toy_root / "train").iterdir())
    code, _, err = compare(toy_root, str(train), RUN_B, capsys=capsys)
    assert code == 2
    [line] = err.splitlines()
    assert f"{train} is a train artifact (Train)" in line
    code, _, err = compare(toy_root, str(toy_root / "train"), RUN_B, capsys=capsys)
    assert code == 2 and "without a readable artifact manifest" in err and len(err.splitlines()) == 1


# ---- evaluate artifacts, gone artifacts, --json ------------------------------------------------------------------
def test_two_evaluate_artifact_folders_compare_like_their_runs(toy_root: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    runs = compare_json(toy_root, RUN_A, RUN_B, capsys=capsys)
    folders = [next(p for p in (toy_root / "evaluate").iterdir() if json.loads((p / METRICS_FILE).read_text())
                    ["per_class"][0]["recall"] == recall) for recall in (0.5, 0.75)]
    artifacts = compare_json(toy_root, str(folders[0]), str(folders[1]), capsys=capsys)
    assert artifacts["a"]["kind"] == "evaluate artifact" and artifacts["a"]["label"] == str(folders[0].resolve())
    assert artifacts["parameters"]["differ"] == {"Train.epochs": {"a": "2", "b": "5"}}
    for section in ("per_class", "metrics", "data"):
        assert artifacts[section] == runs[section], section
    assert artifacts["sources"] == {"same": False, "a": {"data": SOURCE_A}, "b": {"data": SOURCE_B}}
    # What ran after an evaluation is not known to it: freeze is neither compared nor a difference.
    assert [row["stage"] for row in artifacts["artifacts"]["differ"]] == ["download", "datacheck", "train", "evaluate"]
    relative = compare_json(toy_root, f"evaluate/{folders[0].name}", str(folders[1]), capsys=capsys)
    assert relative["per_class"] == artifacts["per_class"]  # named under the root, as on a bucket
    mixed = compare_json(toy_root, str(folders[0]), RUN_A, capsys=capsys)
    assert mixed["parameters"]["differ"] == {} and mixed["parameters"]["unknown"] == ["Freeze.tolerance"]
    assert mixed["artifacts"]["differ"] == []


def test_artifacts_gc_removed_are_named_in_one_line_and_the_record_fills_in(toy_root: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    folders = run_artifacts(toy_root, A)  # A's folders, found again by their content keys
    for folder in folders[2:4]:  # train and evaluate
        shutil.rmtree(folder)
    code, out, err = compare(toy_root, RUN_A, RUN_B, capsys=capsys)
    assert code == 0, err
    notes = [line for line in out.splitlines() if "artifacts are gone" in line]
    assert notes == [f"A: 2 of this run's artifacts are gone (removed by tfpipe gc?): train/{folders[2].name}, "
                     f"evaluate/{folders[3].name}; shown is what its run record and remaining artifacts know"]
    result = compare_json(toy_root, RUN_A, RUN_B, capsys=capsys)
    assert result["per_class"] == {"rows": [], "unknown": ["a"]}
    assert result["metrics"]["rows"][0]["a"] == pytest.approx((0.5 + 0.9 + 0.7) / 3)  # the recorded metric
    # Train's parameters are unknown for A now, not a difference; the data summary comes from the record.
    assert "Train.epochs" in result["parameters"]["unknown"] and result["parameters"]["differ"] == {}
    assert [split["examples"]["a"] for split in result["data"]["splits"] if split["split"] == "train"] == [40]
    assert "per class: not known for A" in out


def test_json_round_trip_renders_the_printed_table(toy_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for extra in ((), ("--all",)):
        result = compare_json(toy_root, RUN_A, RUN_B, *extra, capsys=capsys)
        code, out, _ = compare(toy_root, RUN_A, RUN_B, *extra, capsys=capsys)
        assert code == 0
        assert render(result, show_all=bool(extra)) == out.splitlines()
        assert json.loads(json.dumps(result)) == result


# ---- history -------------------------------------------------------------------------------------------------
def test_history_prints_each_run_id_first_and_a_dash_for_older_records(toy_root: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    append_run(toy_root, "toy", {"time": "2025-12-31T00:00:00+0000", "exit_code": 0, "stages_ran": []})
    capsys.readouterr()
    assert cli.main(["history", "toy", "--artifacts", str(toy_root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["run", "id", "time"]
    assert [line.split()[0] for line in lines[1:]] == [RUN_A, RUN_B, RUN_C, "-"]
    assert cli.main(["history", "toy", "--artifacts", str(toy_root), "--json"]) == 0
    assert [run.get("run_id") for run in json.loads(capsys.readouterr().out)] == [RUN_A, RUN_B, RUN_C, None]


# ---- a real run, a bucket root --------------------------------------------------------------------------------------
def test_a_real_captcha_run_against_its_own_evaluate_artifact(captcha_tiny_run: tuple[Path, object], tmp_path: Path,
                                                              luigi_config: object,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The session's captcha run (a copy of its root): its record and manifests as `tfpipe run` wrote them."""
    root = tmp_path / "copy"
    shutil.copytree(captcha_tiny_run[0], root, symlinks=True)
    # The fixture's run first (other tests may rerun the shared root as a no-op, adding records after it).
    record = json.loads((root / "runs" / "captcha.jsonl").read_text().splitlines()[0])
    [evaluate] = [p for p in (root / "evaluate").iterdir() if not p.name.startswith(".")]
    result = compare_json(root, record["run_id"], str(evaluate), capsys=capsys)
    assert result["a"]["exit_code"] == 0 and result["b"]["pipeline"] == "captcha"
    assert result["parameters"]["differ"] == {} and len(result["parameters"]["equal"]) > 20
    assert {"GenerateCaptchas.count", "Train.epochs"} <= set(result["parameters"]["equal"])
    assert result["metrics"]["dataset_metric"] == "sequence_accuracy"
    assert all(row["delta"] == 0 for row in result["metrics"]["rows"])
    assert len(result["per_class"]["rows"]) == 26 and all(row["recall_delta"] == 0
                                                          for row in result["per_class"]["rows"])
    assert result["data"]["known"] == {"a": True, "b": True} and result["artifacts"]["differ"] == []


def test_runs_and_evaluate_artifacts_on_a_bucket_root(bucket_env: Any, tmp_path: Path, luigi_config: object,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Run records as objects, artifacts as commits: the same comparison as on a local root."""
    from tasks.store.opened import open_root

    local = tmp_path / "local"
    make_run(local, A)
    make_run(local, B)
    expected = compare_json(local, RUN_A, RUN_B, capsys=capsys)
    root = f"s3://{bucket_env.bucket}/cmp"
    artifacts = open_root(root).artifacts
    assert artifacts is not None
    for record in [json.loads(line) for line in (local / "runs" / "toy.jsonl").read_text().splitlines()]:
        prefixes = []
        for folder in map(Path, record["artifacts"]):
            family, key = folder.name.rsplit("-", 1)
            artifacts.push(ArtifactIdentity(family, folder.parent.name, key, 1, {}, {}), folder)
            prefixes.append(f"{folder.parent.name}/{folder.name}")
        append_run(artifacts.bucket, "toy", {**record, "artifacts": prefixes})
    result = compare_json(root, RUN_A, "20260102", capsys=capsys)
    for section in ("parameters", "sources", "data", "metrics", "per_class", "artifacts"):
        assert result[section] == expected[section], section
    evaluate = next(p for p in expected["artifacts"]["differ"] if p["stage"] == "evaluate")
    by_url = compare_json(root, artifacts.bucket.url(f"evaluate/{evaluate['a']}"), f"evaluate/{evaluate['b']}",
                          capsys=capsys)
    assert by_url["per_class"] == expected["per_class"]
    assert by_url["parameters"]["differ"] == {"Train.epochs": {"a": "2", "b": "5"}}
