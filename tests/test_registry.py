"""The registry drives the CLI and the wrapper tasks; the stage chain takes an optional stage without edits to
the others; resolved dataset defaults are part of Train's key; `--set` refuses what it cannot apply;
pipeline modules register every task class for Luigi's own command line, without TensorFlow."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import luigi
import numpy as np
import pytest

from pipelines import cli
from pipelines.registry import DATASETS, Dataset, get_dataset, register, unregister
from pipelines.stages import STAGES, Pipeline, Stage, build_chain, class_name, pipeline_task, stage_names
from tasks.data.shards import load_dataset_info
from tasks.formats.dataset_info import DatasetInfo, SplitInfo
from tasks.formats.examples import encode_keys, open_split_writer, save_class_names
from tasks.store.task import ArtifactTask
from tests.conftest import REPO


class DecodeToy(ArtifactTask):
    """A test-only dataset: bright and dark 8x8 squares, made from nothing."""

    stage = "decode"
    version = 1
    provides = "decoded"

    count = luigi.IntParameter(default=60)

    def build(self, out_dir: Path) -> dict[str, Any]:
        rng = np.random.default_rng(0)
        counts = {}
        for split, n in (("train", self.count), ("test", self.count // 3)):
            labels = np.arange(n, dtype=np.int32) % 2
            images = (labels[:, None, None, None] * 180 + rng.integers(0, 60, (n, 8, 8, 1))).astype(np.uint8)
            with open_split_writer(out_dir, split, (8, 8, 1), num_heads=1) as writer:
                writer.append(image=images, label=labels, key=encode_keys([f"{split}/{i}" for i in range(n)]))
            counts[split] = n
        save_class_names(out_dir, ["dark", "bright"])
        DatasetInfo("toy", (8, 8, 1), 2, 1, {s: SplitInfo(n) for s, n in counts.items()}).save(out_dir)
        return {"records": counts}


class CopyWithNote(ArtifactTask):
    """An optional stage between tfrecords and train: passes the examples on, under its own key."""

    stage = "annotate"
    version = 1
    reads = ("examples",)
    provides = "examples"

    note = luigi.Parameter(default="")

    def build(self, out_dir: Path) -> dict[str, Any]:
        shutil.copytree(self.input_dir("examples"), out_dir, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("MANIFEST.json"))
        return {"note": self.note}


TOY = Dataset(name="toy", title="test-only toy squares", decode=DecodeToy, model="mlp", image_size="8x8x1")


@pytest.fixture
def toy_dataset():  # noqa: ANN201 - yields the entry
    register(TOY)
    try:
        yield TOY
    finally:
        unregister(TOY.name)


def test_a_registered_dataset_appears_in_the_cli_and_runs(toy_dataset, tmp_path: Path, luigi_config) -> None:
    choices = cli.build_parser()._subparsers._group_actions[0].choices["run"]._actions  # noqa: SLF001
    pipeline_choices = next(a.choices for a in choices if a.dest == "pipeline")
    assert "toy" in pipeline_choices and set(DATASETS) <= set(pipeline_choices)
    root = tmp_path / "artifacts"
    assert cli.main(["run", "toy", "--until", "tfrecords", "--artifacts", str(root)]) == 0
    [shards] = list((root / "tfrecords").glob("TFRecords-*"))
    info = load_dataset_info(shards)
    assert info.dataset == "toy" and info.count("test") == 20
    assert sorted(p.name.split(".")[0] for p in shards.glob("*.tfrecord-*")) == [
        "toy-test", "toy-train", "toy-validation"]
    wrapper = pipeline_task("toy")
    assert wrapper.__name__ == "Toy" and issubclass(wrapper, Pipeline)


def test_unknown_dataset_is_refused_with_the_known_ones(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["status", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


class ToyWithNote(Pipeline):
    dataset_name = "toy"
    stages: ClassVar[tuple[Stage, ...]] = (*STAGES[:3], Stage(CopyWithNote, switch="note"), *STAGES[3:])
    note = luigi.Parameter(default="")


def test_an_optional_stage_slots_in_without_touching_the_others(toy_dataset, tmp_path: Path, luigi_config) -> None:
    luigi_config.set("Train", "epochs", "1")  # what is checked is the chain and its keys, not the training
    plain = ToyWithNote(until="freeze").chain()
    assert list(plain) == [name for name in stage_names() if name not in ("bottleneck", "publish")]  # switches off
    assert plain["train"][0].requires()["examples"] is plain["datacheck"][0]
    noted = ToyWithNote(until="freeze", note="hello").chain()
    assert list(noted) == ["download", "decode", "imagedirs", "tfrecords", "datacheck", "annotate", "train", "evaluate",
                           "freeze"]
    annotate = noted["annotate"][0]
    assert annotate.note == "hello" and annotate.requires()["examples"] is noted["datacheck"][0]
    for stage in ("train", "evaluate", "freeze"):
        assert noted[stage][0].requires()["examples"] is annotate
    assert noted["train"][0].artifact_key != plain["train"][0].artifact_key
    assert luigi.build([ToyWithNote(until="train", note="hello")], local_scheduler=True, log_level="WARNING")
    train = noted["train"][0]
    manifest = train.output().manifest()
    assert manifest["upstream"]["examples"] == annotate.artifact_key
    assert json.loads((annotate.artifact_dir / "MANIFEST.json").read_text())["note"] == "hello"


def test_resolved_dataset_defaults_are_part_of_the_train_key(toy_dataset, luigi_config) -> None:
    before = build_chain(TOY)["train"][0]
    register(dataclasses.replace(TOY, model="lenet5"))
    after = build_chain(get_dataset("toy"))["train"][0]
    assert before.model == after.model == ""  # the user set nothing
    assert before.training_plan().model_name() == "mlp" and after.training_plan().model_name() == "lenet5"
    assert before.artifact_key != after.artifact_key
    assert build_chain(get_dataset("toy"))["tfrecords"][0].artifact_key == build_chain(TOY)["tfrecords"][0].artifact_key


@pytest.mark.parametrize(("assignment", "message"), [
    ("Train.epoch=3", "Train has no parameter 'epoch'; did you mean 'epochs'?"),
    ("Trian.epochs=3", "no task family 'Trian'; did you mean 'Train'?"),
    ("Train.epochs=three", "not a valid value for Train.epochs"),
    ("Train.epochs", "--set expects Family.param=value"),
    ("TFRecords.dataset=other", "is set by the pipeline"),
    ("Download.source=/tmp", "is set by the pipeline"),
])
def test_set_refuses_what_it_cannot_apply(assignment: str, message: str, tmp_path: Path, luigi_config,
                                          capsys) -> None:
    code = cli.main(["run", "captcha", "--artifacts", str(tmp_path / "a"), "--set", assignment])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # refused before anything ran


def test_every_dataset_has_a_wrapper_module_and_a_luigi_family() -> None:
    """``pipelines.<name>`` exists for every dataset without a file of its own, and holds its wrapper task."""
    import importlib

    for name in DATASETS:
        assert not (REPO / "pipelines" / f"{name}.py").exists(), "the module is made from the registry"
        module = importlib.import_module(f"pipelines.{name}")
        wrapper = getattr(module, class_name(name))
        assert issubclass(wrapper, Pipeline) and wrapper.dataset_name == name
        assert wrapper.get_task_family() == class_name(name)


def test_a_dataset_folder_with_an_entry_is_a_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a dataset is adding a folder under tasks/datasets/ with an entry.py; nothing else lists it."""
    from tasks.datasets import catalog

    folders = catalog.dataset_folders()
    assert folders == sorted({d.decode.__module__.split(".")[2] for d in DATASETS.values()})
    assert list(catalog.find_datasets()) == list(DATASETS)

    # A new folder, copied from an existing dataset's entry under a new name, is found as it is.
    package = tmp_path / "tasks_datasets_extra"
    (package / "toy").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "toy" / "__init__.py").write_text("")
    (package / "toy" / "entry.py").write_text(
        "import dataclasses\n"
        "from pipelines.registry import DATASETS\n"
        "ENTRIES = (dataclasses.replace(DATASETS['mnist'], name='toy_digits'),)\n")
    (package / "notes").mkdir()  # a folder without entry.py is no dataset
    monkeypatch.setattr(catalog, "__file__", str(package / "catalog.py"))
    monkeypatch.setattr(catalog, "__package__", "tasks_datasets_extra")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert catalog.dataset_folders() == ["toy"]
    assert list(catalog.find_datasets()) == ["toy_digits"]


