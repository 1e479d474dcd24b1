"""Tenant API keys (hashed, reloaded as their file changes) and per-tenant request-rate limits.

Role: turn the ``--api-keys`` YAML file into a :class:`KeyRing` (key -> tenant and its
requests-per-minute limit), notice when the file changes (:class:`KeyFile`), and keep one token
bucket per tenant (:class:`RateLimiter`) sized to this replica's share of the tenant's limit,
so the gateway can answer 401 (no or unknown key) and 429 with a ``Retry-After`` in whole
seconds. Another tenant's model is the caller's decision, and it answers the same 404 as for
a model that does not exist.

File format (``keys:`` may be omitted and the mapping given at the top level)::

    keys:
      sk-acme-1: {tenant: acme, requestsPerMinute: 600}
      sk-beta-1: {tenant: beta}          # no limit
      "sha256:5b1e...64 hex digits...": {tenant: gamma, requestsPerMinute: 60}

An entry is the key itself, or ``sha256:`` and the lowercase hex SHA-256 of the key's UTF-8
bytes (``printf %s "$KEY" | sha256sum``), so the Secret need not hold any key in plain text.
Either way only the digest is kept in memory, and errors and logs name an entry by its
position, its digest's first 12 hex digits and its tenant, never by the key. ``keys: {}`` is
a valid file that revokes every key.

Hashed keys, and why a dict lookup on the digest is safe: a request's key is hashed and the
digest looked up. The lookup's timing can only depend on the digest of the caller's own guess,
and SHA-256 gives nothing of a stored key away from that, so no constant-time compare is
needed (one would also cost a pass over every key per request).

Reload: a Kubernetes Secret mounted as a volume is updated in place by the kubelet (an atomic
swap of the ``..data`` symlink), so the gateway reads the file again every few seconds and
swaps in a new ring when its bytes changed. A file that no longer parses, or is gone, keeps
the keys last accepted (a typo in the Secret must not lock every tenant out, or let everyone
in), and :func:`reload_decision` says why in words that name the entry and the field; the
same bad content is reported once, not every poll.

Rate limits over several replicas (Tidepool splits the budget, it does not shard tenants):
each replica enforces ``requestsPerMinute / replicas`` per tenant (:func:`replica_share`),
``replicas`` being the number of ready endpoints of the gateway's own Service. The sum of the
shares is the tenant's limit, so no spread of traffic lets a tenant past it; and a Service
spreads connections evenly over its endpoints (kube-proxy picks one per connection at
random, IPVS round-robin), so a tenant with many connections, or with requests on fresh
ones, finds its full limit. Worked: 600 rpm over 3 replicas is 200 each; when a fourth turns
ready each refills at 150. The limits of that bound:

- Few long-lived connections skew it one way only: a tenant that sends everything over one
  keep-alive connection reaches one replica and gets ``rpm / replicas``, never more than its
  limit. A 429 closes its connection (``Connection: close``), so the retry reconnects and
  lands where the Service puts it, which evens a tenant out over its retries.
- A replica that joins brings a full bucket of its share, once: in the minute it turns
  ready a tenant can get up to ``rpm / replicas`` more. A replica that leaves takes its
  unspent share with it, so that moment only admits less.
- Each bucket holds at least one token, so the burst is at least ``replicas`` requests; with
  ``requestsPerMinute / replicas`` of 10 or more that rounding stays under 10%.

Sharding tenants over replicas (each tenant's bucket on one owner, the others forwarding to
it or asking it for tokens) would be exact under any skew, but it puts a second hop or a
token round trip on every request, funnels a hot tenant through one replica, and makes a
lost owner an outage for its tenants until ownership moves (with its bucket lost anyway).
The split needs no traffic between replicas and no new way to fail.

Must not: do network I/O or read the clock (``now`` is passed in, monotonic seconds); its only
I/O is reading the key file.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import yaml

from tidepool.policy.token_bucket import TokenBucket

#: An entry that is already a key's digest, as ``sha256sum`` prints it.
HASHED_PREFIX: Final = "sha256:"
_HEX_DIGEST: Final = re.compile(r"[0-9a-f]{64}")


class KeyFileError(ValueError):
    """The key file is malformed; the message names the entry, the field and what is allowed."""


@dataclass(frozen=True, slots=True)
class TenantKey:
    tenant: str
    requests_per_minute: int | None


def key_digest(key: str) -> bytes:
    """SHA-256 of the key's UTF-8 bytes: what the ring stores and looks up."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def _entry_digest(position: int, raw_key: object) -> bytes:
    """The digest an entry stands for, whether it gives the key or its ``sha256:`` digest."""
    if not isinstance(raw_key, str) or not raw_key:
        raise KeyFileError(
            f"api key entry {position}: the key must be a non-empty string, got a"
            f" {type(raw_key).__name__}"
        )
    if not raw_key.startswith(HASHED_PREFIX):
        return key_digest(raw_key)
    hex_digest = raw_key.removeprefix(HASHED_PREFIX)
    if not _HEX_DIGEST.fullmatch(hex_digest):
        raise KeyFileError(
            f"api key entry {position}: after {HASHED_PREFIX!r} the key must be 64 lowercase"
            f" hex digits (printf %s KEY | sha256sum), got {len(hex_digest)} characters"
        )
    return bytes.fromhex(hex_digest)


