"""Caching: versioned cache-aside in Redis (`aside`), its keys (`keys`), the breaker that
sends reads past a failing Redis (`breaker`), and what each process keeps of its own in step
with every invalidation (`near`)."""

from redis.asyncio import Redis

from core.cache.aside import Cache
from core.cache.breaker import RedisHealth
from core.cache.keys import CacheKey, Keys
from core.cache.near import KnownMovies, NearCache, NearEntry, follow_invalidations
from core.settings import Settings


def cache_for(
    settings: Settings,
    redis: Redis,
    health: RedisHealth | None = None,
    near: NearCache | None = None,
) -> Cache:
    """The cache every process of one deployment shares: namespaced by its database."""
    return Cache(
        redis,
        prefix=f"{settings.mongodb_db}:",
        ttl=settings.cache_ttl,
        health=health or RedisHealth(settings.redis_cooldown),
        enabled=settings.cache_enabled,
        near=near,
    )


__all__ = [
    "Cache",
    "CacheKey",
    "Keys",
    "KnownMovies",
    "NearCache",
    "NearEntry",
    "RedisHealth",
    "cache_for",
    "follow_invalidations",
]
