"""Shared pytest fixtures: an isolated artifact root and Luigi config per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"


@pytest.fixture
def luigi_config(tmp_path: Path) -> Iterator[object]:
    """A fresh Luigi config holding the project's luigi.cfg, with the artifact root in tmp_path."""
    import luigi.configuration

    config = luigi.configuration.get_config()
    saved = {s: dict(config.items(s)) for s in config.sections()}
    for section in config.sections():
        config.remove_section(section)
    config.read(str(REPO / "luigi.cfg"))
    config.set("ArtifactStore", "root", str(tmp_path / "artifacts"))
    yield config
    for section in config.sections():
        config.remove_section(section)
    for section, items in saved.items():
        config.add_section(section)
        for key, value in items.items():
            config.set(section, key, value)
