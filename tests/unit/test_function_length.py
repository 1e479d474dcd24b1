"""No function in the package is longer than 80 lines.

A decider that grows past a screen hides its rules; the policy's deciders are short pipelines of
named rules, and this keeps every function in ``operator/`` that way. A function over the limit
fails here, named with its file, line and length.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "tidepool"
MAX_LINES = 80


def long_functions(source: str) -> list[tuple[str, int, int]]:
    """(name, first line, length) of each function or method longer than ``MAX_LINES``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_LINES:
                found.append((node.name, node.lineno, length))
    return found


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        pytest.param("def f():\n" + "    x = 1\n" * 79, [], id="80-lines-allowed"),
        pytest.param("def f():\n" + "    x = 1\n" * 80, [("f", 1, 81)], id="81-lines-flagged"),
        pytest.param(
            "class C:\n    async def m(self):\n" + "        x = 1\n" * 85,
            [("m", 2, 86)],
            id="async-method-flagged",
        ),
    ],
)
def test_the_check_itself(source: str, flagged: list[tuple[str, int, int]]) -> None:
    assert long_functions(source) == flagged


def test_no_function_in_the_package_is_over_the_limit() -> None:
    over = [
        f"{path.relative_to(PACKAGE.parent)}:{line} {name} ({length} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        for name, line, length in long_functions(path.read_text())
    ]
    assert not over, f"functions over {MAX_LINES} lines:\n" + "\n".join(over)
