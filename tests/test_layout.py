"""Layout rules (README, "Layout"), checked on the source with ``ast`` (nothing is imported).

- Product code (pipelines/, tasks/, models/) never imports ``tests``: fakes live in ``tests/fakes/``.
- No product module's path names a fake.
- Nothing below ``tasks/*.py`` (tasks/formats, tasks/ops, models) imports Luigi.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRODUCT_ROOTS = ("pipelines", "tasks", "models")
LUIGI_FREE_ROOTS = ("tasks/formats", "tasks/ops", "models")


def _product_files() -> list[Path]:
    files = sorted(p for root in PRODUCT_ROOTS for p in (REPO / root).rglob("*.py"))
    assert files, f"no product modules found below {REPO}"
    return files


def _imported_modules(source: str, package: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source`` (a module of ``package``), at any depth.

    Relative imports are resolved against ``package``; ``from . import x`` also yields ``package.x``.
    """
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield node.lineno, module
            if not node.module:
                for alias in node.names:
                    yield node.lineno, f"{module}.{alias.name}"


def _package_of(path: Path) -> tuple[str, ...]:
    return path.relative_to(REPO).parent.parts


def _violations(files: list[Path], forbidden: str) -> list[str]:
    found = []
    for path in files:
        for line, module in _imported_modules(path.read_text(encoding="utf-8"), _package_of(path)):
            if module == forbidden or module.startswith(forbidden + "."):
                found.append(f"{path.relative_to(REPO)}:{line}: imports {module}")
    return found


def test_product_code_never_imports_tests() -> None:
    problems = _violations(_product_files(), "tests")
    assert not problems, "product code imports test support:\n" + "\n".join(problems)


def test_no_product_module_is_a_fake() -> None:
    fakes = [str(p.relative_to(REPO)) for p in _product_files() if "fake" in str(p.relative_to(REPO)).lower()]
    assert not fakes, "fakes belong in tests/fakes/, not product code:\n" + "\n".join(fakes)


@pytest.mark.parametrize("root", LUIGI_FREE_ROOTS)
def test_plain_stage_code_never_imports_luigi(root: str) -> None:
    files = sorted((REPO / root).rglob("*.py"))
    assert files, f"no modules below {root}"
    problems = _violations(files, "luigi")
    assert not problems, f"modules below {root} import Luigi:\n" + "\n".join(problems)


def test_the_checks_see_every_kind_of_import() -> None:
    """Plain, dotted, from-, relative and function-local imports are all found, with their lines."""
    source = (
        "import os\n"
        "from tests.fakes import cifar\n"
        "from .. import tests\n"
        "from ..ops.fetch import x\n"
        "\n"
        "def f():\n"
        "    import luigi.configuration\n"
    )
    found = sorted(_imported_modules(source, ("tasks", "formats")))
    assert found == [
        (1, "os"),
        (2, "tests.fakes"),
        (3, "tasks"),
        (3, "tasks.tests"),
        (4, "tasks.ops.fetch"),
        (7, "luigi.configuration"),
    ]


@pytest.mark.parametrize("root", ["tasks", "models"])
def test_imports_point_one_way_from_pipelines_to_tasks(root: str) -> None:
    """pipelines -> tasks -> plain stage code -> codecs/models: nothing below pipelines/ imports it."""
    files = sorted((REPO / root).rglob("*.py"))
    assert _violations(files, "pipelines") == []


def test_codecs_import_no_stage_code() -> None:
    files = sorted((REPO / "tasks" / "formats").rglob("*.py"))
    assert _violations(files, "tasks.ops") == [] and _violations(files, "models") == []
