"""Pure cost maths: per-token (serverless) versus per-GPU-hour (dedicated) billing.

Role: the arithmetic behind every cost number Tidepool prints, in status messages, in
``tidepool advise`` and in ``tidepool simulate``. Each formula is a one-liner on purpose; the
published worked examples below are reproduced exactly and are named tests
(``tests/unit/policy/test_cost.py``):

* a serverless-vs-dedicated decision guide:
  ``break_even_requests(4.00, 720, 0.002) == 1_440_000`` requests/month;
* Predibase's serverless fine-tuned endpoints: 10k requests/day x 110 tokens x $0.0002/1k tokens
  = $0.22/day against an A10G at $1.21/h x 16 h = $19.36/day: 88x;
* Fireworks' on-demand GPUs: Llama 3 8B, serverless $0.20/1M tokens: the on-demand GPU pays for
  itself from ``crossover_tokens_per_minute(7.79, 0.20) = 649,166.67`` tokens/min (Fireworks
  prints 649,166).

This module must not read the clock, do I/O, or know about Kubernetes objects; callers pass plain
numbers. Months are :data:`HOURS_PER_MONTH` (730 h = 8,760 h / 12) unless a caller passes hours,
as the decision guide does with 720 h.
"""

import math
from typing import Final

#: Average hours in a month (8,760 / 12), the convention cloud price sheets use.
HOURS_PER_MONTH: Final = 730.0
#: Seconds in :data:`HOURS_PER_MONTH`.
SECONDS_PER_MONTH: Final = HOURS_PER_MONTH * 3600.0
TOKENS_PER_MILLION: Final = 1_000_000.0


def break_even_requests(hourly_rate: float, hours: float, price_per_request: float) -> float:
    """Requests at which per-request billing costs as much as renting the GPU for ``hours``.

    The decision guide's ``Requests = (Hourly rate x Hours) / Price per request``. With $4.00/h
    (A100), 720 h and $0.002/request: ``4.00 * 720 / 0.002 = 1,440,000`` requests/month; below it
    serverless is cheaper, above it dedicated.
    """
    if price_per_request <= 0:
        raise ValueError(f"price_per_request must be > 0, got {price_per_request}")
    return hourly_rate * hours / price_per_request


def serverless_cost(tokens: float, price_per_million_tokens: float) -> float:
    """Dollars for ``tokens`` (input plus output) billed at ``price_per_million_tokens``.

    E.g. 1.1M tokens at $0.20/1M: $0.22.
    """
    return tokens / TOKENS_PER_MILLION * price_per_million_tokens


def serverless_monthly(tokens_per_second: float, price_per_million_tokens: float) -> float:
    """Projected monthly bill of a steady ``tokens_per_second`` billed per token.

    E.g. 1,000 tokens/s at $0.20/1M: ``1000 * 2,628,000 s / 1e6 * 0.20 = $525.60``/month.
    """
    return serverless_cost(tokens_per_second * SECONDS_PER_MONTH, price_per_million_tokens)


def dedicated_cost(gpus: float, price_per_gpu_hour: float, hours: float) -> float:
    """Dollars for ``gpus`` GPUs rented for ``hours``, busy or idle: 1 x $4.00 x 720 h = $2,880."""
    return gpus * price_per_gpu_hour * hours


def dedicated_monthly(gpus: float, price_per_gpu_hour: float) -> float:
    """``dedicated_cost`` over :data:`HOURS_PER_MONTH`. E.g. 1 A100 at $4.00: $2,920/month."""
    return dedicated_cost(gpus, price_per_gpu_hour, HOURS_PER_MONTH)


def break_even_tokens(hourly_rate: float, hours: float, price_per_million_tokens: float) -> float:
    """Tokens at which per-token billing equals ``hourly_rate x hours`` (the decision guide's
    formula, per token).

    E.g. $4.00/h x 730 h at $0.20/1M tokens: 14.6 billion tokens/month.
    """
    if price_per_million_tokens <= 0:
        raise ValueError(f"price_per_million_tokens must be > 0, got {price_per_million_tokens}")
    return hourly_rate * hours / price_per_million_tokens * TOKENS_PER_MILLION


def crossover_tokens_per_minute(hourly_rate: float, price_per_million_tokens: float) -> float:
    """Sustained tokens/min at which an hourly GPU costs what the same tokens cost serverless.

    Derivation of Fireworks' table row "Llama 3 8B: 649,166 tokens/min; serverless $0.2/1M;
    on-demand $0.09/1M for saturated GPU". The on-demand GPU is the H100 Fireworks prices at
    $7.79/hour (the header of its cost table). The GPU costs $7.79 every hour whatever it serves;
    serverless costs $0.20 per million tokens. They are equal when the GPU serves
    ``7.79 / (0.20 / 1e6) = 38,950,000`` tokens/hour, i.e. ``38,950,000 / 60 = 649,166.67``
    tokens/min, which Fireworks truncates to 649,166.

    The $0.09/1M figure is not an input: it is what the GPU costs per token when *saturated*, i.e.
    serving ``7.79 / 0.09e-6 / 60 = 1,442,593`` tokens/min. So the crossover sits at
    ``0.09 / 0.20 = 45%`` of saturation, which is why the decision guide's 30%/50% utilization
    band brackets it (see :func:`crossover_utilization`).

    Note: Fireworks' Mixtral row (377,584 tokens/min at $0.50/1M) does not follow from $7.79/h
    (one H100 gives 259,667, two give 519,333); we reproduce only the Llama 3 8B row.
    """
    return break_even_tokens(hourly_rate, 1.0, price_per_million_tokens) / 60.0


def saturated_price_per_million(hourly_rate: float, tokens_per_second: float) -> float:
    """$/1M tokens of an hourly GPU kept fully busy at ``tokens_per_second``.

    E.g. $7.79/h serving 24,043 tokens/s: ``7.79 / (24,043 * 3600 / 1e6) = $0.09``/1M.
    """
    if tokens_per_second <= 0:
        return math.inf
    return hourly_rate / (tokens_per_second * 3600.0 / TOKENS_PER_MILLION)


def crossover_utilization(saturated_price_per_million: float, serverless_price: float) -> float:
    """The GPU utilization above which dedicated is cheaper than serverless.

    A GPU at utilization ``u`` costs ``saturated / u`` per token, so the two meet at
    ``u = saturated / serverless``: Fireworks' Llama 3 8B, ``0.09 / 0.20 = 0.45``.
    """
    if serverless_price <= 0:
        return math.inf
    return saturated_price_per_million / serverless_price


def ratio(a: float, b: float) -> float:
    """``a / b`` with ``b == 0`` giving ``inf`` (or 1.0 when both are 0).

    Predibase's example: ``ratio(19.36, 0.22) == 88.0``.
    """
    if b == 0:
        return 1.0 if a == 0 else math.inf
    return a / b


def money(dollars: float) -> str:
    """``$2,880`` for large amounts, ``$0.22`` below $100, ``n/a`` for infinity."""
    if math.isinf(dollars) or math.isnan(dollars):
        return "n/a"
    if abs(dollars) >= 100:
        return f"${dollars:,.0f}"
    return f"${dollars:,.2f}"
