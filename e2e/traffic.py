"""OpenAI client traffic through the gateway, for the tests, the demo and the benchmarks.

Only loopback addresses are ever contacted. ``TrafficLoop`` counts every non-200 as a failure:
the migration tests assert that list stays empty.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from waiting import wait_for


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    backend: str
    seconds: float
    headers: dict[str, str] = field(default_factory=dict)


def complete(
    gateway_url: str,
    model: str,
    *,
    max_tokens: int = 8,
    timeout: float = 120.0,
    api_key: str | None = None,
) -> Reply:
    """One OpenAI completion through the gateway."""
    payload = json.dumps({"model": model, "prompt": "hello tidepool", "max_tokens": max_tokens})
    req = urllib.request.Request(
        f"{gateway_url}/v1/completions",
        data=payload.encode(),
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {api_key}"} if api_key else {}),
        },
        method="POST",
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(
                status=resp.status,
                body=json.loads(resp.read() or b"{}"),
                backend=resp.headers.get("X-Tidepool-Backend", ""),
                seconds=time.monotonic() - started,
                headers=dict(resp.headers),
            )
    except urllib.error.HTTPError as err:
        raw = err.read()
        return Reply(
            status=err.code,
            body=json.loads(raw) if raw.startswith(b"{") else {"raw": raw.decode(errors="replace")},
            backend="",
            seconds=time.monotonic() - started,
            headers=dict(err.headers),
        )


def gateway_knows(gateway_url: str, model: str, timeout: float = 30.0) -> None:
    """Wait until the gateway's watch has seen ``model`` (it lists it under /v1/models)."""

    def listed() -> bool:
        try:
            with urllib.request.urlopen(f"{gateway_url}/v1/models", timeout=2) as resp:
                return model in {m["id"] for m in json.loads(resp.read())["data"]}
        except OSError:
            return False

    wait_for(listed, timeout=timeout, what=f"gateway to know model {model}")


@dataclass(frozen=True)
class Wake:
    """One request sent to a model at zero replicas."""

    #: From sending the request (it is held) to its Deployment asking for one replica.
    to_replicas: float
    #: The request's whole latency, model load included.
    whole: float


def timed_wake(
    gateway_url: str, model: str, replicas: Callable[[], int | None], *, timeout: float = 60.0
) -> Wake:
    """Wait for ``model`` at zero (``replicas()``: its Deployment's ``spec.replicas``, None while
    it does not exist), send it one request, and time the wake."""
    wait_for(lambda: replicas() == 0, timeout=timeout, what=f"{model} at zero", interval=0.05)
    result: dict[str, float] = {}

    def send() -> None:
        result["whole"] = complete(gateway_url, model, max_tokens=1, timeout=timeout * 2).seconds

    started = time.monotonic()
    sender = threading.Thread(target=send)
    sender.start()
    wait_for(lambda: replicas() == 1, timeout=timeout, what=f"{model} scaled to 1", interval=0.01)
    to_replicas = time.monotonic() - started
    sender.join(timeout=timeout * 2)
    return Wake(to_replicas=to_replicas, whole=result.get("whole", float("nan")))


class TrafficLoop:
    """Continuous client traffic in background threads; counts every non-200 as a failure."""

    def __init__(
        self,
        gateway_url: str,
        model: str,
        *,
        clients: int = 4,
        max_tokens: int = 16,
        pause: float = 0.0,
    ):
        self.gateway_url, self.model, self.pause = gateway_url, model, pause
        self.clients, self.max_tokens = clients, max_tokens
        self.ok = 0
        self.failures: list[str] = []
        self.backends: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            reply = complete(self.gateway_url, self.model, max_tokens=self.max_tokens)
            with self._lock:
                if reply.status == 200:
                    self.ok += 1
                    self.backends[reply.backend] = self.backends.get(reply.backend, 0) + 1
                else:
                    self.failures.append(f"{reply.status}: {reply.body}")
            if self.pause:
                self._stop.wait(self.pause)

    def __enter__(self) -> TrafficLoop:
        for i in range(self.clients):
            t = threading.Thread(target=self._run, name=f"traffic-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=180)
