"""tidepool simulate / tidepool advise end to end, on small slices of the shared traces."""

import argparse
from pathlib import Path

import pytest

from tidepool.sim import advise, config, simulate, traces

#: ``shared/`` sits beside the repository (as on the dev machines and in CI).
TRACES = Path(__file__).resolve().parents[4] / "shared" / "traces"
CONV = TRACES / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv"
CODE = TRACES / "azure_llm_2023" / "AzureLLMInferenceTrace_code.csv"
SERVEGEN_DAY0 = TRACES / "servegen_alibaba" / "servegen_mlarge_day0_subset.csv.gz"


def parse(module: object, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.configure(parser)  # type: ignore[attr-defined]
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(
            ["--hourly-rate", "4.00", "--hours", "720", "--price-per-request", "0.002"],
            "= 1,440,000 requests",
            id="seed-004-break-even-1440000",
        ),
        pytest.param(
            [
                "--requests-per-day",
                "10000",
                "--tokens-per-request",
                "110",
                "--price-per-1k-tokens",
                "0.0002",
                "--hourly-rate",
                "1.21",
                "--hours-per-day",
                "16",
            ],
            "= $0.22/day; dedicated $1.21/h x 16 h = $19.36/day; 88x",
            id="seed-003-88x",
        ),
        pytest.param(
            ["--hourly-rate", "7.79", "--price-per-million-tokens", "0.20"],
            "= 649,166 tokens/min",
            id="seed-002-crossover-649166",
        ),
    ],
)
def test_advise_reproduces_the_seeds(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert advise.run(parse(advise, argv)) == 0
    assert expected in capsys.readouterr().out


def test_advise_without_input_explains(capsys: pytest.CaptureFixture[str]) -> None:
    assert advise.run(parse(advise, [])) == 2
    assert "give a request log" in capsys.readouterr().err


def test_advise_accepts_plain_header_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "log.csv"
    rows = "".join(f"{s},1000,200\n" for s in range(0, 3600, 2))
    log.write_text("timestamp,input_tokens,output_tokens\n" + rows)
    assert advise.run(parse(advise, [str(log)])) == 0
    out = capsys.readouterr().out
    assert "1,800 requests over 1.00 h" in out
    assert "recommended mode: serverless" in out
    assert "projected monthly cost" in out


def test_bad_log_names_the_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "bad.csv"
    log.write_text("when,in,out\n1,2,3\n")
    assert advise.run(parse(advise, [str(log)])) == 2
    assert "no column named" in capsys.readouterr().err


def test_advise_conv_trace_recommends_dedicated(capsys: pytest.CaptureFixture[str]) -> None:
    assert advise.run(parse(advise, [str(CONV)])) == 0
    assert "recommended mode: dedicated" in capsys.readouterr().out


def test_simulate_program_prints_table_and_writes_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(simulate, [str(CODE), "--hours", "0.25", "--out", str(tmp_path)])
    assert simulate.run(args) == 0
    out = capsys.readouterr()
    for policy in simulate.POLICIES:
        assert policy in out.out
    assert "tidepool-auto cost / best static hybrid" in out.out
    assert "[1/1]" in out.err  # progress on stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "AzureLLMInferenceTrace_code_cost.png",
        "AzureLLMInferenceTrace_code_replicas.png",
        "AzureLLMInferenceTrace_code_traffic.png",
    ]


def test_servegen_slice_loads_top_and_sample() -> None:
    cfg = config.SimConfig()
    w = traces.load(SERVEGEN_DAY0, cfg.engine, hours=1.0, top=2, sample=1)
    assert len(w.tenants) == 3
    assert w.steps == 720
    assert all(t.requests > 0 for t in w.tenants[:2])


def test_compare_on_conv_slice_meets_slo_and_orders_costs() -> None:
    cfg = config.SimConfig()
    w = traces.load(CONV, cfg.engine, hours=0.5)
    cmp = simulate.compare(w, cfg)
    r = cmp.results
    assert r["tidepool-auto"].meets_slo
    assert (
        r["best-static-hybrid"].cost
        <= min(r["always-serverless"].cost, r["always-dedicated"].cost) + 1e-9
    )
    assert r["always-serverless"].dedicated_cost == 0.0
    assert r["always-dedicated"].token_cost == 0.0


def test_pool_prices_flag(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(simulate, ["x.csv", "--pool-prices", "2.5,0.3"])
    cfg = simulate.build_config(args)
    assert (cfg.prices.dedicated_per_gpu_hour, cfg.prices.shared_per_million_tokens) == (2.5, 0.3)
    with pytest.raises(SystemExit, match="--pool-prices"):
        simulate.build_config(parse(simulate, ["x.csv", "--pool-prices", "4"]))
