"""Stand-ins for the side effects services take as arguments, for tests about queries."""

from __future__ import annotations

from redis.asyncio import Redis

from core.cache import Cache

# A disabled cache never talks to Redis.
NO_CACHE = Cache(Redis(), prefix="unit:", ttl=1, enabled=False)


class NoQueue:
    """Queues nothing (the intents stay in MongoDB for whoever drains them)."""

    async def request_drain(self) -> bool:
        return True
