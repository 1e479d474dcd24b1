"""Go-style durations (``90s``, ``5m``, ``1h30m``), as Kubernetes users write them.

Kept as strings in the CRD (so ``kubectl get -o yaml`` shows what the user wrote) and parsed here:
a spec field is a :class:`Duration`, which holds both the user's text and its ``timedelta``.
"""

import argparse
import functools
import re
from datetime import timedelta
from typing import Any, Final

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

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
#: The CRD's ``maxLength``: it bounds the API server's CEL cost estimate for :data:`MAX_RULE`
#: (an unbounded string would make every ``duration(self)`` call unboundedly costly).
MAX_LENGTH: Final = 32
#: What ``kubectl explain`` says of every duration field of the CRDs.
DESCRIPTION: Final = f"A duration such as 90s, 5m or 1h30m, at most {MAX_TEXT}."


class InvalidDurationError(ValueError):
    """A duration string that does not match :data:`PATTERN` or is longer than :data:`MAX`."""


def parse(text: str) -> timedelta:
    """Parse ``text``; e.g. ``parse("1h30m") == timedelta(minutes=90)``."""
    if len(text) > MAX_LENGTH:
        raise InvalidDurationError(
            f"{text!r} is not a duration; write it in at most {MAX_LENGTH} characters, e.g. 1h30m"
        )
    if not re.fullmatch(PATTERN, text):
        raise InvalidDurationError(
            f"{text!r} is not a duration; use numbers of at most 6 digits with a unit ms, s, m"
            f" or h, e.g. 90s, 5m, 1h30m, at most {MAX_TEXT} in all"
        )
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))
    if seconds > MAX.total_seconds():
        raise InvalidDurationError(f"{text!r} is longer than the maximum duration, {MAX_TEXT}")
    return timedelta(seconds=seconds)


@functools.total_ordering
class Duration:
    """A spec's duration: the text the user wrote (``"5m"``) and the ``timedelta`` it means.

    As a pydantic field type it validates from a string (or, in Python, an existing
    ``Duration``) with :func:`parse`'s rules and messages, pydantic adding the field's name, and
    serializes back to exactly the user's text, so a server-side apply and ``kubectl get -o yaml``
    show ``5m``, not ``300.0``. Its JSON schema is the CRD's: a string with :data:`PATTERN`,
    :data:`MAX_LENGTH` and the CEL rule :data:`MAX_RULE`.

    Immutable as :class:`fractions.Fraction` is (private slots behind read-only properties).
    Equality, hashing and ordering go by the ``timedelta`` alone, as :class:`decimal.Decimal`
    keeps ``"1.50"`` yet equals ``Decimal("1.5")``: ``Duration("60s") == Duration("1m")`` and
    ``Duration("90s") < Duration("5m")``, while each still writes back its own text.
    """

    __slots__ = ("_delta", "_text")

    def __init__(self, text: str) -> None:
        """Parse ``text``; :class:`InvalidDurationError` (a ``ValueError``) if it is not one."""
        self._delta = parse(text)
        self._text = text

    @property
    def text(self) -> str:
        """Exactly what the user wrote: ``Duration("1h30m").text == "1h30m"``."""
        return self._text

    @property
    def delta(self) -> timedelta:
        """What it means: ``Duration("1h30m").delta == timedelta(minutes=90)``."""
        return self._delta

    @property
    def seconds(self) -> float:
        """The duration in seconds: ``Duration("1h30m").seconds == 5400.0``."""
        return self._delta.total_seconds()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Duration):
            return NotImplemented
        return self._delta == other._delta

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Duration):
            return NotImplemented
        return self._delta < other._delta

    def __hash__(self) -> int:
        return hash(self._delta)

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Duration({self._text!r})"

    def __reduce__(self) -> tuple[type["Duration"], tuple[str]]:
        """Pickle and copy as the text, re-parsed on the way back (as ``Fraction`` does)."""
        return (Duration, (self._text,))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """From text (or an existing ``Duration``, kept as it is); to the user's text."""
        return core_schema.no_info_wrap_validator_function(
            cls._validate,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(
                str, return_schema=core_schema.str_schema()
            ),
        )

    @classmethod
    def _validate(cls, value: Any, as_text: core_schema.ValidatorFunctionWrapHandler) -> "Duration":
        """A ``Duration`` passes as it is; anything else must be a string, then a duration."""
        if isinstance(value, cls):
            return value
        return cls(as_text(value))

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The CRD's schema: what the API server checks at admission, before the operator."""
        return {
            "type": "string",
            "pattern": PATTERN,
            "maxLength": MAX_LENGTH,
            "x-kubernetes-validations": [
                {"rule": MAX_RULE, "message": f"must be at most {MAX_TEXT}"}
            ],
        }


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