def test_pipeline_module_registers_every_task_without_tensorflow() -> None:
    code = ("import sys, pipelines.captcha; from luigi.task_register import Register; "
            "[Register.get_task_cls(n) for n in ('Captcha', 'Train', 'TFRecords', 'Evaluate', 'Freeze', "
            "'GenerateCaptchas', 'DecodeCaptcha', 'DecodeMnist', 'DecodeImages')]; "
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


def test_plain_luigi_accepts_task_flags_of_a_pipeline(tmp_path: Path) -> None:
    luigi_bin = Path(sys.executable).with_name("luigi")
    root = tmp_path / "artifacts"
    command = [str(luigi_bin), "--module", "pipelines.captcha", "Captcha", "--Train-epochs", "3",
               "--GenerateCaptchas-count", "30", "--until", "decode", "--ArtifactStore-root", str(root),
               "--local-scheduler"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    [generated] = list((root / "generate").glob("GenerateCaptchas-*"))
    assert json.loads((generated / "MANIFEST.json").read_text())["params"]["count"] == "30"


def test_params_lists_what_set_takes_with_defaults_and_refuses_an_unknown_family(capsys) -> None:
    assert cli.main(["params", "Train"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Train:\n")
    assert re.search(r"^  Train\.epochs = 0  passes over the training split", out, re.MULTILINE)
    assert "Train.dataset_defaults" not in out and "Train.upstream" not in out  # set by the pipeline
    assert cli.main(["params"]) == 0
    families = [line[:-1] for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    assert {"Train", "DecodeImages", "Bottleneck", "PublishGate"} <= set(families) and "ArtifactTask" not in families
    assert cli.main(["params", "Trian"]) == 2
    assert "no task family 'Trian'; did you mean 'Train'?" in capsys.readouterr().err
