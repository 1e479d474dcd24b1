"""Go-style durations (``90s``, ``5m``, ``1h30m``), as Kubernetes users write them.

Kept as strings in the CRD (so ``kubectl get -o yaml`` shows what the user wrote) and parsed here.
"""

import argparse
import re
from datetime import timedelta
from typing import Final

#: What the CRD's OpenAPI ``pattern`` allows. CEL's ``duration()`` accepts the same units. Each
#: number has at most 6 digits before and after the point, so the API server refuses a value
#: such as ``999999999999h`` (which would overflow ``timedelta``) at admission, naming the field.
PATTERN: Final = r"^([0-9]{1,6}(\.[0-9]{1,6})?(ms|s|m|h))+$"
_PART: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
#: The longest duration any field takes: a year is far beyond any idle window, stabilization or
#: traffic window, and keeps every sum with a timestamp within ``datetime``'s range.
MAX_TEXT: Final = "8760h"
MAX: Final = timedelta(hours=8760)
#: The same bound as a CEL rule, so the API server refuses a longer value at admission.
MAX_RULE: Final = f"duration(self) <= duration('{MAX_TEXT}')"


class InvalidDurationError(ValueError):
    """A duration string that does not match :data:`PATTERN` or is longer than :data:`MAX`."""


def parse(text: str) -> timedelta:
    """Parse ``text``; e.g. ``parse("1h30m") == timedelta(minutes=90)``."""
    if not re.fullmatch(PATTERN, text):
        raise InvalidDurationError(
            f"{text!r} is not a duration; use numbers of at most 6 digits with a unit ms, s, m"
            f" or h, e.g. 90s, 5m, 1h30m, at most {MAX_TEXT} in all"
        )
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))
    if seconds > MAX.total_seconds():
        raise InvalidDurationError(f"{text!r} is longer than the maximum duration, {MAX_TEXT}")
    return timedelta(seconds=seconds)


def seconds_flag(text: str) -> float:
    """``argparse`` type for a duration flag of the command-line programs: ``"2m"`` -> 120.0.

    A bad value becomes ``argparse.ArgumentTypeError``, so argparse prints one line naming the
    flag and exits 2.
    """
    try:
        return parse(text).total_seconds()
    except InvalidDurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def format_seconds(seconds: float) -> str:
    """Short human form used in reasons: 600 -> ``10m``, 90 -> ``90s``, 5400 -> ``1h30m``."""
    whole = round(seconds)
    if whole < 120 and whole % 60:
        return f"{whole}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    out = (
        (f"{hours}h" if hours else "")
        + (f"{minutes}m" if minutes else "")
        + (f"{secs}s" if secs else "")
    )
    return out or "0s"
