"""Byte sizes with Kubernetes' binary suffixes (``512Ki``, ``8Mi``, ``1Gi``), or plain bytes.

The chart keeps them as strings (``gateway.maxBodySize``, so values read as the user wrote
them); the gateway parses its ``--max-body-size`` flag here. One pattern for both, so a value
the chart's schema accepts is one the gateway's flag accepts.
"""

import re
from typing import Final

#: What the chart's schema ``pattern`` allows: digits, then at most one binary suffix.
PATTERN: Final = r"^[0-9]+(Ki|Mi|Gi)?$"
_UNIT_BYTES: Final = {"": 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


class InvalidSizeError(ValueError):
    """A size string that does not match :data:`PATTERN`."""


def parse(text: str) -> int:
    """``text`` in bytes.

    E.g. ``parse("8Mi") == 8388608``, ``parse("512Ki") == 524288``,
    ``parse("1Gi") == 1073741824``, ``parse("1048576") == 1048576``. Decimal suffixes
    (``8M``) and fractions (``1.5Mi``) are refused: a body limit is exact.
    """
    match = re.fullmatch(PATTERN, text)
    if match is None:
        raise InvalidSizeError(
            f"{text!r} is not a size; use bytes with an optional suffix Ki, Mi or Gi,"
            " e.g. 8Mi, 512Ki or 1048576"
        )
    digits = text.removesuffix(match.group(1) or "")
    return int(digits) * _UNIT_BYTES[match.group(1) or ""]
