"""CPU and memory amounts as a pod's ``resources`` take them (Kubernetes resource quantities).

Not :mod:`tidepool.api.sizes`: that one is deliberately strict (exact byte limits with Ki, Mi or
Gi), while a container's resources are written the Kubernetes way, ``500m`` or ``2`` CPUs and
``64Gi`` or ``64G`` of memory. The patterns are a subset of Kubernetes' quantity grammar (no sign,
no exponent, no fractional memory) so that every accepted text has one obvious meaning; the CRD
enforces the same patterns, and :func:`value` lets Python compare a request with its limit as the
API server's CEL ``quantity()`` does.
"""

import re
from decimal import Decimal
from typing import Final

#: CPUs: whole or up to 3 decimals (``2``, ``1.5``), or millicores (``500m``).
CPU_PATTERN: Final = r"^([0-9]+m|[0-9]+(\.[0-9]{1,3})?)$"
#: Bytes: digits with an optional binary (``Ki`` .. ``Pi``) or decimal (``k`` .. ``P``) suffix.
MEMORY_PATTERN: Final = r"^[0-9]+(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"
#: Longest quantity text: more digits than any node has bytes or CPUs.
MAX_TEXT: Final = 32

_SUFFIX: Final = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(1000),
    "M": Decimal(1000**2),
    "G": Decimal(1000**3),
    "T": Decimal(1000**4),
    "P": Decimal(1000**5),
    "Ki": Decimal(1024),
    "Mi": Decimal(1024**2),
    "Gi": Decimal(1024**3),
    "Ti": Decimal(1024**4),
    "Pi": Decimal(1024**5),
}


class InvalidQuantityError(ValueError):
    """A text that is neither a CPU nor a memory quantity of the accepted forms."""


def value(text: str) -> Decimal:
    """``text`` as a number of CPUs or bytes: ``value("500m") == Decimal("0.5")``,
    ``value("1.5") == Decimal("1.5")``, ``value("1Gi") == 1073741824``, ``value("1G") ==
    1000000000``. Exact (Decimal), so ``1000m`` and ``1`` compare equal, as in Kubernetes."""
    if not (re.fullmatch(CPU_PATTERN, text) or re.fullmatch(MEMORY_PATTERN, text)):
        raise InvalidQuantityError(
            f"{text!r} is not a quantity; use CPUs such as 2, 1.5 or 500m, or bytes such as"
            " 64Gi, 512Mi or 64G"
        )
    number = text.rstrip("mkMGTPi")  # both patterns: digits, perhaps a dot, then the suffix
    return Decimal(number) * _SUFFIX[text[len(number) :]]
