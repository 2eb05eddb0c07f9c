"""tfpipe uses Luigi's public API only (a private name may change in any Luigi release), checked on the source
with ``ast``: no attribute starting with ``_`` is read from a name imported from luigi, no private name is
imported from it, and Luigi's internals that our own objects inherit are never touched by name.

And the one place that needed them, ``tfpipe run``'s failure lines, works with the public event API."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import luigi
import pytest

from pipelines.commands.run import failures_reported

REPO = Path(__file__).resolve().parents[1]
PRODUCT_ROOTS = ("pipelines", "tasks", "models")
# Luigi's internals reachable through our own subclasses (``self._event_callbacks``), found by name anywhere.
LUIGI_INTERNALS = frozenset({"_event_callbacks", "_reg", "_get_reg", "_set_reg", "_Register__instance_cache",
                             "_schedule_and_run", "_config_paths", "_get_param_visibilities", "_get_value",
                             "_WorkerSchedulerFactory", "_summary_dict", "_tasks_status"})


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _luigi_names(tree: ast.AST) -> set[str]:
    """The names a module binds to luigi or to something imported from it."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names
                         if alias.name.split(".")[0] == "luigi")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "luigi" and not node.level:
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def private_luigi_uses(source: str) -> Iterator[tuple[int, str]]:
    """``(line, what)`` for every use of a private Luigi name in ``source``."""
    tree = ast.parse(source)
    luigi_names = _luigi_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "luigi":
            for alias in node.names:
                if _is_private(alias.name) or any(_is_private(part) for part in node.module.split(".")):
                    yield node.lineno, f"from {node.module} import {alias.name}"
        elif isinstance(node, ast.Attribute) and _is_private(node.attr):
            if node.attr in LUIGI_INTERNALS or _root_name(node) in luigi_names:
                yield node.lineno, f"{ast.unparse(node)}"
        elif isinstance(node, ast.Constant) and node.value in LUIGI_INTERNALS:  # getattr(luigi.Task, "_reg")
            yield node.lineno, repr(node.value)


def _product_files() -> list[Path]:
    files = sorted(p for root in PRODUCT_ROOTS for p in (REPO / root).rglob("*.py"))
    assert files, f"no product modules found below {REPO}"
    return files


def test_product_code_uses_no_private_luigi_name() -> None:
    problems = [f"{path.relative_to(REPO)}:{line}: {what}" for path in _product_files()
                for line, what in private_luigi_uses(path.read_text(encoding="utf-8"))]
    assert not problems, "private Luigi API (use its public API):\n" + "\n".join(problems)


@pytest.mark.parametrize(("source", "found"), [
    ("import luigi\nluigi.Task._event_callbacks.get(luigi.Task)", "luigi.Task._event_callbacks"),
    ("import luigi.interface\nluigi.interface._schedule_and_run([])", "luigi.interface._schedule_and_run"),
    ("from luigi.task_register import Register\nRegister._get_reg()", "Register._get_reg"),
    ("import luigi as lg\nlg.Task().x._y", "lg.Task().x._y"),
    ("from luigi.execution_summary import _summary_dict", "from luigi.execution_summary import _summary_dict"),
    ("class T:\n    def f(self):\n        return self._event_callbacks", "self._event_callbacks"),
    ("getattr(object, '_reg')", "'_reg'"),
])
def test_the_check_sees_every_kind_of_private_use(source: str, found: str) -> None:
    assert [what for _, what in private_luigi_uses(source)] == [found]


def test_the_check_leaves_our_own_private_names_alone() -> None:
    source = "import luigi\nclass T(luigi.Task):\n    def run(self):\n        self._cache = _f(luigi.Task.__name__)"
    assert list(private_luigi_uses(source)) == []


class FailsOnPurpose(luigi.Task):
    attempt = luigi.IntParameter()

    def complete(self) -> bool:
        return False

    def run(self) -> None:
        raise ValueError(f"attempt {self.attempt} failed on purpose")


def test_failures_are_reported_during_a_run_only(luigi_config) -> None:
    luigi_config.set("worker", "keep_alive", "false")  # else the worker waits for a retry (tasks/store/task.py)
    with failures_reported() as failures:
        luigi.build([FailsOnPurpose(attempt=1)], local_scheduler=True)
    assert failures == ["FailsOnPurpose failed: attempt 1 failed on purpose"]
    luigi.build([FailsOnPurpose(attempt=2)], local_scheduler=True)  # after the run: its handler is gone
    assert failures == ["FailsOnPurpose failed: attempt 1 failed on purpose"]
