"""The house rules that code can check: ARCHITECTURE.md lists every module with its own docstring line, and imports never run back up."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted([REPO_ROOT / "app.py", *REPO_ROOT.glob("core/**/*.py"), *REPO_ROOT.glob("ui/*.py"),
                  *REPO_ROOT.glob("pages/*.py")])


def first_docstring_line(path: Path) -> str:
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    return docstring.strip().splitlines()[0] if docstring.strip() else ""


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_module_says_what_it_is_and_the_map_lists_it(path):
    line = first_docstring_line(path)
    assert line, f"{path.name} has no docstring line saying what it is"
    relative = str(path.relative_to(REPO_ROOT))
    architecture = (REPO_ROOT / "ARCHITECTURE.md").read_text()
    entry = next((row for row in architecture.splitlines() if row.startswith(f"| `{relative}` |")), None)
    assert entry is not None, f"ARCHITECTURE.md does not list {relative}"
    assert line in entry, f"ARCHITECTURE.md's line for {relative} is not its docstring: {line!r}"


@pytest.mark.parametrize("path", [p for p in MODULES if "core" in p.parts], ids=lambda p: p.name)
def test_the_engine_never_imports_the_ui(path):
    bad = {m for m in imported_modules(path) if m.split(".")[0] in ("streamlit", "ui", "pages")}
    assert not bad, f"{path.name} imports {sorted(bad)}: core/ knows nothing of Streamlit"


@pytest.mark.parametrize("path", sorted(REPO_ROOT.glob("core/models/*.py")), ids=lambda p: p.name)
def test_models_know_no_files_runs_data_or_training(path):
    allowed = ("core.models", "core.settings")
    bad = {m for m in imported_modules(path)
           if m.startswith("core") and m != "core" and not m.startswith(allowed)}
    assert not bad, f"{path.name} imports {sorted(bad)}: models never import training, runs, data or the UI"


@pytest.mark.parametrize("path", sorted(REPO_ROOT.glob("pages/*.py")), ids=lambda p: p.name)
def test_pages_never_do_tensor_maths(path):
    bad = {m for m in imported_modules(path) if m.split(".")[0] in ("keras", "tensorflow")}
    assert not bad, f"{path.name} imports {sorted(bad)}: pages call core/, they never touch models directly"
