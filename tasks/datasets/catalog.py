"""Finds the datasets: every folder of ``tasks/datasets/`` with an ``entry.py`` declares its ``ENTRIES``.

Adding a dataset is adding a folder (codec, decode task, ``entry.py``); nothing outside it lists datasets.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from tasks.datasets.spec import Dataset

ENTRY_MODULE = "entry"


def dataset_folders() -> list[str]:
    """The names of the dataset folders (sub-packages holding an ``entry.py``), sorted."""
    here = Path(__file__).parent
    return sorted(info.name for info in pkgutil.iter_modules([str(here)])
                  if info.ispkg and (here / info.name / f"{ENTRY_MODULE}.py").is_file())


def find_datasets() -> dict[str, Dataset]:
    """Every declared dataset by name, folder by folder in name order, entries in their declared order."""
    found: dict[str, Dataset] = {}
    for folder in dataset_folders():
        module = importlib.import_module(f"{__package__}.{folder}.{ENTRY_MODULE}")
        for dataset in module.ENTRIES:
            if dataset.name in found:
                raise ValueError(f"dataset {dataset.name!r} is declared twice (tasks/datasets/{folder}/entry.py)")
            found[dataset.name] = dataset
    return found
