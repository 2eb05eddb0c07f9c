"""Moving a task class, renaming a module or a role must not re-key a user's artifacts.

The keys of every stage of every registered pipeline (with every optional stage on) are pinned in
``tests/store/artifact_keys.json``. A key changes only on purpose, with the stage's ``version`` bumped; then
that file is updated in the same commit, and the review sees which stages rebuild. Computing keys imports
neither TensorFlow nor anything of a stage's build.
"""

from __future__ import annotations

import json
from pathlib import Path

import luigi
import pytest

from pipelines.registry import DATASETS, get_dataset
from pipelines.stages import build_chain

PINNED = Path(__file__).with_name("artifact_keys.json")
# Sources with no published digest are pinned by the user; these stand for that pin.
USER_PINS = {"hwdb": "train=sha256:" + "1" * 64 + ",test=sha256:" + "2" * 64}
# The backbone is keyed by its bytes and by the text of --backbone: fixed bytes under a relative name give a
# fixed key in any working directory.
BACKBONE_NAME = "backbone.keras"
BACKBONE_BYTES = b"tfpipe reference backbone: keyed by content\n"


def reference_keys() -> dict[str, dict[str, list[str]]]:
    """``{pipeline: {stage: [artifact keys]}}`` with publish on, and once more with a backbone file (written
    in the working directory)."""
    Path(BACKBONE_NAME).write_bytes(BACKBONE_BYTES)
    keys: dict[str, dict[str, list[str]]] = {}
    for name in DATASETS:
        for variant, switches in (("", {}), ("+backbone", {"backbone": BACKBONE_NAME})):
            chain = build_chain(get_dataset(name), checksum=USER_PINS.get(name, ""),
                                switches={"publish": True, "name": name, **switches})
            keys[name + variant] = {stage: [task.artifact_key for task in tasks] for stage, tasks in chain.items()}
    return keys


def test_every_stage_of_every_pipeline_keeps_its_artifact_key(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the stat cache of the backbone's fingerprint goes below ./artifacts
    luigi.task_register.Register.clear_instance_cache()
    pinned = json.loads(PINNED.read_text(encoding="utf-8"))
    now = reference_keys()
    assert set(now) == set(pinned), "a pipeline was added or removed: pin its keys in tests/store/artifact_keys.json"
    moved = [f"{pipeline} {stage}: {pinned[pipeline].get(stage)} -> {keys}"
             for pipeline, stages in now.items() for stage, keys in stages.items()
             if pinned[pipeline].get(stage) != keys]
    assert not moved, "artifact keys changed (users' artifacts would be rebuilt):\n" + "\n".join(moved)
