"""Token metering reads usage off passing bytes, whatever the chunk boundaries."""

import json

import pytest

from tidepool.gateway import usage

FINAL = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}
SSE = (
    b'data: {"choices":[{"text":" a"}]}\n\n'
    + b"data: "
    + json.dumps(FINAL).encode()
    + b"\n\ndata: [DONE]\n\n"
)


@pytest.mark.parametrize("size", [1, 7, 64, len(SSE)], ids=lambda s: f"chunks-of-{s}")
def test_sse_usage_split_anywhere(size):
    meter = usage.UsageMeter("text/event-stream; charset=utf-8")
    for i in range(0, len(SSE), size):
        meter.feed(SSE[i : i + size])
    assert meter.finish() == usage.Usage(7, 3)


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        pytest.param("application/json", json.dumps(FINAL).encode(), usage.Usage(7, 3), id="json"),
        pytest.param("application/json", b"{not json", None, id="bad-json-no-usage"),
        pytest.param("application/json", b'{"usage": null}', None, id="null-usage"),
        pytest.param("text/event-stream", b"data: [DONE]\n\n", None, id="stream-without-usage"),
    ],
)
def test_bodies(content_type, body, expected):
    meter = usage.UsageMeter(content_type)
    meter.feed(body)
    assert meter.finish() == expected
