"""tidepool simulate / tidepool advise end to end, on small slices of the shared traces."""

import argparse
import gzip
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tidepool import cli
from tidepool.api.v1alpha1 import MAX_REPLICAS
from tidepool.sim import advise, baselines, config, engine, flags, plots, report, simulate, traces

#: ``shared/`` sits beside the repository (as on the dev machines and in CI).
TRACES = Path(__file__).resolve().parents[4] / "shared" / "traces"
CONV = TRACES / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv"
CODE = TRACES / "azure_llm_2023" / "AzureLLMInferenceTrace_code.csv"
SERVEGEN_DAY0 = TRACES / "servegen_alibaba" / "servegen_mlarge_day0_subset.csv.gz"


def parse(module: object, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.configure(parser)  # type: ignore[attr-defined]
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """The ``tidepool`` command in-process; argparse's refusals exit, so catch them."""
    try:
        return cli.main(argv)
    except SystemExit as stop:
        return int(stop.code or 0)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(
            ["--hourly-rate", "4.00", "--hours", "720", "--price-per-request", "0.002"],
            "= 1,440,000 requests",
            id="break-even-1440000",
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
            id="predibase-88x",
        ),
        pytest.param(
            ["--hourly-rate", "7.79", "--price-per-million-tokens", "0.20"],
            "= 649,166 tokens/min",
            id="fireworks-crossover-649166",
        ),
    ],
)
def test_advise_reproduces_the_worked_examples(
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
    assert "projected monthly GPU spend" in out
    # 0.5 requests/s x 1,200 tokens x 730 h x 3,600 s at $0.20/1M: $315.36 billed, not spent.
    assert "chargeback: $315/month" in out


def test_advise_sizes_replicas_with_the_price_sets_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    # The calibrated capacity model: an H100 prefills 32,517 tokens/s, an A100 312/989 of that.
    assert main(["advise", str(CODE)]) == 0
    assert "H100-80GB-HBM3 replica (1 GPU) does 32,517 prompt + 3,600 output" in (
        capsys.readouterr().out
    )
    assert main(["advise", str(CODE), "--prices", "a100"]) == 0
    out = capsys.readouterr().out
    assert "A100-SXM4-80GB replica (1 GPU) does 10,258 prompt + 2,191 output" in out
    assert "$4.00/GPU-h shared" in out


def test_bad_log_names_the_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "bad.csv"
    log.write_text("when,in,out\n1,2,3\n")
    assert advise.run(parse(advise, [str(log)])) == 2
    assert "no column named" in capsys.readouterr().err


def test_advise_conv_trace_prints_spend_and_chargeback(capsys: pytest.CaptureFixture[str]) -> None:
    assert advise.run(parse(advise, [str(CONV)])) == 0
    out = capsys.readouterr().out
    # Busiest minute 13,266 tokens/s on one H100: 0.52 busy, above the 0.50 promotion
    # threshold, and one dedicated replica spends what serverless does ($5,687/month).
    assert "recommended mode: dedicated (Promoted): promoted to dedicated: spends no more" in out
    assert "utilization 0.52" in out
    for option in ("serverless", "dedicated", "hybrid"):
        assert f"  {option} " in out
    assert "(not part of spend)" in out


def test_simulate_program_prints_table_and_writes_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(simulate, [str(CODE), "--hours", "0.25", "--out", str(tmp_path)])
    assert simulate.run(args) == 0
    out = capsys.readouterr()
    for policy in simulate.POLICIES:
        assert policy in out.out
    for words in ("spend", "chargeback", "SLO ok", report.BOUND_NAME):
        assert words in out.out
    assert "tidepool-auto spend / best static hybrid" in out.out
    assert "/ per-minute lower bound" in out.out
    # A quarter hour of code traffic: auto meets the SLO but spends 2.4x the per-minute bound.
    assert "\ntargets: auto/bound 2.400 > 1.5\n" in out.out
    assert "[1/1]" in out.err  # progress on stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "AzureLLMInferenceTrace_code_cost.png",
        "AzureLLMInferenceTrace_code_replicas.png",
        "AzureLLMInferenceTrace_code_traffic.png",
    ]


def test_servegen_slice_loads_top_and_sample() -> None:
    cfg = config.SimConfig()
    w = traces.load(SERVEGEN_DAY0, cfg.capacity(), hours=1.0, top=2, sample=1)
    assert len(w.tenants) == 3
    assert w.steps == 720
    assert all(t.requests > 0 for t in w.tenants[:2])


