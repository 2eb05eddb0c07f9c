"""The pipelines: the stage chain, the registry, the ``tfpipe`` command line, and one module per dataset.

``pipelines.<dataset>`` (``luigi --module pipelines.mnist Mnist --local-scheduler``) is not a file: for every
registered dataset the finder below makes the module on import, holding its wrapper task. So adding a
dataset touches its own folder only (``tasks/datasets/<name>/``).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType


class PipelineModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``pipelines.<dataset>`` for a registered dataset that has no module file of its own."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        package, _, name = fullname.partition(".")
        if package != __name__ or not name or "." in name:
            return None
        from pipelines.registry import DATASETS

        return importlib.util.spec_from_loader(fullname, self) if name in DATASETS else None

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        from pipelines.stages import pipeline_task, register_wrappers

        register_wrappers()  # every dataset's wrapper, as each module file used to
        wrapper = pipeline_task(module.__name__.rpartition(".")[2])
        module.__doc__ = wrapper.__doc__
        setattr(module, wrapper.__name__, wrapper)


# Last on the path: a real module file (pipelines/cli.py, ...) is always found first.
if not any(isinstance(finder, PipelineModules) for finder in sys.meta_path):
    sys.meta_path.append(PipelineModules())
