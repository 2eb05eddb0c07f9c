"""Tiny datasets for every pipeline, the tfpipe command run through the injection harness, and reference runs.

Each pipeline's source is written once per session in its real byte format; a reference run builds every stage
uninterrupted, through ``tests.reliability.inject`` with tracing on (no fault armed), which records how many
write events each stage's build makes (the fault scenarios aim "mid-write" at the middle one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import REPO

# Every stage of the default chain, by its --until name; captchas keep their source stage in generate/.
STAGES = ("download", "decode", "imagedirs", "tfrecords", "train", "evaluate", "freeze")
TINY_TRAIN = ("--set", "Train.model=mlp", "--set", "Train.epochs=2", "--set", "Train.batch_size=32")
TIMEOUT_S = 900  # one tfpipe subprocess, on a busy 2-core machine
# The tree whose code the subprocesses run: this checkout, or (TFPIPE_FAULT_CODE) a snapshot of it, so that a long
# run is not spoiled by edits made meanwhile in a shared checkout (a changed code version changes the keys).
CODE = Path(os.environ.get("TFPIPE_FAULT_CODE") or REPO)


@dataclass
class Pipeline:
    """How to run one pipeline on a tiny source: ``make(dir)`` writes the source and returns its CLI arguments."""

    name: str
    make: Callable[[Path], list[str]]
    mirror: Callable[[Path], dict[str, dict[str, list[str]]]] | None = None  # loopback official sources
    store_stage: dict[str, str] = field(default_factory=dict)  # --until name -> directory, where they differ

    def directory(self, stage: str) -> str:
        return self.store_stage.get(stage, stage)


def _cifar(spec_name: str) -> Callable[[Path], list[str]]:
    def make(directory: Path) -> list[str]:
        from tasks.datasets.cifar.codec import CIFAR10, CIFAR100
        from tests.fakes.cifar import write_cifar_archive

        spec = CIFAR10 if spec_name == "cifar10" else CIFAR100
        directory.mkdir(parents=True, exist_ok=True)
        archive = directory / spec.archive_name
        write_cifar_archive(archive, spec, 200, 60, seed=7)
        return ["--source", str(archive)]

    return make


def _hwdb(directory: Path) -> list[str]:
    from tests.fakes.hwdb import DEFAULT_CHARS, write_fake_hwdb

    fake = write_fake_hwdb(directory / "src", chars=DEFAULT_CHARS[:8], per_char_per_file=4, seed=3)
    archive = directory / "hwdb.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(fake.root.rglob("*.gnt")):
            zipped.write(path, f"HWDB1.1/{path.relative_to(fake.root).as_posix()}")
    return ["--source", str(archive), "--set", "DecodeHwdb.image_size=16"]


def _mnist(directory: Path) -> list[str]:
    from tests.fakes.idx import write_fake_mnist

    write_fake_mnist(directory / "www", n_train=160, n_test=40, seed=1)
    return []  # the official files, from the loopback mirror


def mnist_mirror(base_url: str, directory: Path) -> dict[str, dict[str, list[str]]]:
    """mnist's four official sources re-pointed at ``base_url`` (serving ``directory/www``), pinned by sha256."""
    from pipelines.registry import get_dataset
    from tests.reliability.faults.compare import sha256

    roles = {}
    for src in get_dataset("mnist").sources:
        name = src.url.rsplit("/", 1)[1]
        roles[src.role] = [base_url + name, "sha256:" + sha256(directory / "www" / name)]
    return {"mnist": roles}


def _fashion(directory: Path) -> list[str]:
    from tests.fakes.idx import write_fake_mnist

    write_fake_mnist(directory / "fashion", n_train=160, n_test=40, gzip=False, fashion=True, seed=2)
    return ["--source", str(directory / "fashion")]


def _images(directory: Path) -> list[str]:
    from tests.fakes.images import write_class_folder

    write_class_folder(directory / "photos", {"disc": 24, "square": 24, "cross": 24}, size=(40, 32), seed=5)
    archive = directory / "photos.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(directory / "photos", arcname="photos")
    return ["--source", str(archive), "--set", "DecodeImages.image_size=24"]


def _captcha(directory: Path) -> list[str]:
    return ["--set", "GenerateCaptchas.count=120"]


PIPELINES: dict[str, Pipeline] = {p.name: p for p in (
    Pipeline("captcha", _captcha, store_stage={"download": "generate"}),
    Pipeline("cifar10", _cifar("cifar10")),
    Pipeline("cifar100", _cifar("cifar100")),
    Pipeline("hwdb", _hwdb),
    Pipeline("mnist", _mnist),
    Pipeline("fashion_mnist", _fashion),
    Pipeline("images", _images),
)}
# A local folder is read in place: its download stage writes nothing but its manifest, so it has no mid-write.
NO_WRITES = {("fashion_mnist", "download")}


def base_env(root: Path, mirror: dict | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(CODE), "TF_CPP_MIN_LOG_LEVEL": "3", "TFPIPE_FAULT_ROOT": str(root),
           "PYTHONHASHSEED": "0"}
    for name in [k for k in env if k.startswith("TFPIPE_FAULT_") and k != "TFPIPE_FAULT_ROOT"]:
        del env[name]
    if mirror:
        env["TFPIPE_FAULT_MIRROR"] = json.dumps(mirror)
    return env


def tfpipe_command(command: str, pipeline: str, args: list[str], root: Path, until: str = "") -> list[str]:
    """``python -m tests.reliability.inject <command> <pipeline> ...``: the real CLI, hooks armed by env only."""
    argv = [sys.executable, "-m", "tests.reliability.inject", command, pipeline, *args, "--artifacts", str(root),
            *TINY_TRAIN]  # status and explain key the stages as run does: the same --set
    return argv + (["--until", until] if until else [])


@dataclass
class Reference:
    """An uninterrupted run: its root, the arguments it ran with, and each stage's write events."""

    pipeline: Pipeline
    root: Path
    args: list[str]
    mirror: dict | None
    events: dict[str, int]  # stage directory -> write events of its (first) build


def build_reference(pipeline: Pipeline, directory: Path, args: list[str], mirror: dict | None,
                    until: str = "") -> Reference:
    root = directory / "reference"
    trace = directory / "trace.jsonl"
    env = {**base_env(root, mirror), "TFPIPE_FAULT_TRACE": str(trace)}
    done = subprocess.run(tfpipe_command("run", pipeline.name, args, root, until), cwd=CODE, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"reference run of {pipeline.name} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    events: dict[str, int] = {}
    for line in trace.read_text().splitlines():
        row = json.loads(line)
        events.setdefault(row["stage"], row["events"])
    return Reference(pipeline, root, args, mirror, events)


def downstream(stage: str) -> tuple[str, ...]:
    """``stage`` and every stage after it."""
    return STAGES[STAGES.index(stage):]


def copy_without(reference: Reference, target: Path, stage: str) -> None:
    """The reference root without ``stage`` and what follows it, nor leases: only ``stage`` is left to build."""
    removed = {reference.pipeline.directory(s) for s in downstream(stage)} | {".leases", "runs"}
    shutil.copytree(reference.root, target, symlinks=True,
                    ignore=lambda d, names: [n for n in names if Path(d) == reference.root and n in removed])
