"""The README's dataset table is the registry's (made by `python -m pipelines.registry`), and its two set-up
commands are the ones `.ci/run` and a new user run."""

from __future__ import annotations

import re

from pipelines.registry import dataset_table
from tests.conftest import REPO


def test_readme_dataset_table_is_made_from_the_registry() -> None:
    readme = (REPO / "README.md").read_text()
    match = re.search(r"<!-- datasets:[^\n]*-->\n(.*?)\n<!-- /datasets -->", readme, re.S)
    assert match, "README.md lost its dataset table markers"
    assert match.group(1) == dataset_table(), "README's table is stale: paste `python -m pipelines.registry`"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^    (python3 -m venv .*)$", readme, re.M)
    assert len(commands) == 2
    assert commands[1] in (REPO / ".ci" / "run").read_text()
    assert commands[0].endswith("tfpipe run captcha")
