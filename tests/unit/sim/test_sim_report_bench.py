"""Judging tidepool-auto against its targets: report.missed_targets, and the benchmark's rows,
table and exit code built on it."""

import math
from dataclasses import replace
from pathlib import Path

import pytest

from bench import bench_simulate as bench
from bench import rows
from tidepool.sim import engine, report


def _auto(missed: tuple[str, ...] = (), worst_p99_s: float = 0.0) -> report.PolicyResult:
    return report.PolicyResult(
        name="tidepool-auto",
        gpu_hours=1.0,
        spend=7.79,
        spend_shared=7.79,
        spend_dedicated=0.0,
        chargeback=0.0,
        replica_starts=0,
        worst_p99_wait_s=worst_p99_s,
        worst_tenant=missed[0] if missed else "a",
        tenants=16,
        missed=missed,
        requests=100.0,
        slo_p99_s=10.0,
    )


def _ratios(vs_static: float, vs_bound: float) -> report.Ratios:
    return report.Ratios(vs_static, 1.0, 1.0, 1.0, vs_lower_bound=vs_bound)


def test_targets_are_named_constants_used_by_the_ratio_line() -> None:
    assert (report.MAX_VS_BEST_STATIC, report.MAX_VS_LOWER_BOUND) == (1.10, 1.50)
    line = _ratios(1.0, 1.2).line()
    assert "best static hybrid = 1.000 (target <= 1.10)" in line
    assert "lower bound = 1.200 (target <= 1.50)" in line


@pytest.mark.parametrize(
    ("vs_static", "vs_bound", "missed", "expected"),
    [
        pytest.param(1.10, 1.50, (), [], id="at-both-targets"),
        pytest.param(1.2301, 1.50, (), ["auto/static 1.230 > 1.1"], id="over-best-static"),
        pytest.param(1.0, 1.51, (), ["auto/bound 1.510 > 1.5"], id="over-the-bound"),
        pytest.param(1.0, math.nan, (), ["auto/bound nan > 1.5"], id="no-bound-is-a-miss"),
        pytest.param(
            1.0,
            1.0,
            ("c", "a"),
            ["SLO: 2/16 tenants over 10s: c (worst, p99 45s), a"],
            id="slo-names-worst-first",
        ),
    ],
)
def test_missed_targets(
    vs_static: float, vs_bound: float, missed: tuple[str, ...], expected: list[str]
) -> None:
    auto = _auto(missed, worst_p99_s=45.0)
    assert report.missed_targets(auto, _ratios(vs_static, vs_bound)) == expected


def _row(trace: str, vs_static: float, misses: tuple[str, ...] = ()) -> bench.Row:
    return bench.Row(
        trace=trace,
        scale=1.0,
        prices="h100",
        hours=1.0,
        vs_static=vs_static,
        vs_bound=1.2,
        tenants=16,
        auto_ok=16 - sum(m.startswith("SLO") for m in misses),
        static_ok=16,
        worst_p99_s=0.0,
        auto_spend=110.0,
        static_spend=100.0,
        bound=91.6,
        seconds=3.0,
        misses=misses,
    )


def test_bench_bound_summary_says_where_best_static_is_over_the_bound_too() -> None:
    """auto/bound above 1.5 on two rows: best static is $100 on both, over bounds of $50 (2.00x)
    and $80 (1.25x); a row within the bound and a failed one count for neither."""
    far = replace(_row("far", 1.0), vs_bound=2.2, bound=50.0)
    near = replace(_row("near", 1.0), vs_bound=1.6, bound=80.0)
    within = _row("within", 1.0)
    failed = bench.failed_row(bench.Job(Path("/t/conv.csv"), 1.0, "h100", None), OSError("gone"))
    assert far.static_vs_bound == pytest.approx(2.0)
    assert bench.bound_summary([far, near, within, failed]) == (
        "auto over 1.5x the per-minute lower bound on 2 rows; best static in hindsight on 1 of"
        " them (2.00x to 2.00x)"
    )
    assert bench.bound_summary([within]) == (
        "auto within 1.5x the per-minute lower bound on every row"
    )
    assert math.isnan(failed.static_vs_bound)


def test_bench_exit_code_is_0_all_met_1_on_a_miss_3_when_a_row_failed() -> None:
    good = _row("good", 1.0)
    miss = _row("miss", 1.05, ("SLO: 1/16 tenants over 10s: m-large/7 (worst, p99 45s)",))
    failed = bench.failed_row(
        bench.Job(Path("/t/servegen_x.csv.gz"), 10.0, "a100", 2.0), MemoryError("out of\nmemory")
    )
    assert bench.exit_code([good]) == 0
    assert bench.exit_code([good, miss]) == rows.MISSED == 1
    assert bench.exit_code([good, miss, failed]) == rows.FAILED == 3
    assert (failed.trace, failed.scale, failed.prices) == ("servegen_x", 10.0, "a100")
    assert failed.status == "ERROR: MemoryError: out of memory"