def test_scale_multiplies_demand() -> None:
    cfg = config.SimConfig()
    one = traces.load(CODE, cfg.capacity(), hours=0.25)
    ten = traces.load(CODE, cfg.capacity(), hours=0.25, scale=10.0)
    a, b = one.tenants[0], ten.tenants[0]
    np.testing.assert_allclose(b.arrivals, 10 * a.arrivals)
    np.testing.assert_allclose(b.input_tokens, 10 * a.input_tokens)
    np.testing.assert_allclose(b.output_tokens, 10 * a.output_tokens)
    np.testing.assert_allclose(b.service_s, a.service_s)
    assert "demand x10" in ten.note
    # ServeGen: the window rates are scaled before arrivals are drawn.
    s1 = traces.load(SERVEGEN_DAY0, cfg.capacity(), hours=2.0, top=1, sample=0)
    s10 = traces.load(SERVEGEN_DAY0, cfg.capacity(), hours=2.0, top=1, sample=0, scale=10.0)
    assert s10.tenants[0].requests == pytest.approx(10 * s1.tenants[0].requests, rel=0.1)


def test_compare_judges_like_for_like_on_conv_slice() -> None:
    cfg = config.SimConfig()
    w = traces.load(CONV, cfg.capacity(), hours=0.5)
    cmp = simulate.compare(w, cfg)
    r = cmp.results
    best = cmp.runs["best-static-hybrid"][0]

    def key(run: engine.TenantRun) -> tuple[bool, float]:
        return (not report.meets_slo(run, cfg.slo_p99_s), run.spend)

    # The best static choice is at least as good as both ends of the floor range.
    for other in ("always-serverless", "always-dedicated"):
        assert key(best) <= key(cmp.runs[other][0])
    # Serverless spends GPU-hours on the shared pool and is charged back per token.
    assert r["always-serverless"].spend_dedicated == 0.0
    assert r["always-serverless"].spend_shared > 0.0
    assert r["always-serverless"].chargeback > 0.0
    assert r["always-dedicated"].chargeback == 0.0
    assert r["always-dedicated"].spend == r["always-dedicated"].spend_dedicated
    # Every policy pays at least the per-minute lower bound.
    for result in r.values():
        assert result.spend >= cmp.lower_bound * 0.999
    assert cmp.ratios.vs_lower_bound == pytest.approx(r["tidepool-auto"].spend / cmp.lower_bound)
    # On this half hour (at most 0.52 replicas busy) auto keeps the one shared replica it starts
    # with, as the best static choice (floor 0) does: the same spend, every request within 10 s.
    auto = r["tidepool-auto"]
    assert (auto.meets_slo, auto.missed, auto.worst_p99_wait_s) == (True, (), 0.0)
    assert cmp.ratios.vs_best_static == 1.0
    assert cmp.static[w.tenants[0].name].floor == 0
    assert cmp.ratios.vs_lower_bound == pytest.approx(1.0033, abs=1e-4)
    assert report.missed_targets(auto, cmp.ratios) == []
    assert cmp.missed_by_every_policy == ()
    # A tenant late under every policy is counted; late under all but one, it is not.
    late = np.zeros(31)
    late[30] = 100.0  # every request waited 30 s, over the 10 s SLO (dt 1 s)
    name = w.tenants[0].name
    every = {p: [replace(runs[0], wait_weights=late)] for p, runs in cmp.runs.items()}
    assert replace(cmp, runs=every).missed_by_every_policy == (name,)
    but_static = {**every, "best-static-hybrid": cmp.runs["best-static-hybrid"]}
    assert replace(cmp, runs=but_static).missed_by_every_policy == ()


def _fake_run(spend: float, waited_s: int) -> engine.TenantRun:
    waits = np.zeros(waited_s + 1)
    waits[waited_s] = 100.0
    empty = np.zeros(1)
    return engine.TenantRun(
        tenant="t",
        controller="x",
        dt=1.0,
        gpu_hours_shared=0.0,
        gpu_hours_dedicated=0.0,
        spend_shared=spend,
        spend_dedicated=0.0,
        chargeback=0.0,
        tokens_shared=0.0,
        requests=100.0,
        replica_starts=0,
        wait_weights=waits,
        shared_timeline=empty,
        dedicated_timeline=empty,
        demand_timeline=empty,
        spend_timeline=empty,
        modes=(),
    )


