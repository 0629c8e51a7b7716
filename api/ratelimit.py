"""Fixed-window counters and token buckets in Redis, shared by every API process.

Attempts are counted per client IP on the login, token and revoke endpoints; password
checks per (account, IP), counted before the check, and per account through a bucket (see
`api.handlers.auth`). When Redis is down the limiter lets requests through (logged once by
the shared breaker): refusing every login because a cache is down would be worse than a
short unlimited window.
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
# GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp): a bucket
# of `burst` tokens refilled one per `interval` ms, on Redis's own clock; a take of `cost`
# tokens moves the timestamp by `cost` intervals. Returns {allowed, tokens left, ms until
# `cost` tokens are there}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local after = tat + interval * cost
local room = interval * burst
if after - now > room then
  return {0, math.floor((room - (tat - now)) / interval), after - now - room}
end
redis.call('SET', KEYS[1], after, 'PX', after - now)
return {1, math.floor((room - (after - now)) / interval), 0}
"""
# Only a live, positive count: a DECR on an expired key would leave -1 with no expiry.
_REFUND = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count > 0 then redis.call('DECR', KEYS[1]) end
return count
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
        self._take = redis.register_script(_TAKE)
        self._refund = redis.register_script(_REFUND)

    def _key(self, scope: str, subject: str) -> str:
        # Subjects (usernames, IPs) are hashed: no personal data in key names.
        digest = hashlib.blake2b(subject.encode(), digest_size=12).hexdigest()
        return f"{self._prefix}rl:{scope}:{digest}"

    async def hit(self, limits: list[tuple[str, str, int, int]]) -> Verdict | None:
        """Count one request against each (scope, subject, limit, window seconds).

        Returns the tightest verdict, or None when Redis cannot be asked.
        """
        return await self._verdict(limits, count=True)

    async def take(
        self, scope: str, subject: str, *, burst: int, window: int, cost: int = 1
    ) -> Verdict | None:
        """Take `cost` tokens from the (scope, subject) bucket: `burst` tokens, refilled at
        `burst` per `window` seconds; None when Redis cannot be asked."""
        if not self._health.available:
            return None
        interval = max(1, window * 1000 // burst)
        try:
            allowed, left, wait_ms = await self._take(
                keys=[self._key(scope, subject)], args=[interval, burst, cost]
            )
        except RedisError as exc:
            self._health.failed(exc)
            return None
        return Verdict(
            allowed=bool(allowed),
            limit=burst,
            remaining=int(left),
            reset=max(1, math.ceil((wait_ms or interval) / 1000)),
        )

    async def refund(self, scope: str, subject: str) -> None:
        """Give back one count of a fixed-window counter (an attempt that turned out fine)."""
        if not self._health.available:
            return
        try:
            await self._refund(keys=[self._key(scope, subject)])
        except RedisError as exc:
            self._health.failed(exc)

    async def remember(self, scope: str, subject: str, *, ttl: int) -> None:
        """Note (scope, subject) for `ttl` seconds (an address an account logged in from)."""
        if not self._health.available:
            return
        try:
            await self._redis.set(self._key(scope, subject), 1, ex=ttl)
        except RedisError as exc:
            self._health.failed(exc)

    async def known(self, scope: str, subject: str) -> bool:
        """Whether (scope, subject) was remembered and has not expired."""
        if not self._health.available:
            return False
        try:
            return bool(await self._redis.exists(self._key(scope, subject)))
        except RedisError as exc:
            self._health.failed(exc)
            return False

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