def test_bench_table_prints_denominators_and_misses_worst_row_first() -> None:
    good = _row("good", 1.0)
    miss = _row("miss", 1.05, ("SLO: 1/16 tenants over 10s: m-large/7 (worst, p99 45s)",))
    over = _row("over", 1.2, ("auto/static 1.200 > 1.1",))
    failed = bench.failed_row(bench.Job(Path("/t/conv.csv"), 1.0, "h100", None), OSError("gone"))
    lines = bench.table([good, miss, over, failed]).splitlines()
    assert "static $" in lines[0]
    assert "bound $" in lines[0]
    assert "static/bound" in lines[0]
    assert "1.092" in lines[5]  # best static $100 over the bound's $91.6
    assert [line.split()[0] for line in lines[2:]] == ["conv", "over", "miss", "good"]
    assert lines[2].endswith("ERROR: OSError: gone")
    assert "nan" not in lines[2]
    assert lines[4].endswith("SLO: 1/16 tenants over 10s: m-large/7 (worst, p99 45s)")
    assert "$110" in lines[5]
    assert "$100" in lines[5]
    assert "$92" in lines[5]
    assert lines[5].endswith("  -")


def test_bench_without_the_traces_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--traces", str(tmp_path), "--quick"]) == rows.NO_TRACE == 2
    assert "missing" in capsys.readouterr().err


def test_bench_scaling_override_is_validated_as_the_api_server_would() -> None:
    cfg = bench.with_scaling(
        bench.config.for_prices("h100"), (bench.scaling_field("maxScaleUpRate=10"),)
    )
    assert cfg.scaling.max_scale_up_rate == 10.0
    with pytest.raises(ValueError, match="maxScaleUpRate"):
        bench.with_scaling(bench.config.for_prices("h100"), (("maxScaleUpRate", "1000"),))


def test_bench_refuses_a_bad_scaling_override_with_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert bench.main(["--scaling", "scaleDownStabilization=forever"]) == 2
    assert "scaleDownStabilization" in capsys.readouterr().err


def test_late_line_worked_example() -> None:
    late = engine.LateRequests(from_zero=300.0, while_loading=1200.0)
    assert report.late_line(late, 100_000.0, 10.0) == (
        "1.50% over 10s: 0.30% from zero, 1.20% while replicas loaded, 0.00% with none loading"
    )
    assert report.late_line(late, 0.0, 10.0).startswith("- over 10s")


def test_bench_sums_the_late_requests_of_the_tenants_over_the_slo_across_rows() -> None:
    # Two rows with a tenant over the SLO: 2,000 late of 50,000 requests and 1,000 of 50,000;
    # a row that fails adds nothing.
    miss = ("SLO: 1/16 tenants over 10s: a (worst, p99 45s)",)
    a = replace(
        _row("a", 1.0, miss),
        late=engine.LateRequests(from_zero=500.0, while_loading=1500.0),
        late_of=50_000.0,
        late_tenants=bench.by_main_cause([engine.LateRequests(500.0, 1500.0)]),
    )
    b = replace(
        _row("b", 1.0, miss),
        late=engine.LateRequests(none_loading=1000.0),
        late_of=5e4,
        late_tenants=(0, 0, 1),
        missed_by_all=1,
    )
    failed = bench.failed_row(bench.Job(Path("/t/conv.csv"), 1.0, "h100", None), OSError("gone"))
    assert bench.late_summary([a, b, failed]) == (
        "tenants over the SLO (2 rows): 3.00% over 10s: 0.50% from zero, 1.50% while replicas"
        " loaded, 1.00% with none loading; by the cause of most of a tenant's late requests:"
        " 0 from zero, 1 while replicas loaded, 1 with none loading; 1 over it under every"
        " policy compared (best static in hindsight and always-dedicated at the peak included)"
    )
    assert bench.by_main_cause(
        [engine.LateRequests(3.0, 1.0), engine.LateRequests(1.0, 1.0), engine.LateRequests()]
    ) == (2, 0, 0)
    assert bench.late_summary([_row("good", 1.0)]) == "no tenant over the SLO was late"


def test_bench_cold_start_override_reaches_the_engine() -> None:
    job = bench.Job(Path("/t/conv.csv"), 1.0, "a100", None, (("maxScaleUpRate", "3"),), 10.0)
    cfg = bench.job_config(job)
    assert (cfg.engine.cold_start_s, cfg.prices.name, cfg.scaling.max_scale_up_rate) == (
        10.0,
        "a100",
        3.0,
    )
    assert bench.job_config(replace(job, cold_start_s=None)).engine.cold_start_s == 60.0
