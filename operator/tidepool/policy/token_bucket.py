"""A token bucket with time passed in: the one rate limit both programs use.

The gateway keeps one per tenant, sized to this replica's share of the tenant's requests per
minute (:class:`tidepool.gateway.auth.RateLimiter`); the operator keeps one for every Event it
posts (:class:`tidepool.handlers.deps.EventBudget`). Time is an argument, so the arithmetic is
tested without a clock and the same bucket serves an asyncio loop's time and ``time.monotonic``.
"""

from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    """``per_minute`` tokens of burst (at least 1), refilled at ``per_minute / 60`` a second.

    Starts full, at the first :meth:`take`'s time. E.g. 60 a minute: 60 takes at once pass,
    the 61st waits 1 s; 0.5 s later half a token is back, which is not one (0.5 s more to
    wait); after 1 s one is.
    """

    tokens: float | None = None
    at: float = 0.0

    def take(self, per_minute: float, now: float) -> float | None:
        """Take one token: None if there was one, else the seconds until there is.

        A change of ``per_minute`` resizes the bucket: a smaller size cuts the tokens held to
        the new burst, a larger one only refills faster (it grants nothing at once).
        """
        burst, rate = max(1.0, per_minute), per_minute / 60.0
        held = burst if self.tokens is None else self.tokens + (now - self.at) * rate
        self.tokens, self.at = min(burst, held), now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / rate
