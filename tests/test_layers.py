"""The layers as the folders' docstrings state them: every import inside the package (module level or
inside a function) points to a folder that the importing folder's ``May import:`` line allows."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "semcat_kit"
#: bottom to top: "every layer below X" means the folders before X in this list
ORDER = ["_core", "datasets", "encode", "labels", "judge", "learn", "experiments", "see", "ship", "orchestrate",
         "cli"]


def _allowed(folder: str) -> set[str]:
    doc = ast.get_docstring(ast.parse((PKG / folder / "__init__.py").read_text())) or ""
    line = next((ln for ln in doc.splitlines() if ln.startswith("May import:")), None)
    assert line, f"semcat_kit/{folder}/__init__.py: its docstring has no 'May import:' line"
    if "everything" in line:
        return set(ORDER)
    below = re.search(r"every layer below (?:``(\w+)``|it)", line)
    if below:
        top = below.group(1) or folder
        return set(ORDER[:ORDER.index(top)]) | {folder}
    return set(re.findall(r"``(\w+)``", line)) | {folder}


def _imports(path: Path, folder: str):
    """(line, folder imported) for every import of another part of semcat_kit in ``path``."""
    tree = ast.parse(path.read_text())
    depth = len(path.relative_to(PKG).parts) - 1           # 1 for semcat_kit/<folder>/x.py
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level > depth:
                    parts = (node.module or "").split(".")
                    yield node.lineno, parts[0] if parts[0] else None
                elif node.level == depth and node.module is None:
                    continue
            elif node.module and node.module.startswith("semcat_kit."):
                yield node.lineno, node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("semcat_kit."):
                    yield node.lineno, a.name.split(".")[1]


@pytest.mark.parametrize("folder", ORDER)
def test_every_import_points_where_the_folder_may_import(folder):
    allowed = _allowed(folder)
    bad = []
    for path in sorted((PKG / folder).rglob("*.py")):
        for line, target in _imports(path, folder):
            if target is None or target in ("_version",):      # the package root's version module
                continue
            if target in ORDER and target not in allowed:
                bad.append(f"{path.relative_to(PKG.parent)}:{line} imports {target}")
    assert not bad, f"semcat_kit/{folder} may import {sorted(allowed)}; found:\n" + "\n".join(bad)


def test_the_order_covers_every_folder():
    folders = {p.parent.name for p in PKG.glob("*/__init__.py")}
    assert folders == set(ORDER), folders ^ set(ORDER)
