"""OpenAI's error JSON: the one shape every Tidepool HTTP server answers an error in.

Why one definition: OpenAI's SDKs read ``{"error": {"message", "type", "param", "code"}}`` and
raise an exception carrying that message; a body of any other shape surfaces as an opaque parse
error. The gateway and the engine simulator (which stands in for vLLM, whose ``ErrorResponse``
has the same four fields) must therefore agree on it to the key.

Pure: it builds the body and knows no HTTP framework, so every layer may import it.
"""

from __future__ import annotations

from typing import TypedDict


class ErrorInfo(TypedDict):
    message: str
    type: str
    param: str | None
    code: str | int | None


class ErrorBody(TypedDict):
    error: ErrorInfo


def error_body(
    message: str, type_: str, code: str | int | None = None, param: str | None = None
) -> ErrorBody:
    """The body of an error answer. ``code`` is a string for OpenAI's own codes
    (``"model_not_found"``) and the HTTP status as an integer where vLLM puts one there."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
