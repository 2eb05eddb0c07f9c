"""The reliability suite: every test here is marked ``reliability``; the long ones are also ``slow``.

The default suite (``-m 'not slow'``) runs the fast part; ``pytest -m reliability`` runs the whole. With
``TFPIPE_RELIABILITY_LOG=FILE`` set, each scenario appends one JSON line to FILE through ``figures``;
``python bench/reliability_figures.py FILE`` turns them into the table of docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.reliability)


Record = Callable[..., None]


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Record:
    """``figures(category, outcome, **detail)``: one scenario's result. ``category`` is one of the rows of
    docs/RELIABILITY.md (``fault``, ``bad_input``, ``race``, ``fuzz``); ``outcome`` says what happened
    (``survived``, ``refused``, ``double_run``, ``crash``...)."""
    log = os.environ.get("TFPIPE_RELIABILITY_LOG")

    def record(category: str, outcome: str, **detail: object) -> None:
        if not log:
            return
        row = {"category": category, "outcome": outcome, "test": request.node.nodeid, "time": time.time(), **detail}
        with open(log, "a") as handle:
            handle.write(json.dumps(row, sort_keys=True, default=str) + "\n")

    return record
