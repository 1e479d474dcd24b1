"""Tenant API keys and per-tenant request-rate limits.

Role: load the ``--api-keys`` YAML file into a :class:`KeyRing` (key -> tenant and its
requests-per-minute limit) and keep one token bucket per tenant (:class:`RateLimiter`), so the
gateway can answer 401 (no or unknown key) and 429 with a ``Retry-After`` in whole seconds.
Another tenant's model is the caller's decision, and it answers the same 404 as for a model
that does not exist.

File format (``keys:`` may be omitted and the mapping given at the top level)::

    keys:
      sk-acme-1: {tenant: acme, requestsPerMinute: 600}
      sk-beta-1: {tenant: beta}          # no limit

Must not: do network I/O or read the clock (``now`` is passed in, monotonic seconds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class KeyFileError(ValueError):
    """The key file is malformed; the message names the entry, the field and what is allowed."""


@dataclass(frozen=True, slots=True)
class TenantKey:
    tenant: str
    requests_per_minute: int | None


class KeyRing:
    def __init__(self, keys: Mapping[str, TenantKey]) -> None:
        self._keys = dict(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, key: str | None) -> TenantKey | None:
        return self._keys.get(key) if key else None

    @classmethod
    def parse(cls, document: Any) -> KeyRing:
        if isinstance(document, Mapping) and isinstance(document.get("keys"), Mapping):
            document = document["keys"]
        if not isinstance(document, Mapping):
            raise KeyFileError("api keys: expected a mapping of key -> {tenant, requestsPerMinute}")
        keys: dict[str, TenantKey] = {}
        limits: dict[str, int | None] = {}
        for raw_key, entry in document.items():
            key = str(raw_key)
            label = f"api key {key[:6]}…"
            if not isinstance(entry, Mapping):
                raise KeyFileError(f"{label}: expected a mapping with tenant, got {entry!r}")
            tenant = entry.get("tenant")
            if not isinstance(tenant, str) or not tenant:
                raise KeyFileError(f"{label}: tenant must be a non-empty string, got {tenant!r}")
            rpm = entry.get("requestsPerMinute")
            if rpm is not None and (not isinstance(rpm, int) or isinstance(rpm, bool) or rpm < 1):
                raise KeyFileError(
                    f"{label}: requestsPerMinute must be an integer >= 1 (or absent for no"
                    f" limit), got {rpm!r}"
                )
            if tenant in limits and limits[tenant] != rpm:
                raise KeyFileError(
                    f"{label}: tenant {tenant!r} has requestsPerMinute {rpm!r} here but"
                    f" {limits[tenant]!r} on another key; the limit is per tenant, so they"
                    " must agree"
                )
            limits[tenant] = rpm
            keys[key] = TenantKey(tenant, rpm)
        return cls(keys)

    @classmethod
    def load(cls, path: str | Path) -> KeyRing:
        with open(path, encoding="utf-8") as f:
            return cls.parse(yaml.safe_load(f))


def bearer_token(authorization: str | None) -> str | None:
    """The key from ``Authorization: Bearer <key>`` (what OpenAI clients send)."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """One token bucket per tenant: ``rpm`` tokens of burst, refilled at ``rpm/60`` per second.

    E.g. rpm=60: 60 requests at once pass, the 61st waits; 0.5 s later none is back yet
    (Retry-After: 1), after 1 s one is.
    """

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}

    def check(self, tenant: str, rpm: int | None, now: float) -> float | None:
        """Take a token; None if allowed, else seconds until one is available."""
        if rpm is None:
            return None
        rate = rpm / 60.0
        b = self._buckets.get(tenant)
        if b is None:
            b = self._buckets[tenant] = _Bucket(float(rpm), now)
        b.tokens = min(float(rpm), b.tokens + (now - b.at) * rate)
        b.at = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return None
        return (1.0 - b.tokens) / rate


def retry_after_header(seconds: float) -> str:
    """Whole seconds, rounded up, at least 1 (HTTP's Retry-After has no fractions)."""
    return str(max(1, math.ceil(seconds)))
