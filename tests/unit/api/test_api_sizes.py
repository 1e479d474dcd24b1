"""Byte sizes as the chart and the gateway's ``--max-body-size`` write them."""

import pytest

from tidepool.api import sizes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("0", 0, id="zero"),
        pytest.param("1048576", 1048576, id="plain-bytes"),
        pytest.param("512Ki", 512 * 1024, id="kibibytes"),
        pytest.param("8Mi", 8388608, id="mebibytes"),
        pytest.param("1Gi", 1073741824, id="gibibytes"),
        pytest.param("0010Ki", 10 * 1024, id="leading-zeros"),
    ],
)
def test_parse(text: str, expected: int) -> None:
    assert sizes.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("8M", id="decimal-suffix"),
        pytest.param("8mi", id="lower-case-suffix"),
        pytest.param("1.5Mi", id="fraction"),
        pytest.param("-1", id="negative"),
        pytest.param("Mi", id="no-digits"),
        pytest.param("8 Mi", id="space"),
        pytest.param("8Ti", id="tebibytes"),
        pytest.param("8Mi\n", id="trailing-newline"),
    ],
)
def test_parse_refuses_with_the_value_in_the_message(text: str) -> None:
    with pytest.raises(sizes.InvalidSizeError) as caught:
        sizes.parse(text)
    assert repr(text) in str(caught.value)
    assert "8Mi" in str(caught.value)
