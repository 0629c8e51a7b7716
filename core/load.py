"""How busy the API is: each API process adds the requests it served in each second to
Redis, and drains read it so they rest only while people are waiting on the database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.cache import RedisHealth

KEEP = 10  # seconds a per-second count lives in Redis
# A reader looks at this many seconds around its own clock and takes the busiest: counts
# land a second late, and the API's and the worker's clocks may differ by a little.
LOOK_BACK, LOOK_AHEAD = 4, 2


def _key(prefix: str, second: int) -> str:
    return f"{prefix}load:{second}"


class RequestMeter:
    """Counts this process's requests per second and adds each finished second to Redis
    (one command a second at most, sent in the background; lost while Redis is down)."""

    def __init__(self, redis: Redis, *, prefix: str, health: RedisHealth) -> None:
        self._redis = redis
        self._prefix = prefix
        self._health = health
        self._second = int(time.time())
        self._count = 0
        self._sending: set[asyncio.Task[None]] = set()  # held: the loop keeps weak references

    def hit(self) -> None:
        now = int(time.time())
        if now != self._second:
            if self._count and self._health.available:
                task = asyncio.create_task(
                    self._send(_key(self._prefix, self._second), self._count)
                )
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)
            self._second, self._count = now, 0
        self._count += 1

    async def _send(self, key: str, count: int) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.incrby(key, count)
                pipe.expire(key, KEEP)
                await pipe.execute()
        except RedisError as exc:
            self._health.failed(exc)


async def api_requests_per_second(redis: Redis, *, prefix: str) -> float | None:
    """The busiest recent second's requests, all API processes together (None: unknown)."""
    now = int(time.time())
    keys = [_key(prefix, s) for s in range(now - LOOK_BACK, now + LOOK_AHEAD + 1)]
    try:
        counts = await redis.mget(keys)
    except RedisError:
        return None
    return float(max(int(c or 0) for c in counts))


def api_busy(
    redis: Redis, *, prefix: str, threshold: float, every: float = 1.0
) -> Callable[[], Awaitable[bool]]:
    """Whether the API serves at least `threshold` requests a second (unknown counts as busy),
    asked of Redis at most once every `every` seconds."""
    last: list[float | bool] = [0.0, True]

    async def busy() -> bool:
        now = time.monotonic()
        if now - float(last[0]) >= every:
            rate = await api_requests_per_second(redis, prefix=prefix)
            last[:] = [now, rate is None or rate >= threshold]
        return bool(last[1])

    return busy
