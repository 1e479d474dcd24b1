"""Tests wait for the condition they stand for, not for a fixed time.

A fixed sleep is either too short on a loaded CI machine (a flaky test) or too long everywhere (a
slow suite). Where time passing *is* the point (an idle window running out, traffic flowing on
for a while), the sleep says so in a comment on its line or the line above; anything longer than
0.5 s without one fails here, naming the file and line.
"""

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
#: Longest sleep a test may take without saying what it waits for.
MAX_SILENT_SLEEP_SECONDS = 0.5


def _literal_seconds(call: ast.Call) -> float | None:
    if not call.args or not isinstance(call.args[0], ast.Constant):
        return None
    value = call.args[0].value
    return float(value) if isinstance(value, int | float) else None


def unexplained_sleeps(source: str) -> list[int]:
    """Line numbers of ``time.sleep``/``asyncio.sleep`` calls over the limit with no comment."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "sleep"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in {"time", "asyncio"}
        ):
            continue
        seconds = _literal_seconds(node)
        if seconds is None or seconds <= MAX_SILENT_SLEEP_SECONDS:
            continue
        here, above = lines[node.lineno - 1], lines[node.lineno - 2] if node.lineno > 1 else ""
        if "#" not in here and not above.strip().startswith("#"):
            found.append(node.lineno)
    return found


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("import time\ntime.sleep(3)\n", [2], id="silent-3s"),
        pytest.param("import time\ntime.sleep(3)  # past the idle window\n", [], id="same-line"),
        pytest.param("import time\n# the window runs out\ntime.sleep(3)\n", [], id="line-above"),
        pytest.param("import time\ntime.sleep(0.5)\n", [], id="short-poll"),
        pytest.param("async def f():\n    await asyncio.sleep(2)\n", [2], id="async"),
        pytest.param("import time\ntime.sleep(delay)\n", [], id="computed-delay"),
    ],
)
def test_the_check_itself(source: str, expected: list[int]) -> None:
    assert unexplained_sleeps(source) == expected


def test_no_test_sleeps_longer_than_half_a_second_without_saying_why() -> None:
    offenders = [
        f"{path.relative_to(TESTS)}:{line}"
        for path in sorted(TESTS.rglob("*.py"))
        for line in unexplained_sleeps(path.read_text())
    ]
    assert offenders == []
