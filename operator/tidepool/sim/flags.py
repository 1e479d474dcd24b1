"""Command-line argument types for the programs: numbers checked with the flag named.

argparse calls these with the raw text; a refusal becomes one line on stderr and exit code 2
(``tidepool simulate: argument --dt: must be a finite number > 0, got '0'``), never a traceback.
"""

import argparse
import math


def finite_number(text: str, least: float, *, strict: bool) -> float:
    """The one check of a number's text: finite and ``>= least`` (``> least`` when ``strict``).

    Raises ``argparse.ArgumentTypeError("must be a finite number > 0, got '0'")``; the trace
    readers reuse it and put the file, line and field in front.
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < least or (strict and value == least):
        bound = f"> {least:g}" if strict else f">= {least:g}"
        raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0. ``"0.5"`` gives 0.5; ``"0"``, ``"-1"``, ``"nan"``,
    ``"inf"`` and ``"x"`` are refused, and the parser prints e.g.
    ``tidepool simulate: argument --dt: must be a finite number > 0, got '0'``."""
    return finite_number(text, 0.0, strict=True)


def nonnegative_float(text: str) -> float:
    """An argparse type: a finite number >= 0. ``"0"`` gives 0.0; ``"-1"`` is refused."""
    return finite_number(text, 0.0, strict=False)


def pool_prices(text: str) -> tuple[float, float, float]:
    """An argparse type for ``--pool-prices``: ``DED,TOKENS`` (both pools at DED) or
    ``SHARED,DED,TOKENS``, every price a finite number > 0.

    ``"4.00,0.20"`` gives ``(4.0, 4.0, 0.2)``; ``"7.79,4.00,0.20"`` gives ``(7.79, 4.0, 0.2)``;
    ``"4"`` and ``"0,0.2"`` are refused, e.g. ``tidepool simulate: argument --pool-prices:
    expected DED,TOKENS or SHARED,DED,TOKENS, each a finite number > 0, got '0,0.2'``.
    """
    refused = argparse.ArgumentTypeError(
        f"expected DED,TOKENS or SHARED,DED,TOKENS, each a finite number > 0, got {text!r}"
    )
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise refused
    try:
        values = [finite_number(p, 0.0, strict=True) for p in parts]
    except argparse.ArgumentTypeError:
        raise refused from None
    if len(values) == 2:
        values.insert(0, values[0])
    return values[0], values[1], values[2]


def _integer(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise argparse.ArgumentTypeError(f"must be an integer >= {least}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1. ``"8"`` gives 8; ``"0"`` and ``"1.5"`` are refused."""
    return _integer(text, 1)


def nonnegative_int(text: str) -> int:
    """An argparse type: an integer >= 0. ``"0"`` gives 0; ``"-1"`` is refused."""
    return _integer(text, 0)
