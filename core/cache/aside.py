"""Cache-aside in Redis for the hot reads, versioned so a worker's invalidation always wins.

A cached body lives under `<data key>@<epoch>.<version>`. Readers resolve both counters and
the body in one Lua call; writers (the drain, and the API for its own writes) only INCR a
version. A reader that loaded a value from MongoDB before an invalidation stores it under
the old version, which no reader asks for any more, so no stale value can be written back
over a newer one. The epoch invalidates everything at once (bulk imports, a new global
mean, Redis coming back after an outage). Concurrent misses of one key in a process share
one load (single flight).

Redis is optional for reads: when it fails, the breaker (`RedisHealth`) sends reads
straight to MongoDB for a short cool-down.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.cache.breaker import RedisHealth
from core.cache.keys import CacheKey, Keys
from core.cache.near import KnownMovies, NearCache

FLIGHT_GRACE = 0.05  # seconds a finished load still answers requests for the same key
# Spread of entry lifetimes, as a share of the TTL: entries filled together expire apart.
TTL_JITTER = 0.1

_READ = """
local epoch = redis.call('GET', KEYS[1]) or '0'
local version = redis.call('GET', KEYS[2]) or '0'
local key = ARGV[1] .. '@' .. epoch .. '.' .. version
local value = redis.call('GET', key)
redis.call('HINCRBY', KEYS[3], value and 'hits' or 'misses', 1)
return {key, value}
"""


class Cache:
    """Versioned cache-aside of JSON bodies, with single flight per key in this process."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        ttl: float,
        jitter: float = TTL_JITTER,
        health: RedisHealth | None = None,
        enabled: bool = True,
        near: NearCache | None = None,
    ) -> None:
        self.redis = redis
        self._ttl = ttl
        self._jitter = jitter
        self.health = health or RedisHealth()
        self.enabled = enabled
        self._read = redis.register_script(_READ)
        self._flights: dict[str, asyncio.Future[bytes]] = {}
        self.keys = Keys(prefix)
        self.near = near if enabled else None
        self.known_movies = KnownMovies()

    # ---- reads -----------------------------------------------------------------------------

    async def fetch(self, key: CacheKey, load: Callable[[], Awaitable[Any]]) -> bytes:
        """The cached JSON body for `key`, else `load()` serialized and stored."""
        resolved = await self._lookup(key)
        if isinstance(resolved, bytes):
            return resolved
        flight = resolved or key.data
        running = self._flights.get(flight)
        if running is not None:
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                if not running.cancelled():
                    raise  # this request itself was cancelled
                return orjson.dumps(await load())  # the loader's client went away: load here
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._flights[flight] = future
        try:
            body = orjson.dumps(await load())
            if resolved is not None:
                # Stored before the flight ends, so a late miss finds the value, not a gap.
                await self._store(resolved, body)
        except asyncio.CancelledError:
            future.cancel()
            del self._flights[flight]
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            del self._flights[flight]
            raise
        future.set_result(body)
        if resolved is None:
            del self._flights[flight]
        else:
            # A request whose lookup missed just before our SET landed resumes after we are
            # done: let it join this result (same version, so never stale) for a moment.
            asyncio.get_running_loop().call_later(FLIGHT_GRACE, self._land, flight, future)
        return body

    def _land(self, flight: str, future: asyncio.Future[bytes]) -> None:
        if self._flights.get(flight) is future:
            del self._flights[flight]

    async def _lookup(self, key: CacheKey) -> bytes | str | None:
        """The body (bytes), else the resolved key to fill (str), else None (no Redis)."""
        if not self.enabled or not self.health.available:
            return None
        try:
            resolved, value = await self._read(
                keys=[self.keys.epoch, key.version, self.keys.stats], args=[key.data]
            )
        except RedisError as exc:
            self.health.failed(exc)
            return None
        if self.health.succeeded():
            # Writes made during the outage invalidated nothing: start a new epoch.
            await self.everything_changed()
            return None
        return value if value is not None else resolved.decode()

    async def _store(self, resolved: str, body: bytes) -> None:
        ttl = self._ttl * (1 + random.uniform(-self._jitter, self._jitter))
        try:
            await self.redis.set(resolved, body, px=max(1, int(ttl * 1000)))
        except RedisError as exc:
            self.health.failed(exc)

    # ---- invalidation ----------------------------------------------------------------------

    async def movies_changed(self, movie_ids: Iterable[Any]) -> None:
        """Movies were stored or changed: their entries (new ones have none yet), every
        list page and the genres go."""
        await self._bump(
            [self.keys.movie(m).version for m in movie_ids]
            + [self.keys.movies, self.keys.genres().version]
        )

    async def movies_deleted(self, movie_ids: list[Any]) -> None:
        """Movies are gone: every process forgets it saw them (see KnownMovies)."""
        self.known_movies.forget(movie_ids)
        await self._bump(
            [self.keys.movie(m).version for m in movie_ids] + [self.keys.movies],
            notes=[f"{self.keys.deleted_movie}{m}" for m in movie_ids],
        )

    async def users_changed(self, user_ids: Iterable[Any]) -> None:
        """A user's account, stats or ratings changed: their view and profile pages go."""
        await self._bump([self.keys.user(u).version for u in user_ids])

    async def summaries_changed(self, movie_ids: list[Any], user_ids: list[Any]) -> None:
        """A drain stored these summaries: their entries (and list pages, for movies) go."""
        keys = [self.keys.movie(m).version for m in movie_ids]
        keys += [self.keys.user(u).version for u in user_ids]
        await self._bump(keys + ([self.keys.movies] if movie_ids else []))

    async def everything_changed(self) -> None:
        """Bulk changes (imports, a new global mean): every entry goes."""
        await self._bump([self.keys.epoch])

    async def _bump(self, version_keys: list[str], notes: Iterable[str] = ()) -> None:
        """INCR the versions and announce them (and `notes`) to every process."""
        if not version_keys or not self.enabled:
            return
        if self.near is not None:  # this process sees its own writes at once
            self.near.invalidate(version_keys, epoch_key=self.keys.epoch)
        if not self.health.available:
            return  # nothing cached is read while Redis is down; recovery starts a new epoch
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for version_key in version_keys:
                    pipe.incr(version_key)
                pipe.publish(self.keys.channel, " ".join([*version_keys, *notes]))
                await pipe.execute()
        except RedisError as exc:
            self.health.failed(exc)

    async def clear(self) -> None:
        """Drop every key of this namespace (tests, operators)."""
        match = f"{self.keys.prefix}*"
        keys = [k async for k in self.redis.scan_iter(match=match, count=1000)]
        for start in range(0, len(keys), 1000):
            await self.redis.delete(*keys[start : start + 1000])
