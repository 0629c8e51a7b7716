"""Cache-aside in Redis for the hot reads, versioned so a worker's invalidation always wins.

A cached body lives under `<data key>@<epoch>.<version>`. Readers resolve both counters and
the body in one Lua call; writers (the aggregation task, and the API for its own writes)
only INCR a version. A reader that loaded a value from MongoDB before an invalidation
stores it under the old version, which no reader asks for any more, so no stale value can
be written back over a newer one. The epoch invalidates everything at once (bulk imports,
a new global mean, Redis coming back after an outage).

Redis is optional for reads: when it fails, a shared breaker (`RedisHealth`) sends reads
straight to MongoDB for a short cool-down, and the outage is logged once, not per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.settings import Settings

log = logging.getLogger(__name__)

FLIGHT_GRACE = 0.05  # seconds a finished load still answers requests for the same key

_READ = """
local epoch = redis.call('GET', KEYS[1]) or '0'
local version = redis.call('GET', KEYS[2]) or '0'
local key = ARGV[1] .. '@' .. epoch .. '.' .. version
local value = redis.call('GET', key)
redis.call('HINCRBY', KEYS[3], value and 'hits' or 'misses', 1)
return {key, value}
"""


class RedisHealth:
    """A breaker shared by the cache and the queue: after a failure, leave Redis alone for
    `cooldown` seconds; log the outage once and its end once."""

    def __init__(self, cooldown: float = 1.0) -> None:
        self._cooldown = cooldown
        self._retry_at = 0.0
        self.down = False

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._retry_at

    def failed(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self._cooldown
        if not self.down:
            self.down = True
            log.warning(
                "redis unavailable: reads bypass the cache, aggregation is deferred",
                extra={"error": repr(exc)},
            )

    def succeeded(self) -> bool:
        """Record a working call; True when it ends an outage."""
        if not self.down:
            return False
        self.down = False
        log.warning("redis is back: cache and queue resume")
        return True


class LocalCopy(Protocol):
    """A process's own copy of cached responses (the API's near cache), kept in step with
    every invalidation; `live` only while the invalidation channel is subscribed."""

    live: bool
    hits: int

    def invalidate(self, version_keys: Iterable[str], *, epoch_key: str) -> None: ...

    def reset(self) -> None: ...


class KnownMovies:
    """Movie ids this process has seen exist, so a new rating can skip the database's word
    on it. Trusted only while the invalidation channel is live; forgotten when any process
    deletes the movie, and after `ttl` in any case (a lost message costs at most that). A
    rating accepted for a movie deleted meanwhile carries its recompute stamp like any other:
    the drain finds the movie gone and removes the rating with it."""

    def __init__(self, *, ttl: float = 60.0, max_entries: int = 50_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._until: dict[str, float] = {}
        self.live = False

    def known(self, movie_id: Any) -> bool:
        until = self._until.get(str(movie_id))
        return self.live and until is not None and until > time.monotonic()

    def seen(self, movie_id: Any) -> None:
        if len(self._until) >= self._max:
            self._until.clear()
        self._until[str(movie_id)] = time.monotonic() + self._ttl

    def forget(self, movie_ids: Iterable[Any]) -> None:
        for movie_id in movie_ids:
            self._until.pop(str(movie_id), None)

    def reset(self) -> None:
        self._until.clear()


@dataclass(frozen=True, slots=True)
class CacheKey:
    version: str  # the counter whose INCR invalidates this entry
    data: str  # the entry, before its @epoch.version suffix


class Cache:
    """Versioned cache-aside of JSON bodies, with single flight per key in this process."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        ttl: float,
        jitter: float = 0.1,
        health: RedisHealth | None = None,
        enabled: bool = True,
        near: LocalCopy | None = None,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl = ttl
        self._jitter = jitter
        self.health = health or RedisHealth()
        self.enabled = enabled
        self._read = redis.register_script(_READ)
        self._flights: dict[str, asyncio.Future[bytes]] = {}
        self.epoch_key = f"{prefix}v:epoch"
        self.stats_key = f"{prefix}cache:stats"
        self.channel = f"{prefix}cache:invalidations"
        self.near = near if enabled else None
        self.known_movies = KnownMovies()
        self._deleted_prefix = f"{prefix}deleted:movie:"

    # ---- keys ------------------------------------------------------------------------------

    def movie(self, movie_id: Any) -> CacheKey:
        return CacheKey(f"{self._prefix}v:movie:{movie_id}", f"{self._prefix}c:movie:{movie_id}")

    def movie_list(self, query: dict[str, Any]) -> CacheKey:
        digest = hashlib.blake2b(orjson.dumps(query, option=orjson.OPT_SORT_KEYS), digest_size=10)
        return CacheKey(f"{self._prefix}v:movies", f"{self._prefix}c:movies:{digest.hexdigest()}")

    def similar(self, movie_id: Any, model_version: int, limit: int) -> CacheKey:
        # Follows its movie's version (changed, deleted); a new model is a new entry.
        data = f"{self._prefix}c:similar:{movie_id}:{model_version}:{limit}"
        return CacheKey(f"{self._prefix}v:movie:{movie_id}", data)

    def genres(self) -> CacheKey:
        # Its own version: only movie creations, changes and deletions move genre counts.
        return CacheKey(f"{self._prefix}v:genres", f"{self._prefix}c:genres")

    def user(self, user_id: Any) -> CacheKey:
        return CacheKey(f"{self._prefix}v:user:{user_id}", f"{self._prefix}c:user:{user_id}")

    def profile(self, user_id: Any, sort: str, start: str, limit: int, *, own: bool) -> CacheKey:
        """A profile page from `start` (an offset or a cursor), as its owner reads it (`own`:
        its links name /users/me) or as anyone else does. It shares its user's version: the
        user's own writes bump it at once."""
        page = hashlib.blake2b(start.encode(), digest_size=10).hexdigest()
        view = "own" if own else "public"
        data = f"{self._prefix}c:profile:{user_id}:{view}:{sort}:{page}:{limit}"
        return CacheKey(f"{self._prefix}v:user:{user_id}", data)

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
                keys=[self.epoch_key, key.version, self.stats_key], args=[key.data]
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
            await self._redis.set(resolved, body, px=max(1, int(ttl * 1000)))
        except RedisError as exc:
            self.health.failed(exc)

    # ---- invalidation ----------------------------------------------------------------------

    async def movies_changed(self, movie_ids: Iterable[Any]) -> None:
        """A movie's document changed: its entry, every list page and the genres go."""
        await self._bump(
            [self.movie(m).version for m in movie_ids]
            + [f"{self._prefix}v:movies", self.genres().version]
        )

    async def catalogue_grew(self, updated: Iterable[Any]) -> None:
        """A batch of an import stored movies: list pages and genres go, and the entries of
        the movies it changed (new ones have none yet)."""
        await self._bump(
            [self.movie(m).version for m in updated]
            + [f"{self._prefix}v:movies", self.genres().version]
        )

    async def movies_deleted(self, movie_ids: list[Any]) -> None:
        """Movies are gone: every process forgets it saw them (see KnownMovies)."""
        self.known_movies.forget(movie_ids)
        await self._bump(
            [self.movie(m).version for m in movie_ids] + [f"{self._prefix}v:movies"],
            notes=[f"{self._deleted_prefix}{m}" for m in movie_ids],
        )

    async def users_changed(self, user_ids: Iterable[Any]) -> None:
        """A user's account, stats or ratings changed: their view and profile pages go."""
        await self._bump([self.user(u).version for u in user_ids])

    async def summaries_changed(self, movie_ids: list[Any], user_ids: list[Any]) -> None:
        """A drain stored these summaries: their entries (and list pages, for movies) go."""
        keys = [self.movie(m).version for m in movie_ids] + [self.user(u).version for u in user_ids]
        await self._bump(keys + ([f"{self._prefix}v:movies"] if movie_ids else []))

    async def everything_changed(self) -> None:
        """Bulk changes (imports, a new global mean): every entry goes."""
        await self._bump([self.epoch_key])

    async def _bump(self, version_keys: list[str], notes: Iterable[str] = ()) -> None:
        """INCR the versions and announce them (and `notes`) to every process."""
        if not version_keys or not self.enabled:
            return
        if self.near is not None:  # this process sees its own writes at once
            self.near.invalidate(version_keys, epoch_key=self.epoch_key)
        if not self.health.available:
            return  # nothing cached is read while Redis is down; recovery starts a new epoch
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for version_key in version_keys:
                    pipe.incr(version_key)
                pipe.publish(self.channel, " ".join([*version_keys, *notes]))
                await pipe.execute()
        except RedisError as exc:
            self.health.failed(exc)

    async def listen(self, stop: asyncio.Event) -> None:
        """Keep the near cache in step with every process's invalidations, until `stop`."""
        if self.near is None:
            return
        # `stop` and not only Task.cancel(): a cancellation that lands as redis-py's read
        # timeout expires comes back as "no message", and a loop relying on it never ends
        # (seen: an app's cleanup waiting forever, about once in 200 test teardowns).
        while not stop.is_set():
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    self.near.reset()  # we may have missed messages while not subscribed
                    self.known_movies.reset()
                    self.near.live = self.known_movies.live = True
                    flushed = time.monotonic()
                    while not stop.is_set():
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None:
                            keys = message["data"].decode().split()
                            self.near.invalidate(keys, epoch_key=self.epoch_key)
                            deleted = self._deleted_prefix
                            self.known_movies.forget(
                                k.removeprefix(deleted) for k in keys if k.startswith(deleted)
                            )
                        if self.near.hits and time.monotonic() - flushed >= 1.0:
                            # This process's hits join the shared counters once a second.
                            hits, self.near.hits = self.near.hits, 0
                            flushed = time.monotonic()
                            await self._redis.hincrby(self.stats_key, "near_hits", hits)
            except (RedisError, OSError) as exc:
                self.near.live = self.known_movies.live = False
                self.health.failed(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
            finally:
                self.near.live = self.known_movies.live = False

    async def clear(self) -> None:
        """Drop every key of this namespace (tests, operators)."""
        keys = [k async for k in self._redis.scan_iter(match=f"{self._prefix}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await self._redis.delete(*keys[start : start + 1000])


def cache_for(
    settings: Settings,
    redis: Redis,
    health: RedisHealth | None = None,
    near: LocalCopy | None = None,
) -> Cache:
    """The cache every process of one deployment shares: namespaced by its database."""
    return Cache(
        redis,
        prefix=f"{settings.mongodb_db}:",
        ttl=settings.cache_ttl,
        health=health,
        enabled=settings.cache_enabled,
        near=near,
    )
