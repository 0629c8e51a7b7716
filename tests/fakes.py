"""Stand-ins for the side effects services take as arguments, for tests about queries."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from core.cache import Cache

# A disabled cache never talks to Redis.
NO_CACHE = Cache(Redis(), prefix="unit:", ttl=1, enabled=False)


class NoQueue:
    """Queues nothing and reports nothing missed."""

    async def schedule_aggregation(self, **kwargs: Any) -> list[tuple[str, str]]:
        return []
