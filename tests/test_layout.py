"""Layout and layer rules (docs/ARCHITECTURE.md), checked on the source with ``ast`` (nothing is imported).

- Product code (pipelines/, tasks/, models/) never imports ``tests``: fakes live in ``tests/fakes/``.
- Luigi is imported only by task modules (``tasks/**/task.py``, ``tasks/**/*_task.py``) and ``pipelines/``.
- Rooms import downward only: ``tasks/<room>`` imports rooms of a lower rank (or its own), never a higher
  one; a dataset's folder imports no other dataset's; ``tasks/`` never imports ``pipelines/``, and
  ``models/`` imports neither.
- No folder of pipelines/, tasks/ or models/ holds more than 12 modules or 2,500 lines directly.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRODUCT_ROOTS = ("pipelines", "tasks", "models")
# tasks/<room>, lowest first: a room may import its own rank or lower ones.
ROOM_RANKS = {"formats": 0, "runtime": 0, "store": 1, "sources": 2, "datasets": 3, "data": 4, "datacheck": 5,
              "features": 6, "training": 7, "evaluation": 8, "export": 9, "modelcard": 9}
MAX_MODULES_PER_FOLDER = 12
MAX_LINES_PER_FOLDER = 2500


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


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    yield from _imported_modules(path.read_text(encoding="utf-8"), _package_of(path))


def _is_task_module(path: Path) -> bool:
    return path.name == "task.py" or path.name.endswith("_task.py")


def _room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "tasks" else None


def test_product_code_never_imports_tests() -> None:
    problems = _violations(_product_files(), "tests")
    assert not problems, "product code imports test support:\n" + "\n".join(problems)


def test_no_product_module_is_a_fake() -> None:
    fakes = [str(p.relative_to(REPO)) for p in _product_files() if "fake" in str(p.relative_to(REPO)).lower()]
    assert not fakes, "fakes belong in tests/fakes/, not product code:\n" + "\n".join(fakes)


def test_luigi_is_imported_only_by_task_modules_and_pipelines() -> None:
    plain = [p for p in _product_files() if p.parts[len(REPO.parts)] != "pipelines" and not _is_task_module(p)]
    problems = _violations(plain, "luigi")
    assert not problems, "plain code imports Luigi (move it to a task module):\n" + "\n".join(problems)


def test_every_room_of_tasks_has_a_rank() -> None:
    rooms = {p.name for p in (REPO / "tasks").iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert rooms == set(ROOM_RANKS), "a room of tasks/ was added or removed: rank it in ROOM_RANKS"


def test_rooms_import_downward_only() -> None:
    problems = []
    for path in sorted((REPO / "tasks").rglob("*.py")):
        room = _room_of(".".join(_package_of(path)))
        if room is None:
            continue
        for line, module in _imports(path):
            target = _room_of(module)
            if target is not None and ROOM_RANKS[target] > ROOM_RANKS[room]:
                problems.append(f"{path.relative_to(REPO)}:{line}: {room} imports {module} (a higher room)")
    assert not problems, "\n".join(problems)


def test_a_dataset_folder_imports_no_other_dataset() -> None:
    datasets = REPO / "tasks" / "datasets"
    folders = {p.name for p in datasets.iterdir() if (p / "__init__.py").is_file()}
    assert folders, "no dataset folders found"
    problems = []
    for path in sorted(datasets.glob("*/*.py")):
        own = path.parent.name
        for line, module in _imports(path):
            parts = module.split(".")
            if parts[:2] == ["tasks", "datasets"] and len(parts) > 2 and parts[2] in folders - {own}:
                problems.append(f"{path.relative_to(REPO)}:{line}: imports {module}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("root", "forbidden"), [("tasks", ("pipelines",)), ("models", ("pipelines", "tasks"))])
def test_lower_packages_never_import_higher_ones(root: str, forbidden: tuple[str, ...]) -> None:
    files = sorted((REPO / root).rglob("*.py"))
    problems = [problem for name in forbidden for problem in _violations(files, name)]
    assert not problems, "\n".join(problems)


def test_no_folder_is_crowded() -> None:
    problems = []
    folders = {p.parent for p in _product_files()}
    for folder in sorted(folders):
        modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        lines = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in modules)
        if len(modules) > MAX_MODULES_PER_FOLDER or lines > MAX_LINES_PER_FOLDER:
            problems.append(f"{folder.relative_to(REPO)}: {len(modules)} modules, {lines} lines")
    assert not problems, "split these folders into rooms:\n" + "\n".join(problems)


def test_the_checks_see_every_kind_of_import() -> None:
    """Plain, dotted, from-, relative and function-local imports are all found, with their lines."""
    source = (
        "import os\n"
        "from tests.fakes import cifar\n"
        "from .. import tests\n"
        "from ..sources.fetch import x\n"
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
        (4, "tasks.sources.fetch"),
        (7, "luigi.configuration"),
    ]
