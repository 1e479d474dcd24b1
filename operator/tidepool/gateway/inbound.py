"""What the gateway lets through to an engine: which paths, and how large a prompt.

Role: :data:`FORWARDED_PATHS` is the allowlist of OpenAI inference endpoints; the async shell
in :mod:`tidepool.gateway.proxy` registers one route for each, so anything else (an engine's
admin endpoints, a path with ``.`` or ``..`` segments) gets the router's 404 and never reaches
an engine. :func:`prompt_chars` measures a request's prompt, so a limit can be set on it
without tokenising.

Must not: do I/O or import ``aiohttp``; the async shell answers the refusals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

#: The OpenAI endpoints an engine serves to tenants, each a POST with a JSON body naming the
#: model. Exact paths, not "anything under /v1/": vLLM also serves POST endpoints that are not
#: for tenants (``/tokenize``, ``/reset_prefix_cache``, ``/sleep``, ``/v1/load_lora_adapter``),
#: some of them under /v1/. A catch-all ``/v1/...`` route once let ``/v1/../sleep`` through:
#: the gateway built the engine's URL with yarl, whose URL join resolves ``..``, so the engine
#: was asked for ``/sleep``. aiohttp's router matches the path as sent, dot segments and all.
FORWARDED_PATHS: Final = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/rerank",
        "/v1/score",
    }
)

#: Request fields that carry the prompt: completions' ``prompt``, chat's ``messages``,
#: embeddings' and responses' ``input``, and rerank's and score's texts.
_PROMPT_FIELDS: Final = ("prompt", "messages", "input", "query", "documents", "text_1", "text_2")


def prompt_chars(payload: Mapping[str, Any]) -> int:
    """Characters of text in the prompt fields of ``payload``, summed over every string in them
    (chat messages' roles included: they cost tokens too). Token-ID prompts (lists of
    integers) count nothing here; the body limit bounds those.

    Iterative, not recursive: the payload may be as deep as the JSON parser allowed.
    """
    total = 0
    stack: list[Any] = [payload.get(field) for field in _PROMPT_FIELDS]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total