@pytest.mark.parametrize(
    ("peak", "best", "exhaustive", "simulated"),
    [
        # Floors 0..19 and always-dedicated: 21 candidates, floors 1..19 simulated in turn (0
        # and always-dedicated are given). The trace is 0 h long, so no floor is pruned.
        pytest.param(19 * 56, 12, True, list(range(1, 20)), id="exhaustive-20-floors"),
        # Floors 0..400: a 9-point grid over 0..400 (0 given), then 100..150, then 125..138,
        # then every floor of 135..140 not yet simulated: 25 simulations, not 400.
        pytest.param(
            400 * 56,
            137,
            False,
            [
                *(50, 100, 150, 200, 250, 300, 350, 400),
                *(112, 125, 138, 162, 175, 188),
                *(128, 131, 134, 141, 144, 147),
                *(135, 136, 137, 139, 140),
            ],
            id="grid-401-floors",
        ),
    ],
)
def test_best_static_finds_the_cheapest_floor_meeting_the_slo(
    peak: float, best: int, exhaustive: bool, simulated: list[int]
) -> None:
    cfg = config.SimConfig()
    calls: list[int] = []

    def sim(ctrl: engine.Controller) -> engine.TenantRun:
        assert isinstance(ctrl, baselines.StaticHybrid)
        calls.append(ctrl.floor)
        # Spend falls then rises with the floor; floors below 5 miss the SLO (20 s p99 wait).
        return _fake_run(100.0 + (ctrl.floor - best) ** 2, 0 if ctrl.floor >= 5 else 20)

    serverless = _fake_run(1.0, 20)  # cheapest of all, but misses the SLO
    dedicated = _fake_run(1e6, 0)
    choice = simulate.best_static(sim, cfg, peak, serverless, dedicated)
    assert (choice.floor, choice.exhaustive) == (best, exhaustive)
    assert choice.run.spend == 100.0
    assert choice.run.controller == "best-static-hybrid"
    assert calls == simulated  # each once: memoized
    assert choice.simulated == len(simulated) + 2


def test_best_static_skips_floors_whose_own_gpus_cost_more_than_a_run_meeting_the_slo() -> None:
    cfg = config.SimConfig()
    calls: list[int] = []

    def sim(ctrl: engine.Controller) -> engine.TenantRun:
        assert isinstance(ctrl, baselines.StaticHybrid)
        calls.append(ctrl.floor)
        return _fake_run(650.0 + 50.0 * ctrl.floor, 0)

    # A 24 h trace at $7.79/GPU-hour: floor 1 meets the SLO for $700, and a floor of 4 alone
    # costs 4 x 7.79 x 24 = $747.84, so floors 4..20 are never simulated.
    serverless = replace(_fake_run(2000.0, 20), trace_steps=24 * 3600)
    choice = simulate.best_static(sim, cfg, 20 * 56, serverless, _fake_run(1e6, 0))
    assert calls == [1, 2, 3]
    assert (choice.floor, choice.run.spend) == (1, 700.0)


def test_best_static_falls_back_to_the_cheapest_when_none_meets_the_slo() -> None:
    cfg = config.SimConfig()

    def sim(ctrl: engine.Controller) -> engine.TenantRun:
        assert isinstance(ctrl, baselines.StaticHybrid)
        return _fake_run(50.0 + ctrl.floor, 30)

    choice = simulate.best_static(sim, cfg, 3 * 56, _fake_run(60.0, 30), _fake_run(40.0, 30))
    assert choice.floor == simulate.ALWAYS_DEDICATED
    assert choice.run.spend == 40.0


def test_price_flags() -> None:
    cfg = simulate.build_config(parse(simulate, ["x.csv", "--pool-prices", "2.5,0.3"]))
    p = cfg.prices
    assert (p.shared_per_gpu_hour, p.dedicated_per_gpu_hour) == (2.5, 2.5)
    assert p.chargeback_per_million_tokens == 0.3
    p = simulate.build_config(parse(simulate, ["x.csv", "--pool-prices", "9,2.5,0.3"])).prices
    assert (p.shared_per_gpu_hour, p.dedicated_per_gpu_hour) == (9.0, 2.5)
    cfg = simulate.build_config(parse(simulate, ["x.csv", "--prices", "a100"]))
    assert cfg == config.for_prices("a100")
    cfg = simulate.build_config(parse(simulate, ["x.csv", "--gpus-per-node", "8"]))
    assert (cfg.prices.name, cfg.prices.gpus_per_node) == ("h100", 8)
    cfg = simulate.build_config(parse(simulate, ["x.csv", "--cold-start", "90"]))
    assert cfg == config.for_prices(cold_start_s=90.0)
    assert simulate.build_config(parse(simulate, ["x.csv"])) == config.SimConfig()
    cfg = advise.build_config(
        parse(advise, ["--prices", "a100", "--hourly-rate", "3", "--price-per-million-tokens", "1"])
    )
    assert cfg == config.for_prices(
        "a100",
        shared_per_gpu_hour=3.0,
        dedicated_per_gpu_hour=3.0,
        chargeback_per_million_tokens=1.0,
    )
    assert flags.pool_prices("4.00,0.20") == (4.0, 4.0, 0.2)
    assert flags.pool_prices("7.79,4.00,0.20") == (7.79, 4.0, 0.2)
    for bad in ("4", "1,2,3,4", "4,x", "4,nan", "0,0.2"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"SHARED,DED,TOKENS.*got '{bad}'"):
            flags.pool_prices(bad)


