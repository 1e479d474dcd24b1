"""The two names of a LoRA tenant's model: the one its clients use, the one its engine serves.

Role: a tenant whose model is a LoRA adapter is served by vLLM under the adapter's name (its
``--lora-modules`` or ``/v1/load_lora_adapter`` name), while its clients send and expect the
tenant's served name. :func:`rewrite_request` puts the adapter's name into a request body, and
:class:`ResponseRewriter` puts the served name back into the top-level ``model`` of what the
engine answers: a whole JSON body, or each ``data:`` event of a stream (OpenAI's SSE chunks,
each a JSON object with its own ``model``), so a client never sees the adapter's name and an
engine never sees the served one.

Must not: do I/O or import ``aiohttp``; delay a stream beyond the end of its current line.
"""

from __future__ import annotations

import json
from typing import Any, Final

#: A JSON body larger than this passes through as it came (unrewritten) rather than be held in
#: memory whole; OpenAI responses that carry ``model`` are far smaller.
MAX_JSON_BODY: Final = 4 * 1024 * 1024
#: An SSE line longer than this passes through as it came.
MAX_SSE_LINE: Final = 1024 * 1024


def rewrite_request(payload: dict[str, Any], upstream: str, priority: int | None = None) -> bytes:
    """The request body for a SharedEngine replica: ``model`` set to ``upstream``, ``priority``
    set to the gateway's (:mod:`tidepool.policy.fair_share`) or left out when it is None, and
    every other field as sent. A ``priority`` the client sent is never passed on: on a fleet
    shared with other tenants it would let one jump the queue, and under vLLM's default
    ``fcfs`` any value but 0 is refused."""
    body = {k: v for k, v in payload.items() if k != "priority"}
    body["model"] = upstream
    if priority is not None:
        body["priority"] = priority
    return json.dumps(body, separators=(",", ":")).encode()


def _renamed(obj: bytes, upstream: str, served: str) -> bytes | None:
    """``obj`` (one JSON object) with its top-level ``model`` renamed, or None to keep it."""
    try:
        parsed = json.loads(obj)
    except (ValueError, RecursionError):
        return None
    if not isinstance(parsed, dict) or parsed.get("model") != upstream:
        return None
    parsed["model"] = served
    return json.dumps(parsed, separators=(",", ":")).encode()


class ResponseRewriter:
    """Feeds an engine's response through, the adapter's name replaced by the served name.

    E.g. ``data: {"model":"support-bot",...}`` becomes ``data: {"model":"bot-chat",...}`` as
    soon as its line is complete; a line that is no JSON event (``data: [DONE]``, a comment,
    a blank separator) passes unchanged. A body of another content type, or a compressed one,
    passes unchanged.
    """

    def __init__(
        self, content_type: str, content_encoding: str, upstream: str, served: str
    ) -> None:
        self._upstream, self._served = upstream, served
        identity = content_encoding.strip().lower() in ("", "identity")
        self._sse = identity and content_type.startswith("text/event-stream")
        self._json = identity and content_type.startswith("application/json")
        self._buf = bytearray()
        self._passing = False

    @property
    def rewrites(self) -> bool:
        """Whether the body may change (so its Content-Length may not be kept)."""
        return self._sse or self._json

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send on now."""
        if self._passing or not self.rewrites:
            return chunk
        self._buf += chunk
        if self._json:
            if len(self._buf) > MAX_JSON_BODY:
                return self._pass_through()
            return b""
        out = bytearray()
        while (nl := self._buf.find(b"\n")) >= 0:
            out += self._line(bytes(self._buf[:nl]))
            out += b"\n"
            del self._buf[: nl + 1]
        if len(self._buf) > MAX_SSE_LINE:
            out += self._pass_through()
        return bytes(out)

    def finish(self) -> bytes:
        """What is left to send once the engine's body has ended."""
        rest = bytes(self._buf)
        self._buf.clear()
        if not rest:
            return b""
        if self._json:
            return _renamed(rest, self._upstream, self._served) or rest
        return self._line(rest)

    def _line(self, line: bytes) -> bytes:
        if not line.startswith(b"data:"):
            return line
        body = line[5:].strip()
        if not body.startswith(b"{"):
            return line
        renamed = _renamed(body, self._upstream, self._served)
        return line if renamed is None else b"data: " + renamed + line[len(line.rstrip(b"\r")) :]

    def _pass_through(self) -> bytes:
        self._passing = True
        rest = bytes(self._buf)
        self._buf.clear()
        return rest