class KeyRing:
    """Key digests -> tenant and limit. Immutable once built: a reload builds a new ring."""

    def __init__(self, keys: Mapping[bytes, TenantKey]) -> None:
        self._keys = dict(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, key: str | None) -> TenantKey | None:
        return self._keys.get(key_digest(key)) if key else None

    @classmethod
    def parse(cls, document: Any) -> KeyRing:
        if isinstance(document, Mapping) and isinstance(document.get("keys"), Mapping):
            document = document["keys"]
        if not isinstance(document, Mapping):
            raise KeyFileError(
                "api keys: expected a mapping of key -> {tenant, requestsPerMinute} (or"
                f" keys: {{...}}), got a {type(document).__name__}"
            )
        keys: dict[bytes, TenantKey] = {}
        limits: dict[str, int | None] = {}
        for position, (raw_key, entry) in enumerate(document.items(), start=1):
            digest = _entry_digest(position, raw_key)
            label = f"api key entry {position} ({HASHED_PREFIX}{digest.hex()[:12]}…)"
            if not isinstance(entry, Mapping):
                raise KeyFileError(
                    f"{label}: expected a mapping with tenant, got a {type(entry).__name__}"
                )
            tenant = entry.get("tenant")
            if not isinstance(tenant, str) or not tenant:
                raise KeyFileError(f"{label}: tenant must be a non-empty string, got {tenant!r}")
            label += f", tenant {tenant!r}"
            rpm = entry.get("requestsPerMinute")
            if rpm is not None and (not isinstance(rpm, int) or isinstance(rpm, bool) or rpm < 1):
                raise KeyFileError(
                    f"{label}: requestsPerMinute must be an integer >= 1 (or absent for no"
                    f" limit), got {rpm!r}"
                )
            if tenant in limits and limits[tenant] != rpm:
                raise KeyFileError(
                    f"{label}: requestsPerMinute is {rpm!r} here but {limits[tenant]!r} on"
                    " another key of this tenant; the limit is per tenant, so they must agree"
                )
            if digest in keys:
                raise KeyFileError(
                    f"{label}: the same key is listed twice (once plain, once as its"
                    f" {HASHED_PREFIX} digest); keep one entry"
                )
            limits[tenant] = rpm
            keys[digest] = TenantKey(tenant, rpm)
        return cls(keys)