@pytest.mark.parametrize(
    ("peak", "replicas"),
    [
        pytest.param(56, 1, id="56-in-flight-fills-the-target"),
        pytest.param(57, 2, id="57-in-flight-needs-a-second"),
        pytest.param(150, 3, id="150-in-flight"),
        pytest.param(0, 1, id="idle-still-one"),
        pytest.param(1_000_000, 1000, id="no-more-than-the-api-accepts"),
    ],
)
def test_always_dedicated_is_sized_as_the_policy_sizes_its_dedicated_option(
    peak: float, replicas: int
) -> None:
    # 56 of 64 seats is the target: 150 in flight is 2.34 replicas of work, ceil(2.34/0.875) = 3.
    assert simulate.always_dedicated_replicas(config.SimConfig(), peak) == replicas


def test_plot_sums_pad_runs_that_drained_longer() -> None:
    base = {
        f.name: getattr(_fake_run(1.0, 0), f.name)
        for f in engine.TenantRun.__dataclass_fields__.values()
    }
    short = engine.TenantRun(**{**base, "spend_timeline": np.array([1.0, 2.0])})
    long = replace(short, spend_timeline=np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(plots._sum([short, long], "spend_timeline"), [2.0, 4.0, 3.0])
    np.testing.assert_allclose(
        plots._sum([short, long], "spend_timeline", cumulative=True), [2.0, 4.0, 5.0]
    )


# --------------------------------------------------------------------------- bad input: exit 2

_AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
_SERVEGEN_HEADER = "model_pool,client_id,window_start_s,window_len_s,rate_rps,cv\n"


def _write(tmp: Path, name: str, text: str | bytes) -> str:
    path = tmp / name
    data = text.encode() if isinstance(text, str) else text
    if name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return str(path)


_FILES: dict[str, str | bytes] = {
    "nan.csv": _AZURE_HEADER + "2023-11-16 18:15:46,374,44\n2023-11-16 18:15:47,nan,44\n",
    "inf.csv": _AZURE_HEADER + "2023-11-16 18:15:46,374,inf\n",
    "neg.csv": _AZURE_HEADER + "2023-11-16 18:15:46,-5,44\n",
    "word.csv": _AZURE_HEADER + "2023-11-16 18:15:46,many,44\n",
    "when.csv": _AZURE_HEADER + "yesterday,374,44\n",
    "latin1.csv": _AZURE_HEADER.encode() + b"2023-11-16 18:15:46,374,44 \xe9t\xe9\n",
    "sg_rate.csv.gz": _SERVEGEN_HEADER + "m-large,0,0,600,1.5,2\nm-large,0,600,600,abc,2\n",
    "sg_len.csv.gz": _SERVEGEN_HEADER + "m-large,0,0,0,1.5,2\n",
    "sg_cv.csv.gz": _SERVEGEN_HEADER + "m-large,0,0,600,1.5,nan\n",
    "notgz.csv.gz": b"plain text, not gzip\n",
    "good.csv": _AZURE_HEADER + "2023-11-16 18:15:46,374,44\n",
}


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        # simulate: flags
        (["simulate", "{good.csv}", "--dt", "0"], ["--dt", "'0'", "> 0"]),
        (["simulate", "{good.csv}", "--dt", "-1"], ["--dt", "'-1'", "> 0"]),
        (["simulate", "{good.csv}", "--cold-start", "0"], ["--cold-start", "'0'", "> 0"]),
        (["simulate", "{good.csv}", "--hours", "-2"], ["--hours", "'-2'", "> 0"]),
        (["simulate", "{good.csv}", "--hours", "nan"], ["--hours", "'nan'", "finite"]),
        (["simulate", "{good.csv}", "--scale", "0"], ["--scale", "'0'", "> 0"]),
        (["simulate", "{good.csv}", "--scale", "inf"], ["--scale", "'inf'", "finite"]),
        (["simulate", "{good.csv}", "--gpus-per-node", "0"], ["--gpus-per-node", "'0'", ">= 1"]),
        (["simulate", "{good.csv}", "--top", "-1"], ["--top", "'-1'", ">= 0"]),
        (["simulate", "{good.csv}", "--prices", "h200"], ["--prices", "'h200'", "a100"]),
        (["simulate", "{good.csv}", "--pool-prices", "0,0.2"], ["--pool-prices", "'0,0.2'", "> 0"]),
        (["simulate", "{good.csv}", "--pool-prices", "4,-1"], ["--pool-prices", "'4,-1'", "> 0"]),
        (
            ["simulate", "{good.csv}", "--out", "{good.csv}/plots"],
            ["--out", "good.csv", "writable"],
        ),
        # simulate: trace contents
        (["simulate", "{nan.csv}"], ["nan.csv:3", "ContextTokens", "'nan'", ">= 0"]),
        (["simulate", "{inf.csv}"], ["inf.csv:2", "GeneratedTokens", "'inf'", "finite"]),
        (["simulate", "{neg.csv}"], ["neg.csv:2", "ContextTokens", "'-5'", ">= 0"]),
        (["simulate", "{word.csv}"], ["word.csv:2", "ContextTokens", "'many'", "number"]),
        (["simulate", "{when.csv}"], ["when.csv:2", "TIMESTAMP", "'yesterday'", "ISO"]),
        (["simulate", "{latin1.csv}"], ["latin1.csv", "not UTF-8", "0xe9"]),
        (["simulate", "{sg_rate.csv.gz}"], ["sg_rate.csv.gz:3", "rate_rps", "'abc'", ">= 0"]),
        (["simulate", "{sg_len.csv.gz}"], ["sg_len.csv.gz:2", "window_len_s", "'0'", "> 0"]),
        (["simulate", "{sg_cv.csv.gz}"], ["sg_cv.csv.gz:2", "cv", "'nan'", "finite"]),
        (["simulate", "{notgz.csv.gz}"], ["notgz.csv.gz", "gzip"]),
        # advise
        (["advise", "--price-per-million-tokens", "0"], ["--price-per-million-tokens", "'0'"]),
        (["advise", "--price-per-1k-tokens", "0"], ["--price-per-1k-tokens", "'0'", "> 0"]),
        (["advise", "--price-per-request", "0"], ["--price-per-request", "'0'", "> 0"]),
        (["advise", "--hourly-rate", "-4"], ["--hourly-rate", "'-4'", "> 0"]),
        (["advise", "--hours", "0"], ["--hours", "'0'", "> 0"]),
        (["advise", "--hours-per-day", "25"], ["--hours-per-day", "'25'", "<= 24"]),
        (["advise", "--tokens-per-request", "-1"], ["--tokens-per-request", "'-1'", ">= 0"]),
        (["advise", "{nan.csv}"], ["nan.csv:3", "ContextTokens", "'nan'", ">= 0"]),
        (["advise", "{latin1.csv}"], ["latin1.csv", "not UTF-8"]),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, list) and v[0] in ("simulate", "advise") else "",
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], needles: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = {name: _write(tmp_path, name, text) for name, text in _FILES.items()}
    args = list(argv)
    for name, path in paths.items():
        args = [a.replace("{" + name + "}", path) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert "Traceback" not in err
    assert err.startswith(f"tidepool {argv[0]}: ")
    for needle in needles:
        assert needle in err, (needle, err)


def test_unwritable_out_is_refused_before_simulating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["simulate", str(CODE), "--out", str(blocker / "plots")]) == 2
    err = capsys.readouterr().err
    assert "simulating" not in err
    assert "--out" in err
    assert "writable directory" in err


def test_best_static_tries_only_floors_a_spec_can_state() -> None:
    # A peak of 5,000 replicas' worth: floors above MAX_REPLICAS (minReplicas' bound) are not
    # static choices anyone can apply, so none is simulated and the grid tops out there.
    cfg = config.SimConfig()
    calls: list[int] = []

    def sim(ctrl: engine.Controller) -> engine.TenantRun:
        assert isinstance(ctrl, baselines.StaticHybrid)
        calls.append(ctrl.floor)
        return _fake_run(100.0 + abs(ctrl.floor - 900), 0 if ctrl.floor >= 5 else 20)

    choice = simulate.best_static(sim, cfg, 5000 * 56, _fake_run(1.0, 20), _fake_run(1e6, 0))
    assert max(calls) == MAX_REPLICAS
    assert choice.floor == 900
