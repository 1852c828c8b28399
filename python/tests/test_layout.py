"""The SDK's own files: each says what it owns, none grows past what one concern needs, and
what a Wasm guest imports is what ``symbiont build-wasm`` puts in it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from symbiont import _componentize

SDK = Path(_componentize.__file__).resolve().parent
MODULES = sorted(SDK.glob("*.py"))
#: A file past this many lines holds more than one concern (STYLE.md, "Layout").
MOST_LINES = 500


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_every_module_says_what_it_owns(path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring and docstring.strip(), f"{path.name} has no opening docstring"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_module_is_over_500_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MOST_LINES, path.name


def test_a_guest_gets_every_sdk_file_it_imports() -> None:
    """From ``symbiont/__init__.py`` and the guest's shim, what is imported outside an
    ``if TYPE_CHECKING`` block or a function (imports there are lazy: ``wasm`` and its
    like are not for the sandbox) is among the files a component is built with."""
    shipped = set(_componentize._SDK_FILES)
    todo, seen = ["__init__.py", "_guest.py"], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((SDK / name).read_text())
        for node in tree.body:  # module level only: not TYPE_CHECKING, not functions
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = (
                    [node.module.split(".")[0]]
                    if node.module
                    else [alias.name for alias in node.names]
                )
                for module in names:
                    assert f"{module}.py" in shipped, f"{name} imports {module}"
                    todo.append(f"{module}.py")
    assert "_health.py" in seen
