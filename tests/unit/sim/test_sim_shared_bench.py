"""The shared-engine benchmark's rows, table and exit code (e2e/bench/bench_shared.py)."""

import pytest

from bench import bench_shared as bench


def _row(
    pool: str,
    pool_vs_own: float,
    misses: tuple[str, ...] = (),
    tail_vs_own: float | None = 0.1,
    tail_floor: float | None = 0.05,
) -> bench.Row:
    return bench.Row(
        pool=pool,
        tenants=10,
        pool_vs_own=pool_vs_own,
        tail_vs_own=tail_vs_own,
        tail_floor=tail_floor,
        misses=misses,
    )


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param([_row("a", 0.5), _row("b", 0.9)], 0, id="every-target-met"),
        pytest.param([_row("a", 0.5), _row("b", 1.2, ("pool/own 1.200 > 1",))], 1, id="a-miss"),
        pytest.param(
            [_row("a", 1.2, ("pool/own 1.200 > 1",)), bench.Row(pool="b", error="boom")],
            3,
            id="a-failed-row-wins",
        ),
    ],
)
def test_exit_code(rows: list[bench.Row], expected: int) -> None:
    assert bench.exit_code(rows) == expected


def test_table_puts_failed_rows_then_the_worst_pool_first() -> None:
    rows = [
        _row("small", 0.4, tail_vs_own=0.1),
        _row("big", 1.3, ("pool/own 1.300 > 1",), tail_vs_own=0.3, tail_floor=0.28),
        bench.Row(pool="broken", error="ValueError: no traffic"),
        _row("few", 0.8, tail_vs_own=None, tail_floor=None),
    ]
    lines = bench.table(rows).splitlines()[2:]
    assert [line.split()[0] for line in lines] == ["broken", "big", "few", "small"]
    assert "ERROR: ValueError: no traffic" in lines[0]
    assert lines[1].split()[2:5] == ["0.300", "0.280", "1.300"]  # tail/own, its floor, pool/own
    assert lines[2].split()[2:4] == ["none", "none"]  # no long tail: nothing to judge


@pytest.mark.parametrize(
    ("held", "expected"),
    [
        pytest.param((), "-", id="nobody-missed"),
        pytest.param((0.0, 0.94, 0.06), "seats 94%, maxLoras 6%", id="seats-and-adapters"),
        pytest.param((0.001, 0.0, 0.999), "maxLoras 100%", id="a-trace-is-left-out"),
    ],
)
def test_why_held_names_the_causes_of_the_missing_tenants_waits(
    held: tuple[float, ...], expected: str
) -> None:
    assert bench.Row(pool="p", held_missed=held).why_held == expected
