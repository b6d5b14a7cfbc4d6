"""The house's doors: the protocol does no I/O, and every module says what it is for."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "postroom"
FORBIDDEN_IN_PROTOCOL = {"asyncio", "socket", "ssl", "time", "os", "logging", "selectors", "threading"}


@pytest.mark.parametrize("path", sorted((SRC / "smtp").glob("*.py")), ids=lambda p: p.name)
def test_protocol_module_imports_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top not in FORBIDDEN_IN_PROTOCOL, f"{path.name} imports {name}"
            if top == "postroom":
                assert name.startswith("postroom.smtp"), f"{path.name} imports {name}"


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_every_module_has_a_docstring(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    assert ast.get_docstring(tree), f"{path} has no module docstring saying its one job"
