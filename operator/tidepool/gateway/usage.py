"""Token metering from the OpenAI ``usage`` object, read off the bytes as they pass through.

Role: the proxy forwards each upstream chunk untouched and also feeds it here. For a streamed
response (``text/event-stream``) the meter splits SSE lines and parses only ``data:`` lines
that mention ``"usage"`` (vLLM puts usage in the final chunk); for a plain JSON response it
keeps the body (up to a bound) and parses it at the end.

Must not: change, delay or buffer what the client receives, or fail the request: a body it
cannot parse just yields no usage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

#: Non-streamed bodies larger than this are not metered (kept small: usage is in the JSON).
MAX_JSON_BODY: Final = 4 * 1024 * 1024
_MAX_SSE_LINE: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


def _usage_from(obj: object) -> Usage | None:
    if not isinstance(obj, dict):
        return None
    u = obj.get("usage")
    if not isinstance(u, dict):
        return None
    p, c = u.get("prompt_tokens"), u.get("completion_tokens")
    if not isinstance(p, int) or not isinstance(c, int):
        return None
    return Usage(p, c)


class UsageMeter:
    def __init__(self, content_type: str) -> None:
        self._sse = content_type.startswith("text/event-stream")
        self._buf = bytearray()
        self._overflow = False
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> None:
        if self._overflow:
            return
        self._buf += chunk
        if not self._sse:
            if len(self._buf) > MAX_JSON_BODY:
                self._overflow = True
                self._buf.clear()
            return
        while (nl := self._buf.find(b"\n")) >= 0:
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            self._line(line)
        if len(self._buf) > _MAX_SSE_LINE:
            self._buf.clear()

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:") or b'"usage"' not in line:
            return
        try:
            found = _usage_from(json.loads(line[5:]))
        except ValueError:
            return
        if found is not None:
            self.usage = found

    def finish(self) -> Usage | None:
        if self._sse:
            if self._buf:
                self._line(bytes(self._buf).rstrip(b"\r"))
        elif not self._overflow and self._buf:
            try:
                self.usage = _usage_from(json.loads(bytes(self._buf)))
            except ValueError:
                self.usage = None
        self._buf.clear()
        return self.usage
