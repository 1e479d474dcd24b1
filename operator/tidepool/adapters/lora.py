"""vLLM's runtime LoRA endpoints and its queue gauges, over plain HTTP (stdlib ``urllib``).

Implements :class:`tidepool.reconcile.shared_engine.LoraClient` against one engine replica:

- ``POST /v1/load_lora_adapter {"lora_name", "lora_path"}`` and
  ``POST /v1/unload_lora_adapter {"lora_name"}``: vLLM's runtime adapter updates, served only with
  ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` (vLLM's LoRA documentation, "Dynamically serving LoRA
  Adapters"). Success is a 200 with a plain-text body; a refusal is vLLM's OpenAI-style
  ``{"error": {"message": ...}}`` (or a bare ``{"message": ...}`` from older releases);
- ``GET /v1/models``: the adapters are the cards whose ``parent`` is set (the base model's id);
- ``GET /metrics``: ``vllm:num_requests_running`` plus ``vllm:num_requests_waiting``.

The reconcile loop runs in a Kopf executor thread, so the calls are synchronous with short
timeouts, and every failure comes back as a message (or ``None`` for a read), never as an
exception: one unreachable replica must not stop the fleet's other replicas from being served.
"""

import json
import urllib.error
import urllib.request
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

#: Seconds to wait for one call. A load reads the adapter's weights (from a local volume, small
#: next to the base model), so it gets longer than a read.
READ_TIMEOUT: Final = 3.0
LOAD_TIMEOUT: Final = 30.0
QUEUE_GAUGES: Final = frozenset({"vllm:num_requests_running", "vllm:num_requests_waiting"})


class HttpLoraClient:
    """One engine replica's adapters and queue, at ``endpoint`` (``http://<pod IP>:<port>``)."""

    def __init__(
        self, *, read_timeout: float = READ_TIMEOUT, load_timeout: float = LOAD_TIMEOUT
    ) -> None:
        self._read_timeout = read_timeout
        self._load_timeout = load_timeout

    def load(self, endpoint: str, name: str, path: str) -> str | None:
        """Load adapter ``name`` from ``path``; None on success, else the engine's message."""
        return self._post(
            f"{endpoint}/v1/load_lora_adapter", {"lora_name": name, "lora_path": path}
        )

    def unload(self, endpoint: str, name: str) -> str | None:
        """Unload adapter ``name``; None on success, else the engine's message."""
        return self._post(f"{endpoint}/v1/unload_lora_adapter", {"lora_name": name})

    def loaded(self, endpoint: str) -> frozenset[str] | None:
        """The adapters the replica serves (``/v1/models`` cards with a ``parent``), or None."""
        body = self._get(f"{endpoint}/v1/models")
        if body is None:
            return None
        try:
            cards = json.loads(body).get("data", [])
            return frozenset(str(c["id"]) for c in cards if c.get("parent"))
        except (ValueError, AttributeError, KeyError, TypeError):
            return None

    def queue(self, endpoint: str) -> float | None:
        """Requests running plus waiting on the replica, from its ``/metrics``, or None."""
        body = self._get(f"{endpoint}/metrics")
        if body is None:
            return None
        total, seen = 0.0, False
        try:
            for family in text_string_to_metric_families(body):
                for sample in family.samples:
                    if sample.name in QUEUE_GAUGES:
                        total += sample.value
                        seen = True
        except ValueError:
            return None
        return total if seen else None

    # ------------------------------------------------------------------------------ HTTP

    def _get(self, url: str) -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=self._read_timeout) as resp:
                return str(resp.read().decode())
        except (OSError, ValueError):
            return None

    def _post(self, url: str, payload: dict[str, Any]) -> str | None:
        request = urllib.request.Request(
            url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self._load_timeout):
                return None
        except urllib.error.HTTPError as exc:
            return _error_message(exc.code, exc.read().decode(errors="replace"))
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            return f"engine unreachable at {url}: {reason}"


def _error_message(status: int, body: str) -> str:
    """vLLM's error text: ``error.message`` (OpenAI's shape), ``message``, or the body itself."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        inner = parsed.get("error")
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if parsed.get("message"):
            return str(parsed["message"])
    text = body.strip()
    return text[:500] if text else f"HTTP {status}"
