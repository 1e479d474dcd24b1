"""Published worked examples (Fireworks, Predibase, a decision guide), reproduced exactly by
tidepool.policy.cost."""

import math

import pytest

from tidepool.policy import cost


def test_seed_004_break_even_is_1_440_000_requests() -> None:
    assert cost.break_even_requests(4.00, 720, 0.002) == pytest.approx(1_440_000)


def test_seed_004_dedicated_a100_month_of_720h_is_2880() -> None:
    assert cost.dedicated_cost(1, 4.00, 720) == pytest.approx(2_880)


def test_seed_003_serverless_is_022_per_day_and_dedicated_88x() -> None:
    serverless = cost.serverless_cost(10_000 * 110, 0.0002 * 1000)
    dedicated = cost.dedicated_cost(1, 1.21, 16)
    assert serverless == pytest.approx(0.22)
    assert dedicated == pytest.approx(19.36)
    assert cost.ratio(dedicated, serverless) == pytest.approx(88.0)


def test_seed_002_llama3_8b_crossover_is_649_166_tokens_per_minute() -> None:
    tpm = cost.crossover_tokens_per_minute(7.79, 0.20)
    assert math.floor(tpm) == 649_166
    assert tpm == pytest.approx(649_166.67, abs=0.01)


def test_seed_002_crossover_sits_at_45_percent_of_saturation() -> None:
    assert cost.crossover_utilization(0.09, 0.20) == pytest.approx(0.45)


def test_saturated_price_of_h100_at_24043_tokens_per_second_is_009() -> None:
    assert cost.saturated_price_per_million(7.79, 24_043) == pytest.approx(0.09, abs=1e-4)


@pytest.mark.parametrize(
    ("tps", "price", "monthly"),
    [
        pytest.param(1000.0, 0.20, 525.60, id="1000-tokens-per-second-at-020-is-525.60"),
        pytest.param(0.0, 0.20, 0.0, id="no-traffic-costs-nothing"),
    ],
)
def test_serverless_monthly(tps: float, price: float, monthly: float) -> None:
    assert cost.serverless_monthly(tps, price) == pytest.approx(monthly)


def test_dedicated_monthly_uses_730_hours() -> None:
    assert cost.dedicated_monthly(1, 4.00) == pytest.approx(2_920)


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        pytest.param(cost.break_even_requests, (4.0, 720.0, 0.0), id="zero-price-per-request"),
        pytest.param(cost.break_even_tokens, (4.0, 720.0, 0.0), id="zero-price-per-token"),
    ],
)
def test_zero_prices_are_refused(fn: object, args: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        fn(*args)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("dollars", "text"),
    [
        pytest.param(2880.0, "$2,880", id="large"),
        pytest.param(0.22, "$0.22", id="small"),
        pytest.param(math.inf, "n/a", id="infinite"),
    ],
)
def test_money(dollars: float, text: str) -> None:
    assert cost.money(dollars) == text


def test_ratio_by_zero() -> None:
    assert cost.ratio(0.0, 0.0) == 1.0
    assert cost.ratio(1.0, 0.0) == math.inf
