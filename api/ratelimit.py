"""Fixed-window counters in Redis, shared by every API process.

Attempts are counted per client IP on the login, token and revoke endpoints; wrong
passwords are counted per (account, IP) and per account (see `api.handlers.auth`). When
Redis is down
the limiter lets requests through (logged once by the shared breaker): refusing every login
because a cache is down would be worse than a short unlimited window.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.cache import RedisHealth

_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {count, ttl}
"""
_PEEK = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('PTTL', KEYS[1])
return {count, ttl}
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one hit: the tightest of the limits that applied."""

    allowed: bool
    limit: int
    remaining: int
    reset: int  # seconds until the window that decided this ends

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset)
        return headers


class RateLimiter:
    def __init__(self, redis: Redis, *, prefix: str, health: RedisHealth) -> None:
        self._redis = redis
        self._prefix = prefix
        self._health = health
        self._hit = redis.register_script(_HIT)
        self._peek = redis.register_script(_PEEK)

    def _key(self, scope: str, subject: str) -> str:
        # Subjects (usernames, IPs) are hashed: no personal data in key names.
        digest = hashlib.blake2b(subject.encode(), digest_size=12).hexdigest()
        return f"{self._prefix}rl:{scope}:{digest}"

    async def hit(self, limits: list[tuple[str, str, int, int]]) -> Verdict | None:
        """Count one request against each (scope, subject, limit, window seconds).

        Returns the tightest verdict, or None when Redis cannot be asked.
        """
        return await self._verdict(limits, count=True)

    async def peek(self, limits: list[tuple[str, str, int, int]]) -> Verdict | None:
        """The verdict `hit` would give for what was counted so far, counting nothing."""
        return await self._verdict(limits, count=False)

    async def _verdict(
        self, limits: list[tuple[str, str, int, int]], *, count: bool
    ) -> Verdict | None:
        if not limits or not self._health.available:
            return None
        verdicts = []
        try:
            for scope, subject, limit, window in limits:
                key = self._key(scope, subject)
                if count:
                    seen, ttl_ms = await self._hit(keys=[key], args=[window * 1000])
                else:
                    seen, ttl_ms = await self._peek(keys=[key])
                    seen += 1  # as if this one were counted: refused once `limit` are spent
                    ttl_ms = ttl_ms if ttl_ms > 0 else window * 1000
                verdicts.append(
                    Verdict(
                        allowed=seen <= limit,
                        limit=limit,
                        remaining=max(0, limit - seen),
                        reset=max(1, math.ceil(ttl_ms / 1000)),
                    )
                )
        except RedisError as exc:
            self._health.failed(exc)
            return None
        refused = [v for v in verdicts if not v.allowed]
        if refused:
            return max(refused, key=lambda v: v.reset)
        return min(verdicts, key=lambda v: v.remaining)
