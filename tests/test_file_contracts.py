"""File names are contracts (docs/ARCHITECTURE.md), checked on the source with ``ast`` (nothing is imported).

- A string literal naming an artifact file (``name.json``, ``.keras``, ``.txt``, ``.csv``, ``.png``, ``.html``,
  ``.pb``, ``.jsonl``, ``.npy``; also a part of an f-string such as ``f"{split}.rows.npy"``) appears in at most
  one product module (pipelines/, tasks/, models/): the others import its constant.
- A name declared in a ``files.py`` or ``layout.py`` module is declared once, and appears nowhere else as a
  literal: every reader imports the writer's constant.
- ``files.py`` modules are plain Python: they import nothing but other ``files.py``/``layout.py`` modules.

Docstrings may name files freely. Tests may too: they check the contract from outside.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRODUCT_ROOTS = ("pipelines", "tasks", "models")
DECLARING_MODULES = ("files.py", "layout.py")
FILE_NAME = re.compile(r"^[\w.-]*\w\.(?:json|keras|txt|csv|png|html|pb|jsonl|npy)$")
# Declared names checked everywhere besides file names: ones with a dot or an underscore (".work",
# "saved_model"), which no other string is. Plain words ("current", "images", "published") are also Luigi
# roles, manifest keys or dataset names, so a literal of one says nothing.
DISTINCTIVE = re.compile(r"[._]")

# Literals that look like artifact file names but are no contract between modules: (module, literal) -> why.
NOT_CONTRACTS: dict[tuple[str, str], str] = {
    ("tasks/store/roots.py", ".cache"): "the XDG default ~/.cache of a host's mirror, not the artifact root's .cache",
}

@dataclass(frozen=True)
class Literal:
    module: str  # repo-relative posix path
    line: int
    value: str
    in_fstring: bool


def _product_files() -> list[Path]:
    files = sorted(p for root in PRODUCT_ROOTS for p in (REPO / root).rglob("*.py"))
    assert files, f"no product modules found below {REPO}"
    return files


def _relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _is_declaring(module: str) -> bool:
    return module.rsplit("/", 1)[-1] in DECLARING_MODULES


def _docstring_ids(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _literals(source: str, module: str) -> list[Literal]:
    """Every string literal of ``source`` but docstrings; the constant parts of f-strings flagged as such."""
    tree = ast.parse(source)
    skipped = _docstring_ids(tree)
    in_fstring = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    return [Literal(module, node.lineno, node.value, id(node) in in_fstring) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped]


def _declarations(source: str, module: str) -> dict[str, int]:
    """``{value: line}`` of the module-level ``NAME = "literal"`` assignments of a declaring module."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Constant):
            if isinstance(node.value.value, str):
                found[node.value.value] = node.lineno
    return found


def _scan(files: dict[str, str]) -> tuple[list[Literal], dict[str, list[str]]]:
    """All literals of ``files`` (module -> source) and ``{declared name: [module:line, ...]}``."""
    literals: list[Literal] = []
    declared: dict[str, list[str]] = defaultdict(list)
    for module, source in files.items():
        literals += _literals(source, module)
        if _is_declaring(module):
            for value, line in _declarations(source, module).items():
                declared[value].append(f"{module}:{line}")
    return literals, declared


def _problems(files: dict[str, str]) -> list[str]:
    literals, declared = _scan(files)
    problems = [f"{name!r} declared more than once: {', '.join(places)}"
                for name, places in sorted(declared.items()) if len(places) > 1]
    owner = {name: places[0].split(":")[0] for name, places in declared.items()}
    modules_of: dict[str, set[str]] = defaultdict(set)
    for literal in literals:
        if FILE_NAME.match(literal.value) and (literal.module, literal.value) not in NOT_CONTRACTS:
            modules_of[literal.value].add(literal.module)
    for name, modules in sorted(modules_of.items()):
        if len(modules) > 1 and name not in owner:
            problems.append(f"{name!r} appears in {len(modules)} modules ({', '.join(sorted(modules))}): declare it "
                            "once in the writer's files.py and import it")
    for literal in literals:
        name, module = literal.value, literal.module
        checked = FILE_NAME.match(name) or (DISTINCTIVE.search(name) and not literal.in_fstring)
        if name in owner and module != owner[name] and checked and (module, name) not in NOT_CONTRACTS:
            problems.append(f"{module}:{literal.line}: literal {name!r}, declared in {owner[name]}: import it")
    return sorted(problems)


def _product_sources() -> dict[str, str]:
    return {_relative(path): path.read_text(encoding="utf-8") for path in _product_files()}


def test_artifact_file_names_are_declared_once_and_imported() -> None:
    problems = _problems(_product_sources())
    assert not problems, "\n".join(problems)


def test_the_exceptions_are_still_needed() -> None:
    """An entry of NOT_CONTRACTS whose literal is gone would hide the next one: remove it."""
    present = {(literal.module, literal.value) for literal in _scan(_product_sources())[0]}
    stale = sorted(entry for entry in NOT_CONTRACTS if entry not in present)
    assert not stale, "no longer in the code, remove from tests/test_file_contracts.py:\n" + "\n".join(map(str, stale))


def test_files_modules_are_plain_python() -> None:
    """A ``files.py`` imports nothing but other declaring modules: readers stay free of TensorFlow and Luigi."""
    problems = []
    for path in _product_files():
        if path.name != "files.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""] if not node.level else [f"(relative) {node.module}"]
            else:
                continue
            for module in modules:
                if module != "__future__" and module.rsplit(".", 1)[-1] not in ("files", "layout"):
                    problems.append(f"{_relative(path)}:{node.lineno}: imports {module}")
    assert not problems, "\n".join(problems)


def test_the_check_sees_repeats_declarations_and_fstring_parts() -> None:
    files = {
        "tasks/a/files.py": '"""Names."""\nMETRICS = "metrics.json"\nWORK = ".work"\nCURRENT = "current"\n',
        "tasks/b/task.py": ('"""Reads metrics.json (a docstring may name it)."""\n'
                            'x = root / "metrics.json"\ny = root / ".work"\nz = root / "current"\n'),
        "tasks/c/one.py": 'a = d / f"{split}.rows.npy"\nb = "table.csv"\nc = "report.html"\n',
        "tasks/c/two.py": 'a = d / f"{split}.rows.npy"\nb = "table.csv"\n',
        "tasks/d/files.py": 'C = "table.csv"\nM = "metrics.json"\n',
    }
    problems = _problems(files)
    assert problems == [
        "'.rows.npy' appears in 2 modules (tasks/c/one.py, tasks/c/two.py): declare it once in the writer's "
        "files.py and import it",
        "'metrics.json' declared more than once: tasks/a/files.py:2, tasks/d/files.py:2",
        "tasks/b/task.py:2: literal 'metrics.json', declared in tasks/a/files.py: import it",
        "tasks/b/task.py:3: literal '.work', declared in tasks/a/files.py: import it",
        "tasks/c/one.py:2: literal 'table.csv', declared in tasks/d/files.py: import it",
        "tasks/c/two.py:2: literal 'table.csv', declared in tasks/d/files.py: import it",
        "tasks/d/files.py:2: literal 'metrics.json', declared in tasks/a/files.py: import it",
    ]
