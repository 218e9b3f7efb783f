"""The test suite's own layout: shared helpers live in tests/support, and no test module
imports another test module or conftest.py (pytest alone loads those)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Every module a file imports, anywhere in it, as an absolute dotted name; for
    ``from a import b`` both ``a`` and ``a.b`` (``b`` may be a module)."""
    package = ".".join(("tests", *path.parent.relative_to(TESTS).parts))
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def forbidden(module: str) -> bool:
    parts = module.split(".")
    return (
        len(parts) > 1
        and parts[0] == "tests"
        and (parts[1] == "conftest" or parts[1].startswith("test_"))
    )


def test_no_test_module_or_helper_imports_a_test_module_or_conftest() -> None:
    files = sorted([*TESTS.glob("test_*.py"), *(TESTS / "support").rglob("*.py")])
    assert Path(__file__).resolve() in files
    assert TESTS / "support" / "__init__.py" in files
    offences = sorted(
        {
            f"{path.relative_to(TESTS.parent)}:{line}: imports {'.'.join(module.split('.')[:2])}"
            for path in files
            for line, module in imported_modules(path)
            if forbidden(module)
        }
    )
    assert not offences, "import helpers from tests.support instead:\n" + "\n".join(offences)