def parse_key_file(content: bytes) -> KeyRing:
    """The ring a key file's bytes hold; :class:`KeyFileError` names what is wrong.

    A YAML error is reported by line and column only: its usual excerpt of the line could
    print a key into the log.
    """
    try:
        document = yaml.safe_load(content.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise KeyFileError(f"api keys: the file is not UTF-8 (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise KeyFileError(f"api keys: the file is not valid YAML{where}") from None
    return KeyRing.parse(document)


class Reload(StrEnum):
    UNCHANGED = "unchanged"
    """The bytes are the ones last looked at: nothing to do or say."""
    RELOADED = "reloaded"
    """New bytes that parse: their ring replaces the old one."""
    REJECTED = "rejected"
    """New bytes that do not parse: the old ring stays."""
    MISSING = "missing"
    """The file is gone: the old ring stays."""


#: The fingerprint of a file that is not there (no SHA-256 digest is empty).
_ABSENT: Final = b""


@dataclass(frozen=True, slots=True)
class KeyReload:
    """What one look at the key file decided, and why."""

    outcome: Reload
    fingerprint: bytes
    """SHA-256 of the bytes looked at (empty: no file); the next look compares with it."""
    ring: KeyRing | None
    """The ring to use from now on; None: keep the current one."""
    reason: str


def reload_decision(seen: bytes, content: bytes | None) -> KeyReload:
    """Whether the key file's ``content`` (None: gone) replaces the ring; ``seen`` is the
    fingerprint of the content looked at last, so a change is acted on, and logged, once."""
    fingerprint = _ABSENT if content is None else hashlib.sha256(content).digest()
    if fingerprint == seen:
        return KeyReload(Reload.UNCHANGED, fingerprint, None, "the key file has not changed")
    if content is None:
        return KeyReload(
            Reload.MISSING, fingerprint, None,
            "the key file is gone; keeping the keys last loaded (write keys: {} to revoke all)",
        )  # fmt: skip
    try:
        ring = parse_key_file(content)
    except KeyFileError as exc:
        return KeyReload(Reload.REJECTED, fingerprint, None, f"{exc}; keeping the keys last loaded")
    return KeyReload(Reload.RELOADED, fingerprint, ring, f"loaded {len(ring)} keys")


class KeyFile:
    """The key file and the ring last accepted from it.

    Built at startup, where a missing or malformed file is an error (the gateway must not
    start without the keys it was told to use); :meth:`reload` afterwards never raises.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        content = self._read()
        if content is None:
            raise KeyFileError(f"--api-keys: {self.path} does not exist")
        self.ring = parse_key_file(content)
        self._seen = hashlib.sha256(content).digest()

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def reload(self) -> KeyReload:
        """Look at the file again (blocking I/O: call it off the event loop)."""
        decision = reload_decision(self._seen, self._read())
        self._seen = decision.fingerprint
        if decision.ring is not None:
            self.ring = decision.ring
        return decision


def bearer_token(authorization: str | None) -> str | None:
    """The key from ``Authorization: Bearer <key>`` (what OpenAI clients send)."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def replica_share(rpm: int, replicas: int) -> float:
    """This replica's part of a tenant's requests per minute (see the module docstring).

    E.g. 600 rpm over 3 replicas: 200; over 4: 150. ``replicas`` below 1 counts as 1 (this
    replica is serving, whatever a lagging count says).
    """
    return rpm / max(1, replicas)


class RateLimiter:
    """One token bucket per tenant, sized to this replica's share of the tenant's limit:
    ``share`` tokens of burst (at least 1), refilled at ``share/60`` per second.

    E.g. rpm=60 on one replica: 60 requests at once pass, the 61st waits; 0.5 s later none is
    back yet (Retry-After: 1), after 1 s one is. rpm=600 on 3 replicas: 200 at once pass here,
    then one every 0.3 s.
    """

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, tenant: str, rpm: int | None, now: float, replicas: int = 1) -> float | None:
        """Take a token; None if allowed, else seconds until one is available.

        A change of ``replicas`` resizes the bucket (:meth:`TokenBucket.take`): a smaller share
        cuts the tokens held to the new burst, a larger one only refills faster.
        """
        if rpm is None:
            return None
        bucket = self._buckets.setdefault(tenant, TokenBucket())
        return bucket.take(replica_share(rpm, replicas), now)


def retry_after_header(seconds: float) -> str:
    """Whole seconds, rounded up, at least 1 (HTTP's Retry-After has no fractions)."""
    return str(max(1, math.ceil(seconds)))
