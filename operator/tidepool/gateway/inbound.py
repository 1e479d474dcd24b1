"""What the gateway lets through to an engine: which paths, and how large a prompt.

Role: :func:`forwarded_path` resolves ``.``, ``..`` and empty segments the way the engine's
HTTP stack would, and answers with the resolved path only when it is one of the OpenAI
inference endpoints in :data:`FORWARDED_PATHS`. The upstream URL is built from that answer,
never from the raw request target: vLLM also serves POST endpoints that are not for tenants
(``/tokenize``, ``/reset_prefix_cache``, ``/sleep``, ``/v1/load_lora_adapter``), and
``/v1/../sleep`` would otherwise reach them. :func:`prompt_chars` measures a request's prompt,
so a limit can be set on it without tokenising.

Must not: do I/O or import ``aiohttp``; the async shell in :mod:`tidepool.gateway.proxy`
answers the refusals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

#: The OpenAI endpoints an engine serves to tenants, each a POST with a JSON body naming the
#: model. An allowlist rather than "anything under /v1/": an engine's admin endpoints live
#: under /v1/ too.
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


def normalise(path: str) -> str:
    """``path`` with ``.``, ``..`` and empty segments resolved; ``..`` stops at the root.

    E.g. ``/v1/chat/completions/../../../health`` -> ``/health``; ``/v1//completions/`` ->
    ``/v1/completions``.
    """
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return "/" + "/".join(segments)


def forwarded_path(path: str) -> str | None:
    """The path to send upstream for a request to ``path`` (already percent-decoded), or None
    when it must not reach an engine."""
    resolved = normalise(path)
    return resolved if resolved in FORWARDED_PATHS else None


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
